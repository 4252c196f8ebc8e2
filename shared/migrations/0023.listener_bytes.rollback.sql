-- Listener byte usage cannot be held without its meters: its records and rollups go with them.
UPDATE plans SET unit_prices = unit_prices - 'listener_egress_bytes' - 'listener_ingress_bytes';
DELETE FROM usage_rollups WHERE meter IN ('listener_egress_bytes', 'listener_ingress_bytes');
DELETE FROM usage_records WHERE meter IN ('listener_egress_bytes', 'listener_ingress_bytes');
ALTER TABLE traffic_samples DROP COLUMN bytes_in, DROP COLUMN bytes_out;
