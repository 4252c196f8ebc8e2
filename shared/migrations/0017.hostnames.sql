-- depends: 0016.observability
-- Host names a tenant claims for its listeners on the shared ports (host-based routing). A claim proves
-- ownership by a DNS TXT record or an HTTP token; a verified name belongs to one tenant only (the partial
-- unique index), and routes requests for it to the listener it is attached to.
CREATE TABLE hostnames (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    hostname    text NOT NULL,
    token       text NOT NULL,
    verified_at timestamptz,
    verified_by text CHECK (verified_by IN ('dns', 'http')),
    listener_id uuid REFERENCES listeners (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner_id, hostname)
);
CREATE UNIQUE INDEX hostnames_verified_once ON hostnames (hostname) WHERE verified_at IS NOT NULL;
CREATE INDEX hostnames_owner_page_idx ON hostnames (owner_id, created_at DESC, id DESC);
CREATE INDEX hostnames_listener_idx ON hostnames (listener_id);
