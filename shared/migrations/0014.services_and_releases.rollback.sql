DROP INDEX containers_service_idx;
ALTER TABLE containers
    DROP COLUMN release_number,
    DROP COLUMN service_id;
DROP TABLE service_releases;
DROP TABLE services;
