-- depends: 0020.listener_meters
-- The region a container was asked to run in (POST /api/containers {region}); NULL: any. A container with one
-- is only ever placed, and re-placed when its host is lost, on hosts of that region.
ALTER TABLE containers ADD COLUMN region text;
