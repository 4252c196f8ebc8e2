-- Listener usage cannot be held without its meter: its records and rollups go with it.
UPDATE plans SET unit_prices = unit_prices - 'listener_requests';
DELETE FROM usage_rollups WHERE meter = 'listener_requests';
DELETE FROM usage_records WHERE subject_kind = 'listener';
ALTER TABLE usage_records DROP CONSTRAINT usage_records_subject_kind_check;
ALTER TABLE usage_records ADD CONSTRAINT usage_records_subject_kind_check
    CHECK (subject_kind IN ('container', 'image'));
