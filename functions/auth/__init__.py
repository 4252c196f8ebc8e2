"""The auth function: users, password hashes, sessions with rotating refresh tokens, signing keys, JWKS."""
