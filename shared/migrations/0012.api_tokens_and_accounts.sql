-- depends: 0011.container_network_address
-- Personal access tokens, account status (disabled, deleted), email changes and the development outbox.

-- A user may be disabled by an admin (every session and token stops) or deleted by themselves (the row
-- stays, anonymised, so billing and audit records keep their owner; the email is freed).
ALTER TABLE users
    ADD COLUMN status     text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled', 'deleted')),
    ADD COLUMN deleted_at timestamptz,
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

-- Personal access tokens: RS256 JWTs (so API Gateway's JWT authorizer verifies them like access tokens)
-- whose row is checked on every use. Only a SHA-256 of the token is kept; `kid` keeps the signing key that
-- made it published until the token expires.
CREATE TABLE api_tokens (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    scopes       text[] NOT NULL CHECK (scopes <@ ARRAY['read', 'deploy']::text[] AND cardinality(scopes) > 0),
    token_hash   bytea NOT NULL UNIQUE,
    kid          text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    last_used_ip text
);
CREATE INDEX api_tokens_user_idx ON api_tokens (user_id, created_at DESC);
CREATE UNIQUE INDEX api_tokens_live_name_idx ON api_tokens (user_id, name) WHERE revoked_at IS NULL;

-- A pending change of email: confirmed by presenting the token mailed to the new address (only its hash).
CREATE TABLE email_changes (
    token_hash bytea PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    new_email  text NOT NULL CHECK (new_email = lower(new_email)),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX email_changes_user_idx ON email_changes (user_id);

-- What the platform would email, kept in the database instead outside production (no mail server is needed
-- to develop; tests and `berth dev-mail` read it). Never written in production.
CREATE TABLE dev_outbox (
    id         bigserial PRIMARY KEY,
    recipient  text NOT NULL,
    subject    text NOT NULL,
    body       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
