"""Berth's common library: config, errors, database, Redis, tokens, rate limiting and the local gateway."""
