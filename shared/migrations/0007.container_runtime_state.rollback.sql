DROP TABLE container_logs;
DROP TRIGGER containers_record_event ON containers;
DROP FUNCTION record_container_event();
DROP TABLE container_events;
ALTER TABLE containers
    DROP COLUMN secret_env,
    DROP COLUMN health_check,
    DROP COLUMN restart_count,
    DROP COLUMN last_restart_at,
    DROP COLUMN exit_code;
