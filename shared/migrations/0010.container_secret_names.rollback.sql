ALTER TABLE containers DROP COLUMN secret_env_names;
