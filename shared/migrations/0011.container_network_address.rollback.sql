ALTER TABLE containers DROP COLUMN network_address;
