ALTER TABLE containers DROP COLUMN region;
