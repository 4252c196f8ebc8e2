-- depends: 0003.signing_key_activation
-- Container hosts and the host ports handed out on them. A host is registered by its worker and kept
-- alive by heartbeats; the primary key of port_allocations is what makes a port go out once per host.
CREATE TABLE hosts (
    id                 text PRIMARY KEY,
    address            text NOT NULL,
    cpu_capacity       numeric NOT NULL CHECK (cpu_capacity > 0),
    memory_capacity_mb integer NOT NULL CHECK (memory_capacity_mb > 0),
    status             text NOT NULL DEFAULT 'up' CHECK (status IN ('up', 'down', 'draining')),
    heartbeat_at       timestamptz NOT NULL DEFAULT now(),
    registered_at      timestamptz NOT NULL DEFAULT now(),
    labels             jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX hosts_status_heartbeat_idx ON hosts (status, heartbeat_at);

CREATE TABLE port_allocations (
    host_id      text NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    port         integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    owner_kind   text NOT NULL,
    owner_id     uuid NOT NULL,
    allocated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host_id, port)
);
CREATE INDEX port_allocations_owner_idx ON port_allocations (owner_kind, owner_id);
