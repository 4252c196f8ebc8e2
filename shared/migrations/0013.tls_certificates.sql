-- depends: 0012.api_tokens_and_accounts
-- TLS certificates for https listeners: the PEM chain in clear, the private key sealed with the deployment's
-- secret key (shared.secrets, like containers' secret environment). A listener presents its certificates in
-- the order given; one in use cannot be deleted (RESTRICT).
CREATE TABLE certificates (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id           uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name               text NOT NULL,
    hostnames          text[] NOT NULL,
    chain_pem          text NOT NULL,
    key_sealed         text NOT NULL,
    subject            text NOT NULL,
    issuer             text NOT NULL,
    fingerprint_sha256 text NOT NULL,
    not_before         timestamptz NOT NULL,
    not_after          timestamptz NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX certificates_owner_page_idx ON certificates (owner_id, created_at DESC, id DESC);

CREATE TABLE listener_certificates (
    listener_id    uuid NOT NULL REFERENCES listeners (id) ON DELETE CASCADE,
    certificate_id uuid NOT NULL REFERENCES certificates (id) ON DELETE RESTRICT,
    position       integer NOT NULL,
    PRIMARY KEY (listener_id, certificate_id)
);
CREATE INDEX listener_certificates_certificate_idx ON listener_certificates (certificate_id);

ALTER TABLE listeners DROP CONSTRAINT listeners_protocol_check;
ALTER TABLE listeners ADD CONSTRAINT listeners_protocol_check CHECK (protocol IN ('http', 'tcp', 'https'));
