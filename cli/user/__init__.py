"""The user-facing half of ``berth``: commands that talk only to the public API (login, images, containers,
listeners, tokens, account), as flyctl does for Fly.io. The operator half (gateway, worker, local stack)
lives in ``cli.main``."""
