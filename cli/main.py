"""The ``berth`` command: run the local platform, its gateway, functions, migrations and key rotation."""

from __future__ import annotations

import argparse
import asyncio
import sys

# Functions and the ports they listen on when served as plain ASGI apps (the proposal's ports).
FUNCTION_PORTS = {
    "ui": 3000,
    "auth": 3001,
    "images": 3002,
    "containers": 3003,
    "load_balancer": 3004,
    "service_discovery": 3005,
}


def _cmd_migrate(_: argparse.Namespace) -> int:
    from shared.config import CoreSettings
    from shared.migrate import apply_migrations

    applied = apply_migrations(CoreSettings().database_url)
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return 0


def _cmd_rotate_keys(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from functions.auth.signing_keys import rotate_signing_key, signing_key_record
    from shared.config import get_function_settings

    async def rotate() -> tuple[str, datetime | None, float]:
        settings = get_function_settings()
        kid = await rotate_signing_key(settings, immediately=args.now)
        record = await signing_key_record(settings, kid)
        if record is None:
            return kid, None, 0.0
        # The database's clock on both sides: this machine's may differ.
        return kid, record.activates_at, (record.activates_at - record.created_at).total_seconds()

    kid, activates_at, delay = asyncio.run(rotate())
    if activates_at is None or delay <= 0:
        starts = "it signs new tokens from now"
    else:
        starts = (
            f"it is published now and signs new tokens from {activates_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC "
            f"(in {delay:.0f} s)"
        )
    print(f"new signing key {kid}; {starts}; older keys stay published until the tokens they signed expire")
    return 0


def _cmd_gateway(args: argparse.Namespace) -> int:
    from gateway.server import run_gateway

    return run_gateway(host=args.host, port=args.port, tls=args.tls)


def _cmd_worker(args: argparse.Namespace) -> int:
    from worker.main import serve
    from worker.settings import get_worker_settings

    return asyncio.run(serve(get_worker_settings(), burst=args.burst))


def _cmd_lb(args: argparse.Namespace) -> int:
    from lb_runtime.__main__ import main as lb_main

    return lb_main(args.lb_args)


def _cmd_push(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from cli.image_push import push

    token = args.token or os.environ.get("BERTH_TOKEN")
    if not token:
        print("berth push: pass --token or set BERTH_TOKEN to an access token (POST /api/auth/signin)", file=sys.stderr)
        return 2
    return push(args.api, token, Path(args.archive), args.name, args.tag, quiet=args.quiet)


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    port = args.port or FUNCTION_PORTS[args.function]
    uvicorn.run(f"functions.{args.function}.app:app", host=args.host, port=port, log_level="warning")
    return 0


def _cmd_local(args: argparse.Namespace) -> int:
    from cli import local_stack

    actions = {
        "up": local_stack.up,
        "down": local_stack.down,
        "status": local_stack.status,
        "aws": local_stack.run_local_aws,
    }
    return actions[args.action]()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="berth", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("migrate", help="create the database if needed and apply pending migrations").set_defaults(
        run=_cmd_migrate
    )
    rotate_keys = commands.add_parser(
        "rotate-keys",
        help="add a new token signing key without logging anyone out",
        description="Publish a new token signing key at once; it starts signing BERTH_KEY_ACTIVATION_DELAY_SECONDS "
        "later, once every verifier's cached JWKS has it.",
    )
    rotate_keys.add_argument(
        "--now",
        action="store_true",
        help="sign with the new key at once (a compromised key); verifiers may refuse its tokens until they re-read "
        "the JWKS",
    )
    rotate_keys.set_defaults(run=_cmd_rotate_keys)

    gateway = commands.add_parser("gateway", help="run the local API gateway from gateway-config/")
    gateway.add_argument("--host", default=None, help="bind address (BERTH_GATEWAY_HOST, 127.0.0.1)")
    gateway.add_argument("--port", type=int, default=None, help="port (BERTH_GATEWAY_PORT, 8080)")
    gateway.add_argument(
        "--tls", action="store_true", default=None, help="serve HTTPS with a generated self-signed certificate"
    )
    gateway.set_defaults(run=_cmd_gateway)

    worker = commands.add_parser("worker", help="run the container-host worker (jobs from the queue)")
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty (for tests)")
    worker.set_defaults(run=_cmd_worker)

    lb = commands.add_parser(
        "lb", help="run lb-runtime, the traffic proxy (listeners from the control plane, or --snapshot FILE)"
    )
    lb.add_argument("lb_args", nargs=argparse.REMAINDER, help="lb-runtime's own options (berth lb --help)")
    lb.set_defaults(run=_cmd_lb)

    push = commands.add_parser("push", help="upload a `docker save` archive as an image and follow it to ready")
    push.add_argument("archive", help="the archive (docker save IMAGE > FILE)")
    push.add_argument("--name", required=True)
    push.add_argument("--tag", default="latest")
    push.add_argument("--api", default="http://127.0.0.1:8080", help="the gateway's URL")
    push.add_argument("--token", default=None, help="access token (default: $BERTH_TOKEN)")
    push.add_argument("--quiet", action="store_true", help="print only the image id on stdout (progress on stderr)")
    push.set_defaults(run=_cmd_push)

    serve = commands.add_parser("serve", help="serve one function as a plain ASGI app, without the gateway")
    serve.add_argument("function", choices=sorted(FUNCTION_PORTS))
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=None)
    serve.set_defaults(run=_cmd_serve)

    local = commands.add_parser("local", help="the whole platform on this machine")
    local.add_argument(
        "action",
        choices=["up", "down", "status", "aws"],
        help="up: start (idempotent); down: stop what up started; status; "
        "aws: run the local S3/SQS server in the foreground",
    )
    local.set_defaults(run=_cmd_local)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
