-- depends: 0004.hosts_and_ports
-- Customer containers: what the tenant asked for (desired_state) and what the host worker last saw (status).
-- An image in use cannot be deleted (no cascade); a user's containers go with the user.
CREATE TABLE containers (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    image_id       uuid NOT NULL REFERENCES images (id),
    name           text NOT NULL,
    service        text,
    command        jsonb,
    env            jsonb NOT NULL DEFAULT '{}',
    ports          jsonb NOT NULL DEFAULT '[]',
    cpu            numeric NOT NULL CHECK (cpu > 0),
    memory_mb      integer NOT NULL CHECK (memory_mb > 0),
    restart_policy text NOT NULL DEFAULT 'no',
    host_id        text REFERENCES hosts (id),
    docker_id      text,
    desired_state  text NOT NULL DEFAULT 'running' CHECK (desired_state IN ('running', 'stopped', 'deleted')),
    status         text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'creating', 'starting', 'running', 'unhealthy', 'stopping',
                                     'stopped', 'deleted', 'failed', 'lost')),
    reason         text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner_id, name)
);
CREATE INDEX containers_owner_page_idx ON containers (owner_id, created_at DESC, id DESC);
CREATE INDEX containers_image_idx ON containers (image_id);
CREATE INDEX containers_host_idx ON containers (host_id) WHERE status <> 'deleted';
