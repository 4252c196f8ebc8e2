-- depends: 0017.hostnames
-- Per-plan API rate limits: how many API requests per minute one user of the plan may make. The OpenAPI
-- document's per-user limits (x-berth-throttling) stay the default and the ceiling: a route's per-user
-- limit for a caller is min(the route's limit, this figure scaled to the route's window); NULL means the
-- document's figure. The gateway and the functions read it by the token's `plan` claim (shared.plan_rate_limits).
ALTER TABLE plans ADD COLUMN api_requests_per_minute integer CHECK (api_requests_per_minute > 0);
UPDATE plans SET api_requests_per_minute = 120 WHERE name = 'free';
