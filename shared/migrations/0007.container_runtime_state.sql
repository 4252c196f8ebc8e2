-- depends: 0006.container_stats
-- What the orchestrator needs beyond the first slice: encrypted secret environment (a Fernet token of a
-- JSON object: never returned), a health check, the reconciler's restart bookkeeping, an event history
-- written by a trigger on every status or desired-state change, and container logs shipped by the host
-- worker (so logs are readable from anywhere, and after the container or its host is gone).
ALTER TABLE containers
    ADD COLUMN secret_env      text,
    ADD COLUMN health_check    jsonb,
    ADD COLUMN restart_count   integer NOT NULL DEFAULT 0,
    ADD COLUMN last_restart_at timestamptz,
    ADD COLUMN exit_code       integer;

CREATE TABLE container_events (
    id            bigserial PRIMARY KEY,
    container_id  uuid NOT NULL REFERENCES containers (id) ON DELETE CASCADE,
    ts            timestamptz NOT NULL DEFAULT clock_timestamp(),
    status        text NOT NULL,
    desired_state text NOT NULL,
    reason        text
);
CREATE INDEX container_events_container_idx ON container_events (container_id, id DESC);

CREATE FUNCTION record_container_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT'
       OR NEW.status IS DISTINCT FROM OLD.status
       OR NEW.desired_state IS DISTINCT FROM OLD.desired_state
       OR NEW.reason IS DISTINCT FROM OLD.reason THEN
        INSERT INTO container_events (container_id, status, desired_state, reason)
        VALUES (NEW.id, NEW.status, NEW.desired_state, NEW.reason);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER containers_record_event
    AFTER INSERT OR UPDATE OF status, desired_state, reason ON containers
    FOR EACH ROW EXECUTE FUNCTION record_container_event();

CREATE TABLE container_logs (
    id           bigserial PRIMARY KEY,
    container_id uuid NOT NULL REFERENCES containers (id) ON DELETE CASCADE,
    ts           timestamptz NOT NULL,
    stream       text NOT NULL CHECK (stream IN ('stdout', 'stderr')),
    text         text NOT NULL
);
CREATE INDEX container_logs_container_idx ON container_logs (container_id, ts, id);
CREATE INDEX container_logs_ts_idx ON container_logs (ts);
