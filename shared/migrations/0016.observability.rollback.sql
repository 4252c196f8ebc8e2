DROP TABLE alert_deliveries;
ALTER TABLE alert_rules DROP CONSTRAINT alert_rules_open_alert_fk;
DROP TABLE alerts;
DROP TABLE alert_rules;
DROP TABLE alert_webhooks;
DROP TABLE traffic_cursors;
DROP TABLE traffic_samples;
