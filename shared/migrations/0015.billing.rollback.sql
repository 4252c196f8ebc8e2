DROP TABLE invoice_lines;
DROP TABLE invoices;
DROP FUNCTION refuse_finalized_invoice_change();
DROP TABLE meter_cursors;
DROP TABLE usage_rollups;
DROP TABLE usage_records;
ALTER TABLE container_stats DROP COLUMN cpu_usage_ns;
ALTER TABLE users DROP CONSTRAINT users_plan_fk, DROP COLUMN suspended_at, DROP COLUMN suspended_reason;
DROP TABLE plans;
