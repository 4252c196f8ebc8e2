-- depends: 0019.regions
-- Listener meters (issue 14): usage records may have a listener for subject (its requests through
-- lb-runtime, metered from the listener's traffic history), and the seeded plans price them per million
-- requests (minor units, like every price; shared/billing/meters.py names the meter and its pricing unit).
ALTER TABLE usage_records DROP CONSTRAINT usage_records_subject_kind_check;
ALTER TABLE usage_records ADD CONSTRAINT usage_records_subject_kind_check
    CHECK (subject_kind IN ('container', 'image', 'listener'));

UPDATE plans SET unit_prices = unit_prices || '{"listener_requests": "0"}' WHERE name = 'free';
UPDATE plans SET unit_prices = unit_prices || '{"listener_requests": "40"}' WHERE name = 'pro';
UPDATE plans SET unit_prices = unit_prices || '{"listener_requests": "30"}' WHERE name = 'team';
