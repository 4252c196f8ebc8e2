-- depends: 0007.container_runtime_state
-- The service registry's local backend (BERTH_REGISTRY=postgres): what Consul's catalog and health hold in
-- production. One row per instance, keyed (namespace, id). Every change takes the next value of one counter
-- row in its own transaction (the X-Consul-Index analogue: the row lock orders changes by commit), stamps it
-- on the service's index row, and NOTIFYs berth_registry with "namespace/service" when it commits, so a
-- watcher that LISTENs before reading the index misses nothing.
CREATE TABLE registry_instances (
    namespace                  text NOT NULL CHECK (namespace IN ('internal-services', 'client-containers')),
    id                         text NOT NULL,
    service                    text NOT NULL,
    -- Customers' containers always name their owner; the platform's own services never do.
    owner_id                   uuid,
    address                    text NOT NULL,
    port                       integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    status                     text NOT NULL CHECK (status IN ('passing', 'warning', 'critical')),
    output                     text NOT NULL DEFAULT '',
    tags                       text[] NOT NULL DEFAULT '{}',
    meta                       jsonb NOT NULL DEFAULT '{}',
    health_check               jsonb,
    -- Without a report for this long the instance reads as critical (a lapsed TTL check); NULL: never.
    report_ttl_seconds         double precision CHECK (report_ttl_seconds > 0),
    -- Critical for longer than this and expiry removes it (Consul's DeregisterCriticalServiceAfter).
    deregister_after_seconds   double precision CHECK (deregister_after_seconds > 0),
    modify_index               bigint NOT NULL,
    registered_at              timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    status_since               timestamptz NOT NULL DEFAULT now(),
    last_report_at             timestamptz NOT NULL DEFAULT now(),
    last_passing_at            timestamptz,
    PRIMARY KEY (namespace, id),
    CHECK ((namespace = 'client-containers') = (owner_id IS NOT NULL))
);
CREATE INDEX registry_instances_service_idx ON registry_instances (namespace, service);
CREATE INDEX registry_instances_owner_idx ON registry_instances (namespace, owner_id, service);

-- The last change index of each service, kept after its last instance goes, so an index never goes back.
CREATE TABLE registry_service_index (
    namespace    text NOT NULL,
    service      text NOT NULL,
    modify_index bigint NOT NULL,
    PRIMARY KEY (namespace, service)
);

CREATE TABLE registry_counter (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    value     bigint NOT NULL
);
INSERT INTO registry_counter (singleton, value) VALUES (true, 0);
