-- depends: 0021.container_regions
-- Alert rules on quota use, and request trails (the log lines one caller's request caused).

-- kind quota_use: `quota` names one of the plan's quotas (the rule's subject) and `threshold` a share of it.
ALTER TABLE alert_rules ADD COLUMN quota text
    CHECK (quota IN ('max_containers', 'max_memory_mb_per_container', 'max_memory_mb_total', 'max_listeners',
                     'max_image_storage_mb'));
ALTER TABLE alert_rules DROP CONSTRAINT alert_rules_kind_check;
ALTER TABLE alert_rules ADD CONSTRAINT alert_rules_kind_check
    CHECK (kind IN ('container_unhealthy', 'container_restarts', 'service_unhealthy', 'listener_error_rate',
                    'listener_latency_p95', 'deploy_failed', 'quota_use'));
ALTER TABLE alert_rules DROP CONSTRAINT alert_rules_check;
ALTER TABLE alert_rules ADD CONSTRAINT alert_rules_subject_check
    CHECK (num_nonnulls(container_id, service, listener_id, quota) = 1);

-- The log lines a request caused in the function that answered it and in the host workers that ran its jobs,
-- kept under the caller who sent it (shared.request_trail): a request id is the caller's to choose, so two
-- callers may use one; each reads only their own lines. `at` is when the line was logged; lines older than
-- the workers' BERTH_REQUEST_TRAIL_RETENTION_HOURS are deleted.
CREATE TABLE request_events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id   uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    request_id text NOT NULL,
    source     text NOT NULL CHECK (source IN ('function', 'worker')),
    service    text NOT NULL,
    at         timestamptz NOT NULL,
    message    text NOT NULL,
    fields     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX request_events_trail_idx ON request_events (owner_id, request_id, at, id);
CREATE INDEX request_events_retention_idx ON request_events (at);
