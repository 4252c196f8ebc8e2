DROP TABLE dev_outbox;
DROP TABLE email_changes;
DROP TABLE api_tokens;
ALTER TABLE users DROP COLUMN updated_at, DROP COLUMN deleted_at, DROP COLUMN status;
