-- depends: 0002.images
-- Publish-before-use key rotation: a new key is in the JWKS at once but signs only from activates_at,
-- so every verifier's cached JWKS has it before any token names it. Existing keys were active from birth.
ALTER TABLE signing_keys ADD COLUMN activates_at timestamptz NOT NULL DEFAULT now();
UPDATE signing_keys SET activates_at = created_at;
