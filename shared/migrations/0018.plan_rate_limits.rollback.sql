ALTER TABLE plans DROP COLUMN api_requests_per_minute;
