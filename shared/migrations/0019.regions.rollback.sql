ALTER TABLE listeners DROP COLUMN regions;
DROP INDEX hosts_region_idx;
ALTER TABLE hosts DROP COLUMN region;
