-- depends: 0014.services_and_releases
-- Plans and quotas (an admin edits them), suspension, metering (usage records written exactly once with
-- their hourly rollup), and invoices whose finalized lines never change.

-- A plan: its quotas and its unit prices. Prices are exact decimals in minor units
-- (cents) per pricing unit of a meter (shared/billing/meters.py names the meters and their pricing units),
-- e.g. {"cpu_seconds": "4"} is 4 cents per CPU-hour. Never floats.
CREATE TABLE plans (
    name                        text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_-]{0,31}$'),
    max_containers              integer NOT NULL CHECK (max_containers >= 0),
    max_memory_mb_per_container integer NOT NULL CHECK (max_memory_mb_per_container >= 16),
    max_memory_mb_total         integer NOT NULL CHECK (max_memory_mb_total >= 0),
    max_listeners               integer NOT NULL CHECK (max_listeners >= 0),
    max_image_storage_mb        integer NOT NULL CHECK (max_image_storage_mb >= 0),
    currency                    text NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    unit_prices                 jsonb NOT NULL DEFAULT '{}',
    updated_at                  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO plans (name, max_containers, max_memory_mb_per_container, max_memory_mb_total, max_listeners,
                   max_image_storage_mb, unit_prices) VALUES
    ('free', 3, 512, 1024, 1, 1024,
     '{"cpu_seconds": "0", "memory_gib_seconds": "0", "egress_bytes": "0", "replica_seconds": "0",
       "image_storage_gib_hours": "0"}'),
    ('pro', 20, 4096, 32768, 10, 20480,
     '{"cpu_seconds": "4", "memory_gib_seconds": "0.5", "egress_bytes": "9", "replica_seconds": "0.1",
       "image_storage_gib_hours": "10"}'),
    ('team', 100, 8192, 262144, 50, 102400,
     '{"cpu_seconds": "3.5", "memory_gib_seconds": "0.45", "egress_bytes": "8", "replica_seconds": "0.1",
       "image_storage_gib_hours": "8"}');

UPDATE users SET plan = 'free' WHERE plan NOT IN (SELECT name FROM plans);
ALTER TABLE users
    ADD CONSTRAINT users_plan_fk FOREIGN KEY (plan) REFERENCES plans (name) ON UPDATE CASCADE,
    -- Suspended by an admin (billing): the user's containers are stopped and create calls refused; they
    -- may still sign in and read their data. Distinct from `status` (disabled: nothing works at all).
    ADD COLUMN suspended_at     timestamptz,
    ADD COLUMN suspended_reason text;

-- The cumulative cgroup CPU counter (nanoseconds since the container started) with each stats sample:
-- CPU-seconds are metered from its deltas.
ALTER TABLE container_stats ADD COLUMN cpu_usage_ns bigint;

-- One record per (tenant, subject, meter, window): its id is derived from exactly those, so a redelivered
-- or recomputed record conflicts and changes nothing. It is inserted in the same transaction as its rollup,
-- and the rollup grows only when the insert happened.
CREATE TABLE usage_records (
    id           text PRIMARY KEY,
    owner_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    subject_kind text NOT NULL CHECK (subject_kind IN ('container', 'image')),
    subject_id   uuid NOT NULL,
    service      text,
    meter        text NOT NULL,
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL CHECK (window_end > window_start),
    quantity     numeric NOT NULL CHECK (quantity >= 0),
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_records_owner_idx ON usage_records (owner_id, window_start);

-- Hourly sums per tenant, meter and service ('' for none): what usage queries and invoices read.
CREATE TABLE usage_rollups (
    owner_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    hour     timestamptz NOT NULL,
    meter    text NOT NULL,
    service  text NOT NULL DEFAULT '',
    quantity numeric NOT NULL CHECK (quantity >= 0),
    PRIMARY KEY (owner_id, hour, meter, service)
);

-- How far each metering task has metered (the end of the last window done). Advancing it is an
-- optimisation only: a window metered again writes nothing (the records' ids conflict).
CREATE TABLE meter_cursors (
    name          text PRIMARY KEY,
    metered_until timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Invoices: one 'usage' invoice per tenant and period (a draft while the period is open, refreshed from the
-- rollups; finalized once), and 'adjustment' invoices for usage that arrived after finalization (written
-- and finalized in one transaction).
CREATE TABLE invoices (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind         text NOT NULL DEFAULT 'usage' CHECK (kind IN ('usage', 'adjustment')),
    period_start timestamptz NOT NULL,
    period_end   timestamptz NOT NULL CHECK (period_end > period_start),
    plan         text NOT NULL,
    status       text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'finalized')),
    currency     text NOT NULL,
    total        bigint NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    finalized_at timestamptz
);
CREATE UNIQUE INDEX invoices_usage_period_idx ON invoices (owner_id, period_start) WHERE kind = 'usage';
CREATE INDEX invoices_owner_idx ON invoices (owner_id, period_start DESC, created_at DESC);

CREATE TABLE invoice_lines (
    invoice_id uuid NOT NULL REFERENCES invoices (id) ON DELETE CASCADE,
    position   integer NOT NULL,
    meter      text NOT NULL,
    quantity   numeric NOT NULL,
    unit       text NOT NULL,
    unit_price numeric NOT NULL,
    price_unit text NOT NULL,
    amount     bigint NOT NULL,
    PRIMARY KEY (invoice_id, position)
);

-- A finalized invoice never changes: its row and its lines refuse updates and deletes (except when the
-- whole account goes, by cascade from users).
CREATE FUNCTION refuse_finalized_invoice_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    target uuid;
BEGIN
    IF TG_TABLE_NAME = 'invoices' THEN
        IF OLD.status = 'finalized' THEN
            RAISE EXCEPTION 'invoice % is finalized and cannot change', OLD.id USING ERRCODE = 'check_violation';
        END IF;
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    target := CASE WHEN TG_OP = 'INSERT' THEN NEW.invoice_id ELSE OLD.invoice_id END;
    IF EXISTS (SELECT 1 FROM invoices WHERE id = target AND status = 'finalized') THEN
        RAISE EXCEPTION 'invoice % is finalized and cannot change', target USING ERRCODE = 'check_violation';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END;
$$;
CREATE TRIGGER invoices_immutable
    BEFORE UPDATE ON invoices
    FOR EACH ROW EXECUTE FUNCTION refuse_finalized_invoice_change();
CREATE TRIGGER invoice_lines_immutable
    BEFORE INSERT OR UPDATE OR DELETE ON invoice_lines
    FOR EACH ROW EXECUTE FUNCTION refuse_finalized_invoice_change();
