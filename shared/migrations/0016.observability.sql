-- depends: 0015.billing
-- Observability: listener traffic history (recorded by the host workers from lb-runtime's admin figures)
-- and per-user alerts (rules, their alert history, webhooks and a delivery outbox).

-- Traffic per listener and per instance ('' is the listener as a whole) per interval: `resolution` 10 (kept
-- a day) or 60 seconds (kept 30 days); `ts` is the interval's start. Counts are per-interval deltas of
-- lb-runtime's cumulative counters; latency is a histogram over lb-runtime's buckets (`latency_buckets`,
-- one count per bucket, the last one +Inf) so percentiles of any step are computed from summed buckets.
CREATE TABLE traffic_samples (
    listener_id        uuid NOT NULL REFERENCES listeners (id) ON DELETE CASCADE,
    instance           text NOT NULL,
    resolution         smallint NOT NULL CHECK (resolution IN (10, 60)),
    ts                 timestamptz NOT NULL,
    requests           bigint NOT NULL DEFAULT 0 CHECK (requests >= 0),
    errors_connect     bigint NOT NULL DEFAULT 0 CHECK (errors_connect >= 0),
    responses_4xx      bigint NOT NULL DEFAULT 0 CHECK (responses_4xx >= 0),
    responses_5xx      bigint NOT NULL DEFAULT 0 CHECK (responses_5xx >= 0),
    latency_buckets    bigint[] NOT NULL,
    latency_sum        double precision NOT NULL DEFAULT 0,
    open_connections   integer NOT NULL DEFAULT 0 CHECK (open_connections >= 0),
    PRIMARY KEY (listener_id, resolution, instance, ts)
);
CREATE INDEX traffic_samples_retention_idx ON traffic_samples (resolution, ts);

-- The last cumulative reading of one lb-runtime admin endpoint (the recorder's cursor), so that whichever
-- worker records next computes deltas from it; a counter below its last reading means lb-runtime restarted.
CREATE TABLE traffic_cursors (
    source      text PRIMARY KEY,
    read_at     timestamptz NOT NULL,
    counters    jsonb NOT NULL
);

-- Webhooks: where a user's alert notifications go. The secret is sealed (Fernet, shared.secrets) and
-- never answered again.
CREATE TABLE alert_webhooks (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    url           text NOT NULL,
    sealed_secret text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_webhooks_owner_idx ON alert_webhooks (owner_id, created_at DESC, id DESC);

-- Rules: what to watch (one subject), the threshold, how long the condition must hold before firing
-- (for_seconds) and how long it must stay clear before resolving (resolve_after_seconds). The evaluator's
-- state lives on the row, updated under the row's lock: several workers never evaluate one rule at once.
CREATE TABLE alert_rules (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id              uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind                  text NOT NULL CHECK (kind IN ('container_unhealthy', 'container_restarts',
                                                        'service_unhealthy', 'listener_error_rate',
                                                        'listener_latency_p95', 'deploy_failed')),
    container_id          uuid REFERENCES containers (id) ON DELETE CASCADE,
    service               text,
    listener_id           uuid REFERENCES listeners (id) ON DELETE CASCADE,
    threshold             double precision CHECK (threshold >= 0),
    window_seconds        integer NOT NULL CHECK (window_seconds > 0),
    for_seconds           integer NOT NULL CHECK (for_seconds >= 0),
    resolve_after_seconds integer NOT NULL CHECK (resolve_after_seconds >= 0),
    created_at            timestamptz NOT NULL DEFAULT now(),
    -- Evaluator state: the open alert (pending or firing), since when the condition has been clear.
    open_alert_id         uuid,
    clear_since           timestamptz,
    evaluated_at          timestamptz,
    CHECK (num_nonnulls(container_id, service, listener_id) = 1)
);
CREATE INDEX alert_rules_owner_idx ON alert_rules (owner_id, created_at DESC, id DESC);

-- Alert history: one row per episode, pending -> firing -> resolved (or pending -> resolved when the
-- condition cleared before for_seconds: never notified).
CREATE TABLE alerts (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    rule_id     uuid NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    owner_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    state       text NOT NULL CHECK (state IN ('pending', 'firing', 'resolved')),
    started_at  timestamptz NOT NULL,
    fired_at    timestamptz,
    resolved_at timestamptz,
    summary     text NOT NULL,
    labels      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX alerts_owner_page_idx ON alerts (owner_id, started_at DESC, id DESC);
ALTER TABLE alert_rules
    ADD CONSTRAINT alert_rules_open_alert_fk FOREIGN KEY (open_alert_id) REFERENCES alerts (id) ON DELETE SET NULL;

-- The delivery outbox: written in the transaction that changes an alert's state, one row per webhook and
-- notified state (firing, resolved) - the unique key makes it exactly one. The body is fixed when written;
-- each attempt signs it afresh. After max attempts a row is 'dead' (the dead letter), with its last error.
CREATE TABLE alert_deliveries (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    alert_id        uuid NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    webhook_id      uuid NOT NULL REFERENCES alert_webhooks (id) ON DELETE CASCADE,
    state           text NOT NULL CHECK (state IN ('firing', 'resolved')),
    body            text NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (alert_id, webhook_id, state)
);
CREATE INDEX alert_deliveries_due_idx ON alert_deliveries (next_attempt_at) WHERE status = 'pending';
