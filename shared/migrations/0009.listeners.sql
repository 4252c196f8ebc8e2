-- depends: 0007.container_runtime_state
-- Load-balancer listeners: an external port (unique across the lb-runtime fleet) in front of one of the
-- owner's services. lb-runtime builds its route table from these rows and the registry's healthy
-- instances, and hears of every change on the notification channel berth_lb.
CREATE TABLE listeners (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    service      text NOT NULL,
    port         integer NOT NULL UNIQUE CHECK (port BETWEEN 1 AND 65535),
    protocol     text NOT NULL CHECK (protocol IN ('http', 'tcp')),
    algorithm    text NOT NULL CHECK (algorithm IN ('round_robin', 'least_connections', 'weighted')),
    weights      jsonb NOT NULL DEFAULT '{}',
    health_check jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX listeners_owner_page_idx ON listeners (owner_id, created_at DESC, id DESC);
CREATE INDEX listeners_owner_service_idx ON listeners (owner_id, service);

CREATE FUNCTION notify_listeners_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('berth_lb', 'listeners');
    RETURN NULL;
END;
$$;

CREATE TRIGGER listeners_notify
    AFTER INSERT OR UPDATE OR DELETE ON listeners
    FOR EACH STATEMENT EXECUTE FUNCTION notify_listeners_changed();
