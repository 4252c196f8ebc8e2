"""The ``berth`` command: use the platform (login, images, containers, listeners, tokens, account) and
run it (the local platform, its gateway, functions, worker, lb-runtime, migrations, key rotation, admin)."""

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
    "billing": 3006,
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


def _cmd_admin(args: argparse.Namespace) -> int:
    from functions.auth.accounts import grant_admin
    from shared.config import get_function_settings
    from shared.errors import NotFound

    try:
        account = asyncio.run(grant_admin(get_function_settings(), args.email, "user" if args.revoke else "admin"))
    except NotFound as exc:
        print(f"berth admin: {exc.message}", file=sys.stderr)
        return 5
    print(f"{account.email} is now {account.role}; the role applies from their next sign-in")
    return 0


def _cmd_billing_finalize(args: argparse.Namespace) -> int:
    from shared.billing.invoice_store import finalize_period
    from shared.billing.invoices import parse_period
    from shared.config import get_function_settings
    from shared.db import get_database

    try:
        period = parse_period(args.period)
    except ValueError as exc:
        print(f"berth admin billing finalize: {exc}", file=sys.stderr)
        return 2

    async def finalize() -> list[str]:
        settings = get_function_settings()
        database = get_database(settings.database_url)
        try:
            return await finalize_period(database, period)
        finally:
            await database.close()

    written = asyncio.run(finalize())
    print(f"{period.label}: {len(written)} invoice(s) finalized")
    for invoice_id in written:
        print(invoice_id)
    return 0


def _cmd_dev_mail(args: argparse.Namespace) -> int:
    import psycopg

    from shared.config import CoreSettings

    with psycopg.connect(CoreSettings().database_url) as conn:
        rows = conn.execute(
            "SELECT created_at, recipient, subject, body FROM dev_outbox WHERE recipient LIKE %s "
            "ORDER BY id DESC LIMIT %s",
            (f"%{args.to or ''}%", args.limit),
        ).fetchall()
    for created_at, recipient, subject, body in rows:
        print(f"--- {created_at:%Y-%m-%d %H:%M:%S} to {recipient}: {subject}\n{body}")
    return 0


def _cmd_completion(args: argparse.Namespace) -> int:
    from cli.user.reference import bash_completion

    print(bash_completion(build_parser()))
    return 0


def _cmd_docs(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cli.user.reference import markdown_reference

    text = markdown_reference(build_parser())
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


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
    from cli.user.commands import add_user_commands

    parser = argparse.ArgumentParser(prog="berth", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_user_commands(commands)

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

    admin = commands.add_parser(
        "admin",
        help="server-side administration (uses the database directly, not the API)",
        description="Server-side administration: run where BERTH_DATABASE_URL reaches the platform's database.",
    )
    admin_commands = admin.add_subparsers(dest="admin_command", required=True, metavar="COMMAND")
    grant = admin_commands.add_parser("grant", help="give a user the admin role (from their next sign-in)")
    grant.add_argument("email")
    grant.add_argument("--revoke", action="store_true", help="take the admin role back instead")
    grant.set_defaults(run=_cmd_admin)
    billing = admin_commands.add_parser("billing", help="billing: finalize a period's invoices")
    billing_commands = billing.add_subparsers(dest="billing_command", required=True, metavar="COMMAND")
    finalize = billing_commands.add_parser(
        "finalize",
        help="finalize every tenant's invoice of a period now (adjustment invoices for usage added since)",
        description="Finalize every tenant's usage invoice of PERIOD (a calendar month, UTC): its lines never "
        "change afterwards; usage that reached the period after an earlier finalization is billed by an "
        "adjustment invoice. Running it again writes nothing new unless usage grew.",
    )
    finalize.add_argument("period", metavar="PERIOD", help="the month, YYYY-MM")
    finalize.set_defaults(run=_cmd_billing_finalize)

    dev_mail = commands.add_parser(
        "dev-mail", help="development: the mail the platform would have sent (the dev outbox table)"
    )
    dev_mail.add_argument("--to", help="only mail to addresses containing this")
    dev_mail.add_argument("--limit", type=int, default=5)
    dev_mail.set_defaults(run=_cmd_dev_mail)

    completion = commands.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print a bash completion script: `source <(berth completion bash)`, or save it to "
        "/etc/bash_completion.d/berth.",
    )
    completion.add_argument("shell", choices=["bash"])
    completion.set_defaults(run=_cmd_completion)

    docs = commands.add_parser("docs", help="write the CLI reference (docs/cli.md) from this parser")
    docs.add_argument("--output", "-o", default="docs/cli.md", help="where to write it ('-' for stdout)")
    docs.set_defaults(run=_cmd_docs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if hasattr(args, "run_user"):
            from cli.user.commands import run_user_command

            return run_user_command(args)
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
