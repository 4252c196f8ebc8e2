-- depends: 0009.listeners
-- The names of a container's secret environment, stored beside the sealed values, so reads never open them.
ALTER TABLE containers ADD COLUMN secret_env_names text[] NOT NULL DEFAULT '{}';
