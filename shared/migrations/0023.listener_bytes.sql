-- depends: 0022.request_trails_and_quota_alerts
-- Listener bytes (issues 14 and 15): the traffic history keeps the bytes of each interval, and two meters
-- are made from the listeners' own rows.
--
-- `bytes_in` / `bytes_out` per interval, summed like the other counts into both resolutions: on a listener's
-- own row ('' instance) the bytes lb-runtime received from its clients and wrote to them (HTTP bytes: TLS is
-- not counted); on an instance's row the bytes sent to that instance and received from it. Rows recorded
-- before this migration hold 0.
ALTER TABLE traffic_samples
    ADD COLUMN bytes_in  bigint NOT NULL DEFAULT 0 CHECK (bytes_in >= 0),
    ADD COLUMN bytes_out bigint NOT NULL DEFAULT 0 CHECK (bytes_out >= 0);

-- The meters listener_egress_bytes (bytes out to clients) and listener_ingress_bytes (bytes in from
-- clients), priced per GiB in minor units like egress_bytes (shared/billing/meters.py). Inbound data is free
-- on every seeded plan, as at Fly.io and Cloud Run; outbound is priced per GiB sent to clients.
UPDATE plans SET unit_prices = unit_prices || '{"listener_egress_bytes": "0", "listener_ingress_bytes": "0"}'
    WHERE name = 'free';
UPDATE plans SET unit_prices = unit_prices || '{"listener_egress_bytes": "2", "listener_ingress_bytes": "0"}'
    WHERE name = 'pro';
UPDATE plans SET unit_prices = unit_prices || '{"listener_egress_bytes": "1.5", "listener_ingress_bytes": "0"}'
    WHERE name = 'team';
