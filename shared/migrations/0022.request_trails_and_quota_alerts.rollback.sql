DROP TABLE request_events;
DELETE FROM alert_rules WHERE kind = 'quota_use';
ALTER TABLE alert_rules DROP CONSTRAINT alert_rules_subject_check;
ALTER TABLE alert_rules ADD CONSTRAINT alert_rules_check CHECK (num_nonnulls(container_id, service, listener_id) = 1);
ALTER TABLE alert_rules DROP CONSTRAINT alert_rules_kind_check;
ALTER TABLE alert_rules ADD CONSTRAINT alert_rules_kind_check
    CHECK (kind IN ('container_unhealthy', 'container_restarts', 'service_unhealthy', 'listener_error_rate',
                    'listener_latency_p95', 'deploy_failed'));
ALTER TABLE alert_rules DROP COLUMN quota;
