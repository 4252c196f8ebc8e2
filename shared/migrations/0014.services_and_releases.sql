-- depends: 0013.tls_certificates
-- Services: a declared number of replicas of one configuration, changed by numbered, immutable releases.
-- The service points at the release its replicas converge on (release_number); the host workers' rollout
-- driver (worker/rollouts.py) advances every service toward it in steps it reads back from these rows and
-- the containers', so a rollout survives any process being killed.
CREATE TABLE services (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name           text NOT NULL,
    replicas       integer NOT NULL CHECK (replicas >= 0),
    update_policy  jsonb NOT NULL,
    release_number integer NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner_id, name)
);
CREATE INDEX services_owner_page_idx ON services (owner_id, created_at DESC, id DESC);

-- A release's configuration never changes once written; only its status, reason and times do. The image is
-- not a foreign key: deleting an image an old release names stays possible (rolling back to it is refused).
CREATE TABLE service_releases (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    service_id       uuid NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    number           integer NOT NULL CHECK (number > 0),
    image_id         uuid NOT NULL,
    config           jsonb NOT NULL,
    secret_env       text,
    secret_env_names text[] NOT NULL DEFAULT '{}',
    config_digest    text NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'rolling', 'healthy', 'failed', 'rolled_back', 'superseded')),
    reason           text,
    replaces         integer,
    created_by       uuid,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    UNIQUE (service_id, number)
);

ALTER TABLE containers
    ADD COLUMN service_id     uuid REFERENCES services (id) ON DELETE SET NULL,
    ADD COLUMN release_number integer;
CREATE INDEX containers_service_idx ON containers (service_id) WHERE status <> 'deleted';
