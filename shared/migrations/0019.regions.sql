-- depends: 0018.plan_rate_limits
-- Regions (issue 18): every host belongs to one (its worker's BERTH_REGION); a listener may carry a region
-- policy for lb-runtime (lb_runtime.regions: order, routing, spill-over limits), NULL for none.
ALTER TABLE hosts ADD COLUMN region text NOT NULL DEFAULT 'local';
CREATE INDEX hosts_region_idx ON hosts (region);
ALTER TABLE listeners ADD COLUMN regions jsonb;
