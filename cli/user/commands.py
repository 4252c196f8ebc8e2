"""The user commands: ``berth login|logout|whoami``, ``images``, ``containers``, ``listeners``, ``services``,
``tokens``, ``account``, ``logs``. Each handler takes the parsed arguments and an ``Api`` and returns an exit
code; errors are ``CliError``s, which ``run_user_command`` prints and maps to the documented exit codes."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cli.image_push import print_report, push_image
from cli.user import render
from cli.user.session import Api, CliError, ExitCode

Handler = Callable[[argparse.Namespace, Api], int]

# --- helpers ---------------------------------------------------------------------------------------


def _short(value: str | None, size: int = 8) -> str:
    return (value or "")[:size]


def _age(value: str | None) -> str:
    if not value:
        return "-"
    try:
        then = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    seconds = (datetime.now(UTC) - then).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.0f}{unit} ago" if seconds > 0 else f"in {-seconds / size:.0f}{unit}"
    return "just now"


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for value in values or []:
        name, sep, text = value.partition("=")
        if not sep or not name:
            raise CliError(f"{option} takes NAME=VALUE, got {value!r}", ExitCode.USAGE)
        result[name] = text
    return result


def _resolve_container(api: Api, reference: str) -> dict[str, Any]:
    """A container by id, or by name (as the user sees it in ``containers ls``)."""
    try:
        found: dict[str, Any] = api.get(f"/api/containers/{reference}")
        return found
    except CliError as exc:
        if getattr(exc, "status", None) != 404:
            raise
    matches = [c for c in api.items("/api/containers", {"limit": 100}) if c["name"] == reference]
    if not matches:
        raise CliError(f"no container {reference!r}", ExitCode.NOT_FOUND)
    return matches[0]


# --- login, logout, whoami -------------------------------------------------------------------------


def cmd_login(args: argparse.Namespace, api: Api) -> int:
    creds = api.credentials
    creds.api = api.base_url
    if args.token:
        profile = api.call("GET", "/api/auth/me", auth=False, headers={"Authorization": f"Bearer {args.token}"})
        creds.forget()
        creds.token = args.token
        creds.email = profile["email"]
        creds.save()
        render.err.print(f"logged in to {api.base_url} as [bold]{render._escape(profile['email'])}[/] with a token")
        return ExitCode.OK
    email = args.email or input("email: ").strip()
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = os.environ.get("BERTH_PASSWORD") or getpass.getpass("password: ")
    tokens = api.call("POST", "/api/auth/signin", auth=False, json={"email": email, "password": password})
    creds.forget()
    creds.email = email.lower()
    api.store_session(tokens)
    render.err.print(f"logged in to {api.base_url} as [bold]{render._escape(email)}[/]")
    return ExitCode.OK


def cmd_logout(args: argparse.Namespace, api: Api) -> int:
    creds = api.credentials
    if creds.refresh_token:
        try:
            api.post("/api/auth/signout")
        except CliError as exc:
            render.err.print(f"[yellow]the server did not end the session ({render._escape(exc.message)})[/]")
    had = bool(creds.refresh_token or creds.token)
    creds.forget()
    creds.save()
    render.err.print("logged out" if had else "not logged in")
    return ExitCode.OK


def cmd_whoami(args: argparse.Namespace, api: Api) -> int:
    profile = api.get("/api/auth/me")
    if args.json:
        render.print_json({**profile, "api": api.base_url})
    else:
        render.out.print(
            f"{render._escape(profile['email'])} ({profile['role']}, plan {profile['plan']}) on {api.base_url}"
        )
    return ExitCode.OK


# --- images ----------------------------------------------------------------------------------------


def cmd_images_push(args: argparse.Namespace, api: Api) -> int:
    image = push_image(
        api, Path(args.archive), args.name, args.tag, timeout=args.timeout, quiet=args.quiet or args.json
    )
    if args.json:
        render.print_json(image)
    elif args.quiet:
        print(image["id"], flush=True)
    return ExitCode.OK


def cmd_images_ls(args: argparse.Namespace, api: Api) -> int:
    images = api.items("/api/images", {"limit": 100})
    if args.json:
        render.print_json(images)
        return ExitCode.OK
    render.table(
        ["ID", "NAME", "TAG", "STATUS", "SIZE", "FINDINGS", "CREATED"],
        (
            [
                image["id"],
                image["name"],
                image["tag"],
                render.status(image["status"]),
                f"{(image.get('size_bytes') or 0) / 1e6:.1f} MB",
                len(((image.get("scan") or {}).get("findings")) or []),
                _age(image.get("created_at")),
            ]
            for image in images
        ),
        empty="no images yet: `berth images push ARCHIVE --name NAME`",
    )
    return ExitCode.OK


def cmd_images_show(args: argparse.Namespace, api: Api) -> int:
    image = api.get(f"/api/images/{args.image}")
    if args.json:
        render.print_json(image)
    else:
        render.out.print(
            f"image [bold]{image['id']}[/] {render._escape(image['name'])}:{render._escape(image['tag'])} "
            f"{render.status(image['status'])}"
        )
        print_report(image)
    return ExitCode.OK


def cmd_images_rm(args: argparse.Namespace, api: Api) -> int:
    api.delete(f"/api/images/{args.image}")
    render.err.print(f"image {args.image} deleted")
    return ExitCode.OK


# --- containers ------------------------------------------------------------------------------------


def _container_rows(containers: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            c["id"],
            c["name"],
            c.get("service") or "-",
            render.status(c["status"]),
            c.get("desired_state"),
            ", ".join(f"{p.get('host_ip')}:{p.get('host_port')}->{p['container_port']}" for p in c.get("ports") or [])
            or "-",
            _age(c.get("created_at")),
        ]
        for c in containers
    ]


CONTAINER_COLUMNS = ["ID", "NAME", "SERVICE", "STATUS", "DESIRED", "PORTS", "CREATED"]


def wait_for_containers(api: Api, ids: list[str], target: str, timeout: float, label: str) -> list[dict[str, Any]]:
    """Poll until every container reaches ``target`` (a bar of how many did); FAILED/TIMEOUT otherwise."""
    deadline = time.monotonic() + timeout
    bad = {"failed", "lost"} if target != "deleted" else set()
    latest: dict[str, dict[str, Any]] = {}
    with render.wait_progress() as progress:
        task = progress.add_task(label, total=len(ids), detail="")
        while True:
            for container_id in ids:
                try:
                    latest[container_id] = api.get(f"/api/containers/{container_id}")
                except CliError as exc:
                    if target == "deleted" and getattr(exc, "status", None) == 404:
                        latest[container_id] = {"id": container_id, "status": "deleted"}
                        continue
                    raise
            done = [c for c in latest.values() if c["status"] == target]
            failed = [c for c in latest.values() if c["status"] in bad]
            statuses = sorted({c["status"] for c in latest.values()})
            progress.update(task, completed=len(done), detail=", ".join(statuses))
            if failed:
                reasons = "; ".join(f"{c['name']}: {c['status']} ({c.get('reason') or 'no reason'})" for c in failed)
                raise CliError(reasons, ExitCode.FAILED)
            if len(done) == len(ids):
                return [latest[i] for i in ids]
            if time.monotonic() > deadline:
                raise CliError(f"not all {target} after {timeout:.0f}s ({', '.join(statuses)})", ExitCode.TIMEOUT)
            time.sleep(0.5)


def cmd_containers_run(args: argparse.Namespace, api: Api) -> int:
    body: dict[str, Any] = {
        "image_id": args.image,
        "env": _pairs(args.env, "--env"),
        "secret_env": _pairs(args.secret_env, "--secret-env"),
        "ports": [{"container_port": port} for port in args.port or []],
        "restart_policy": args.restart,
    }
    if args.service or args.replicas > 1:
        body["service"] = args.service or args.name
    if args.command:
        body["command"] = args.command
    if args.cpu is not None:
        body["cpu"] = args.cpu
    if args.memory_mb is not None:
        body["memory_mb"] = args.memory_mb
    if args.health_check:
        check: dict[str, Any] = {"type": args.health_check}
        if args.health_path:
            check["path"] = args.health_path
        body["health_check"] = check
    created = []
    for n in range(1, args.replicas + 1):
        name = f"{args.name}-{n}" if args.replicas > 1 else args.name
        created.append(api.post("/api/containers", json={**body, "name": name}))
        render.err.print(f"container {created[-1]['id']} ({name}) created")
    if not args.detach:
        created = wait_for_containers(
            api, [c["id"] for c in created], "running", args.timeout, f"starting {len(created)} container(s)"
        )
    if args.json:
        render.print_json(created)
    else:
        render.table(CONTAINER_COLUMNS, _container_rows(created))
    return ExitCode.OK


def cmd_containers_ls(args: argparse.Namespace, api: Api) -> int:
    params: dict[str, Any] = {"limit": 100}
    if args.service:
        params["service"] = args.service
    containers = api.items("/api/containers", params)
    if not args.all:
        containers = [c for c in containers if c["status"] != "deleted"]
    if args.json:
        render.print_json(containers)
    else:
        render.table(CONTAINER_COLUMNS, _container_rows(containers), empty="no containers: `berth containers run`")
    return ExitCode.OK


def cmd_containers_logs(args: argparse.Namespace, api: Api) -> int:
    container = _resolve_container(api, args.container)
    path = f"/api/containers/{container['id']}/logs"
    seen: set[tuple[str, str, str]] = set()
    since: str | None = None
    while True:
        params: dict[str, Any] = {"tail": args.tail}
        if since:
            params["since"] = since
        lines = api.get(path, params=params)["lines"]
        for line in lines:
            key = (line["ts"], line["stream"], line["text"])
            if key in seen:
                continue
            seen.add(key)
            if args.json:
                print(__import__("json").dumps(line), flush=True)
            else:
                prefix = f"{line['ts']} " if args.timestamps else ""
                stream = sys.stderr if line["stream"] == "stderr" and not args.follow else sys.stdout
                print(prefix + line["text"], file=stream, flush=True)
            since = line["ts"]
        if not args.follow:
            return ExitCode.OK
        time.sleep(1.0)


def cmd_containers_stats(args: argparse.Namespace, api: Api) -> int:
    container = _resolve_container(api, args.container)
    stats = api.get(f"/api/containers/{container['id']}/stats")
    if args.json:
        render.print_json(stats)
        return ExitCode.OK
    latest = stats.get("latest")
    if not latest:
        render.err.print("no samples yet: the host samples every few seconds while the container runs")
        return ExitCode.OK
    limit = latest.get("memory_limit_bytes") or 0
    render.table(
        ["CPU %", "MEMORY", "LIMIT", "NET RX", "NET TX", "BLOCK R", "BLOCK W", "AT"],
        [
            [
                f"{latest['cpu_percent']:.1f}",
                f"{latest['memory_bytes'] / 2**20:.1f} MiB",
                f"{limit / 2**20:.0f} MiB" if limit else "-",
                f"{latest['net_rx_bytes'] / 1e3:.1f} kB",
                f"{latest['net_tx_bytes'] / 1e3:.1f} kB",
                f"{latest['block_read_bytes'] / 1e3:.1f} kB",
                f"{latest['block_write_bytes'] / 1e3:.1f} kB",
                latest["ts"],
            ]
        ],
    )
    return ExitCode.OK


def _change(action: str, target: str) -> Handler:
    def handler(args: argparse.Namespace, api: Api) -> int:
        ids = []
        for reference in args.containers:
            container = _resolve_container(api, reference)
            if action == "delete":
                api.delete(f"/api/containers/{container['id']}")
            else:
                api.post(f"/api/containers/{container['id']}/{action}")
            ids.append(container["id"])
            render.err.print(f"container {container['id']} ({container['name']}): {action} requested")
        if args.wait:
            done = wait_for_containers(api, ids, target, args.timeout, f"waiting for {target}")
            if args.json:
                render.print_json(done)
        return ExitCode.OK

    return handler


# --- listeners -------------------------------------------------------------------------------------


def _listener_rows(listeners: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [item["id"], item["service"], f"{item.get('address')}:{item['port']}", item["protocol"], item["algorithm"]]
        for item in listeners
    ]


LISTENER_COLUMNS = ["ID", "SERVICE", "ADDRESS", "PROTOCOL", "ALGORITHM"]


def cmd_listeners_create(args: argparse.Namespace, api: Api) -> int:
    body: dict[str, Any] = {"service": args.service, "protocol": args.protocol, "algorithm": args.algorithm}
    if args.port:
        body["port"] = args.port
    if args.weight:
        body["weights"] = {name: int(value) for name, value in _pairs(args.weight, "--weight").items()}
    listener = api.post("/api/load-balancer/listeners", json=body)
    if args.json:
        render.print_json(listener)
    else:
        render.table(LISTENER_COLUMNS, _listener_rows([listener]))
    return ExitCode.OK


def cmd_listeners_ls(args: argparse.Namespace, api: Api) -> int:
    listeners = api.items("/api/load-balancer/listeners", {"limit": 100})
    if args.json:
        render.print_json(listeners)
    else:
        render.table(LISTENER_COLUMNS, _listener_rows(listeners), empty="no listeners: `berth listeners create`")
    return ExitCode.OK


def cmd_listeners_rm(args: argparse.Namespace, api: Api) -> int:
    api.delete(f"/api/load-balancer/listeners/{args.listener}")
    render.err.print(f"listener {args.listener} deleted")
    return ExitCode.OK


# --- services --------------------------------------------------------------------------------------

SETTLED = {"healthy", "failed", "rolled_back", "superseded"}
SERVICE_COLUMNS = ["NAME", "READY", "RELEASE", "STATUS", "IMAGE", "DNS NAME", "UPDATED"]
RELEASE_COLUMNS = ["RELEASE", "STATUS", "IMAGE", "REASON", "CREATED", "FINISHED"]


def _service_path(name: str, *rest: str) -> str:
    return "/".join([f"/api/services/{name}", *rest])


def _service_rows(services: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            s["name"],
            f"{s['running_replicas']}/{s['replicas']}",
            s["release"],
            render.status(s["release_status"]),
            _short(s["image_id"]),
            s["dns_name"],
            _age(s.get("updated_at")),
        ]
        for s in services
    ]


def _release_of(api: Api, name: str, number: int) -> dict[str, Any]:
    for release in api.get(_service_path(name, "releases"), params={"limit": 100})["items"]:
        if release["number"] == number:
            return dict(release)
    raise CliError(f"service {name} has no release {number}", ExitCode.NOT_FOUND)


def wait_for_release(api: Api, name: str, number: int, timeout: float) -> dict[str, Any]:
    """Follow release ``number`` of ``name`` until it settles, with a bar of its ready replicas; a release
    ending failed or rolled_back (or superseded by another) is FAILED, a wait that runs out TIMEOUT."""
    deadline = time.monotonic() + timeout
    with render.wait_progress() as progress:
        task = progress.add_task(f"release {number} of {name}", total=1, detail="pending")
        while True:
            release = _release_of(api, name, number)
            service = api.get(_service_path(name))
            mine = next((r for r in service["replicas_by_release"] if r["release"] == number), None)
            others = sum(r["total"] for r in service["replicas_by_release"] if r["release"] != number)
            detail = release["status"] + (f", {others} old replica(s) left" if others else "")
            progress.update(
                task, total=max(service["replicas"], 1), completed=mine["running"] if mine else 0, detail=detail
            )
            if release["status"] in SETTLED:
                break
            if time.monotonic() > deadline:
                raise CliError(
                    f"release {number} of {name} is still {release['status']} after {timeout:.0f}s", ExitCode.TIMEOUT
                )
            time.sleep(1.0)
    if release["status"] != "healthy":
        reason = release.get("reason") or "no reason given"
        raise CliError(f"release {number} of {name} is {release['status']}: {reason}", ExitCode.FAILED)
    return release


def _health_check(args: argparse.Namespace) -> dict[str, Any] | None:
    if not args.health_check:
        return None
    check: dict[str, Any] = {"type": args.health_check}
    if args.health_path:
        check["path"] = args.health_path
    if args.health_interval:
        check["interval_seconds"] = args.health_interval
    return check


def _deploy_change(args: argparse.Namespace) -> dict[str, Any]:
    """The fields of the current release the options replace (nothing given: the same configuration again)."""
    body: dict[str, Any] = {}
    if args.image:
        body["image_id"] = args.image
    if args.env is not None:
        body["env"] = _pairs(args.env, "--env")
    if args.secret_env is not None:
        body["secret_env"] = _pairs(args.secret_env, "--secret-env")
    if args.port:
        body["ports"] = [{"container_port": port} for port in args.port]
    if args.cpu is not None:
        body["cpu"] = args.cpu
    if args.memory_mb is not None:
        body["memory_mb"] = args.memory_mb
    if args.restart is not None:
        body["restart_policy"] = args.restart
    if args.command:
        body["command"] = args.command
    if args.no_health_check:
        body["health_check"] = None
    elif args.health_check:
        body["health_check"] = _health_check(args)
    if args.no_regions:
        body["regions"] = []
    elif args.region:
        body["regions"] = _regions(args.region)
    return body


def _regions(values: list[str]) -> list[dict[str, Any]]:
    """``--region NAME=MIN`` options as the API's regional minimums (the order kept)."""
    regions = []
    for name, text in _pairs(values, "--region").items():
        if not text.isdigit() or int(text) < 1:
            raise CliError(f"--region takes NAME=MIN with MIN a whole number from 1, got {name}={text}", ExitCode.USAGE)
        regions.append({"name": name, "min": int(text)})
    return regions


def _update_policy(args: argparse.Namespace) -> dict[str, Any]:
    policy: dict[str, Any] = {}
    for option in ("max_surge", "max_unavailable", "min_healthy_seconds", "healthy_deadline_seconds"):
        if getattr(args, option) is not None:
            policy[option] = getattr(args, option)
    if args.no_auto_rollback:
        policy["auto_rollback"] = False
    return policy


def _existing_service(api: Api, name: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = api.get(_service_path(name))
        return found
    except CliError as exc:
        if getattr(exc, "status", None) == 404:
            return None
        raise


def cmd_services_deploy(args: argparse.Namespace, api: Api) -> int:
    existing = _existing_service(api, args.name)
    if existing is None:
        if not args.image:
            raise CliError(f"no service {args.name} yet: give --image to create it", ExitCode.USAGE)
        body: dict[str, Any] = {
            "name": args.name,
            "image_id": args.image,
            "replicas": args.replicas if args.replicas is not None else 1,
            **{key: value for key, value in _deploy_change(args).items() if value is not None},
        }
        policy = _update_policy(args)
        if policy:
            body["update_policy"] = policy
        created = api.post("/api/services", json=body)
        number = created["release"]
        render.err.print(f"service {render._escape(args.name)} created ({created['dns_name']}); release {number}")
    else:
        if args.replicas is not None or _update_policy(args):
            change: dict[str, Any] = {}
            if args.replicas is not None:
                change["replicas"] = args.replicas
            if _update_policy(args):
                change["update_policy"] = {**existing["update_policy"], **_update_policy(args)}
            api.call("PATCH", _service_path(args.name), json=change)
        release = api.post(_service_path(args.name, "deploy"), json=_deploy_change(args))
        number = release["number"]
        render.err.print(f"release {number} of {render._escape(args.name)} created")
    if not args.detach:
        wait_for_release(api, args.name, number, args.timeout)
        render.err.print(f"release {number} of {render._escape(args.name)} is healthy")
    service = api.get(_service_path(args.name))
    if args.json:
        render.print_json(service)
    else:
        render.table(SERVICE_COLUMNS, _service_rows([service]))
    return ExitCode.OK


def cmd_services_ls(args: argparse.Namespace, api: Api) -> int:
    services = api.items("/api/services", {"limit": 100})
    if args.json:
        render.print_json(services)
    else:
        render.table(
            SERVICE_COLUMNS, _service_rows(services), empty="no services: `berth services deploy NAME --image ID`"
        )
    return ExitCode.OK


def cmd_services_show(args: argparse.Namespace, api: Api) -> int:
    service = api.get(_service_path(args.name))
    if args.json:
        render.print_json(service)
        return ExitCode.OK
    render.table(SERVICE_COLUMNS, _service_rows([service]))
    check = service.get("health_check")
    policy = service["update_policy"]
    regions = ", ".join(f"{region['name']} (at least {region['min']})" for region in service.get("regions") or [])
    render.out.print(
        f"image {service['image_id']}; command {render._escape(' '.join(service.get('command') or []) or '-')}; "
        f"env {render._escape(', '.join(service['env_names']) or '-')}; "
        f"secret env {render._escape(', '.join(service['secret_env_names']) or '-')}; "
        f"ports {', '.join(str(p['container_port']) for p in service['ports']) or '-'}; "
        f"cpu {service['cpu']}, {service['memory_mb']} MB; "
        f"health check {render._escape(check['type'] + ' ' + (check.get('path') or '')) if check else '-'}; "
        f"regions {render._escape(regions or '-')}"
    )
    render.out.print(
        f"update policy: max surge {policy['max_surge']}, max unavailable {policy['max_unavailable']}, "
        f"min healthy {policy['min_healthy_seconds']}s, deadline {policy['healthy_deadline_seconds']}s, "
        f"auto rollback {'on' if policy['auto_rollback'] else 'off'}"
    )
    render.table(
        ["RELEASE", "READY", "REPLICAS"],
        ([r["release"], r["running"], r["total"]] for r in service["replicas_by_release"]),
        empty="no replicas",
    )
    return ExitCode.OK


def cmd_services_scale(args: argparse.Namespace, api: Api) -> int:
    service = api.call("PATCH", _service_path(args.name), json={"replicas": args.replicas})
    render.err.print(f"service {render._escape(args.name)} scaled to {args.replicas} replica(s)")
    if args.wait:
        deadline = time.monotonic() + args.timeout
        with render.wait_progress() as progress:
            task = progress.add_task(f"scaling {args.name}", total=max(args.replicas, 1), detail="")
            while True:
                service = api.get(_service_path(args.name))
                total = sum(r["total"] for r in service["replicas_by_release"])
                progress.update(task, completed=service["running_replicas"], detail=f"{total} replica(s) exist")
                if service["running_replicas"] == args.replicas == total:
                    break
                if time.monotonic() > deadline:
                    raise CliError(f"{args.name} has {total} replicas after {args.timeout:.0f}s", ExitCode.TIMEOUT)
                time.sleep(1.0)
    if args.json:
        render.print_json(service)
    else:
        render.table(SERVICE_COLUMNS, _service_rows([service]))
    return ExitCode.OK


def cmd_services_releases(args: argparse.Namespace, api: Api) -> int:
    releases = api.items(_service_path(args.name, "releases"), {"limit": 100})
    if args.json:
        render.print_json(releases)
    else:
        render.table(
            RELEASE_COLUMNS,
            (
                [
                    r["number"],
                    render.status(r["status"]),
                    _short(r["image_id"]),
                    r.get("reason") or "-",
                    _age(r.get("created_at")),
                    _age(r.get("finished_at")),
                ]
                for r in releases
            ),
        )
    return ExitCode.OK


def cmd_services_rollback(args: argparse.Namespace, api: Api) -> int:
    body = {"release": args.release} if args.release is not None else {}
    release = api.post(_service_path(args.name, "rollback"), json=body)
    render.err.print(f"release {release['number']} of {render._escape(args.name)}: {release['reason']}")
    if not args.detach:
        release = wait_for_release(api, args.name, release["number"], args.timeout)
        render.err.print(f"release {release['number']} of {render._escape(args.name)} is healthy")
    if args.json:
        render.print_json(release)
    return ExitCode.OK


def cmd_services_rm(args: argparse.Namespace, api: Api) -> int:
    if not args.yes:
        typed = input(f"This deletes service {args.name}, its replicas and listeners. Type its name: ")
        if typed.strip() != args.name:
            raise CliError("not confirmed; nothing was deleted", ExitCode.USAGE)
    api.delete(_service_path(args.name), json={"confirm": args.name})
    render.err.print(f"service {render._escape(args.name)} deleted (its replicas drain and stop)")
    return ExitCode.OK


# --- tokens ----------------------------------------------------------------------------------------


def cmd_tokens_create(args: argparse.Namespace, api: Api) -> int:
    body = {"name": args.name, "scopes": args.scope or ["read"], "expires_in_days": args.expires_in_days}
    created = api.post("/api/auth/tokens", json=body)
    if args.json:
        render.print_json(created)
    else:
        render.err.print(
            f"token {created['id']} ({created['name']}, {', '.join(created['scopes'])}) expires "
            f"{created['expires_at']}; it is shown once, store it now:"
        )
        print(created["token"], flush=True)
    return ExitCode.OK


def cmd_tokens_ls(args: argparse.Namespace, api: Api) -> int:
    tokens = api.items("/api/auth/tokens")
    if args.json:
        render.print_json(tokens)
    else:
        render.table(
            ["ID", "NAME", "SCOPES", "EXPIRES", "LAST USED", "FROM"],
            (
                [
                    t["id"],
                    t["name"],
                    ",".join(t["scopes"]),
                    t["expires_at"],
                    _age(t.get("last_used_at")),
                    t.get("last_used_ip") or "-",
                ]
                for t in tokens
            ),
            empty="no tokens: `berth tokens create --name NAME --scope deploy`",
        )
    return ExitCode.OK


def cmd_tokens_revoke(args: argparse.Namespace, api: Api) -> int:
    api.delete(f"/api/auth/tokens/{args.token_id}")
    render.err.print(f"token {args.token_id} revoked")
    return ExitCode.OK


# --- account ---------------------------------------------------------------------------------------


def cmd_account_password(args: argparse.Namespace, api: Api) -> int:
    current = getpass.getpass("current password: ")
    new = getpass.getpass("new password: ")
    answer = api.post("/api/auth/password", json={"current_password": current, "new_password": new})
    render.err.print(f"password changed; {answer['sessions_ended']} other session(s) ended")
    return ExitCode.OK


def cmd_account_email(args: argparse.Namespace, api: Api) -> int:
    password = os.environ.get("BERTH_PASSWORD") or getpass.getpass("password: ")
    answer = api.post("/api/auth/email", json={"new_email": args.new_email, "password": password})
    render.err.print(
        f"a confirmation was sent to {render._escape(answer['new_email'])} (valid until {answer['expires_at']}); "
        "then run `berth account confirm-email TOKEN`"
    )
    return ExitCode.OK


def cmd_account_confirm_email(args: argparse.Namespace, api: Api) -> int:
    profile = api.call("POST", "/api/auth/email/confirm", auth=False, json={"token": args.token})
    render.err.print(f"email changed to {render._escape(profile['email'])}; sign in again with it")
    api.credentials.forget()
    api.credentials.save()
    return ExitCode.OK


def cmd_account_delete(args: argparse.Namespace, api: Api) -> int:
    email = api.credentials.email or api.get("/api/auth/me")["email"]
    if not args.yes:
        typed = input(f"This deletes {email} and every image, container and listener of it. Type the email: ")
        if typed.strip().lower() != email:
            raise CliError("not confirmed; nothing was deleted", ExitCode.USAGE)
    deadline = time.monotonic() + args.timeout
    while True:
        answer = api.delete("/api/auth/me", json={"confirm": email})
        if answer["status"] == "deleted" or not args.wait:
            break
        if time.monotonic() > deadline:
            raise CliError(f"still deleting after {args.timeout:.0f}s: {answer['remaining']}", ExitCode.TIMEOUT)
        time.sleep(1.0)
    api.credentials.forget()
    api.credentials.save()
    if args.json:
        render.print_json(answer)
    else:
        render.err.print(f"account {answer['id']}: {answer['status']}")
    return ExitCode.OK


# --- logs ----------------------------------------------------------------------------------------------


def _field_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if text and not any(c.isspace() for c in text) else repr(text)


def cmd_logs(args: argparse.Namespace, api: Api) -> int:
    trail = api.get(f"/api/requests/{urllib.parse.quote(args.request, safe='')}")
    if args.json:
        render.print_json(trail)
        return ExitCode.OK
    for event in trail["events"]:
        fields = " ".join(f"{key}={_field_text(value)}" for key, value in event["fields"].items())
        where = event["service"] if event["source"] == "function" else event["source"]
        line = f"{event['at']} {where:<8} {event['message']}" + (f"  {fields}" if fields else "")
        print(line, flush=True)
    if trail["truncated"]:
        render.err.print("[dim]more lines are kept than one answer holds; these are the oldest[/]")
    return ExitCode.OK


# --- the parser ------------------------------------------------------------------------------------


def add_user_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the user commands on ``berth``'s subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--api", default=None, help="the API's URL (default: $BERTH_API, the config file, http://127.0.0.1:8080)"
    )
    common.add_argument(
        "--token", default=None, help="a token to use instead of the logged-in session (default: $BERTH_TOKEN)"
    )
    listing = argparse.ArgumentParser(add_help=False)
    listing.add_argument("--json", action="store_true", help="print JSON (for scripts) instead of a table")

    def command(
        parent: Any, name: str, handler: Handler, help_text: str, *, lists: bool = False, **kw: Any
    ) -> argparse.ArgumentParser:
        parents = [common, listing] if lists else [common]
        parser: argparse.ArgumentParser = parent.add_parser(
            name, help=help_text, description=help_text, parents=parents, **kw
        )
        parser.set_defaults(run_user=handler)
        return parser

    login = command(commands, "login", cmd_login, "log in with email and password (stores a refresh token) or a token")
    login.add_argument("--email", help="the account's email (asked when missing)")
    login.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin (else $BERTH_PASSWORD or a prompt)"
    )
    command(commands, "logout", cmd_logout, "end the session and forget the stored credentials")
    command(commands, "whoami", cmd_whoami, "the logged-in account", lists=True)

    alias = command(commands, "push", cmd_images_push, "alias of `berth images push`", lists=True)
    add_push_arguments(alias)

    images = commands.add_parser("images", help="container images: push, ls, show, rm", description="container images")
    images_commands = images.add_subparsers(dest="images_command", required=True, metavar="COMMAND")
    push = command(
        images_commands, "push", cmd_images_push, "upload a `docker save` archive and follow it to ready", lists=True
    )
    add_push_arguments(push)
    command(images_commands, "ls", cmd_images_ls, "list images", lists=True)
    show = command(
        images_commands, "show", cmd_images_show, "an image's inspection, findings and optimisation report", lists=True
    )
    show.add_argument("image", help="image id")
    rm = command(images_commands, "rm", cmd_images_rm, "delete an image (its containers must be gone)")
    rm.add_argument("image", help="image id")

    containers = commands.add_parser(
        "containers", help="containers: run, ls, logs, stats, stop, start, restart, rm", description="containers"
    )
    sub = containers.add_subparsers(dest="containers_command", required=True, metavar="COMMAND")
    run = command(
        sub, "run", cmd_containers_run, "run one or more replicas of an image and wait until they run", lists=True
    )
    run.add_argument("image", help="image id (from `berth images ls`)")
    run.add_argument("--name", required=True, help="container name (replicas get -1, -2, ...)")
    run.add_argument("--service", help="service the replicas belong to (default: the name, with --replicas)")
    run.add_argument("--replicas", type=int, default=1, help="how many containers to run (default 1)")
    run.add_argument("--port", type=int, action="append", help="a container port to publish (repeatable)")
    run.add_argument("--env", "-e", action="append", metavar="NAME=VALUE", help="environment variable (repeatable)")
    run.add_argument(
        "--secret-env", action="append", metavar="NAME=VALUE", help="secret environment variable, sealed at rest"
    )
    run.add_argument("--cpu", type=float, help="CPUs (default 0.5)")
    run.add_argument("--memory-mb", type=int, help="memory limit in MB (default 256)")
    run.add_argument("--restart", default="no", help="restart policy: no, on-failure[:N], always")
    run.add_argument("--health-check", choices=["http", "tcp"], help="health check type")
    run.add_argument("--health-path", help="HTTP health check path (default /)")
    run.add_argument("--detach", "-d", action="store_true", help="do not wait for the containers to run")
    run.add_argument("--timeout", type=float, default=180, help="seconds to wait (default 180)")
    run.add_argument("--command", nargs=argparse.REMAINDER, help="command and arguments (the rest of the line)")
    ls = command(sub, "ls", cmd_containers_ls, "list containers", lists=True)
    ls.add_argument("--service", help="only this service's containers")
    ls.add_argument("--all", "-a", action="store_true", help="include deleted containers")
    logs = command(sub, "logs", cmd_containers_logs, "a container's logs", lists=True)
    logs.add_argument("container", help="container id or name")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until interrupted")
    logs.add_argument("--tail", type=int, default=100, help="lines to show first (default 100)")
    logs.add_argument("--timestamps", "-t", action="store_true", help="prefix each line with its time")
    stats = command(
        sub, "stats", cmd_containers_stats, "a container's latest CPU, memory, network and disk use", lists=True
    )
    stats.add_argument("container", help="container id or name")
    for name, action, target, text in (
        ("stop", "stop", "stopped", "stop containers"),
        ("start", "start", "running", "start stopped containers"),
        ("restart", "restart", "running", "restart containers"),
        ("rm", "delete", "deleted", "delete containers"),
    ):
        change = command(sub, name, _change(action, target), text, lists=True)
        change.add_argument("containers", nargs="+", metavar="CONTAINER", help="container id or name")
        change.add_argument("--wait", "-w", action="store_true", help=f"wait until they are {target}")
        change.add_argument("--timeout", type=float, default=120, help="seconds to wait (default 120)")

    listeners = commands.add_parser(
        "listeners", help="load-balancer listeners: create, ls, rm", description="listeners"
    )
    sub = listeners.add_subparsers(dest="listeners_command", required=True, metavar="COMMAND")
    create = command(sub, "create", cmd_listeners_create, "put an external port in front of a service", lists=True)
    create.add_argument("--service", required=True, help="the service to route to")
    create.add_argument("--port", type=int, help="external port (default: a free one)")
    create.add_argument("--protocol", choices=["http", "tcp"], default="http")
    create.add_argument("--algorithm", choices=["round_robin", "least_connections", "weighted"], default="round_robin")
    create.add_argument(
        "--weight", action="append", metavar="CONTAINER_ID=N", help="weight of a container (repeatable)"
    )
    command(sub, "ls", cmd_listeners_ls, "list listeners", lists=True)
    rm = command(sub, "rm", cmd_listeners_rm, "delete a listener (its port closes)")
    rm.add_argument("listener", help="listener id")

    services = commands.add_parser(
        "services",
        help="services (replicas of one release): deploy, ls, show, scale, releases, rollback, rm",
        description="services: declared replicas of one configuration, changed by numbered releases",
    )
    sub = services.add_subparsers(dest="services_command", required=True, metavar="COMMAND")
    deploy = command(
        sub,
        "deploy",
        cmd_services_deploy,
        "create the service (when there is none by that name) or deploy a new release of it, then follow the "
        "rollout until the release is healthy (exit 11 when it fails or is rolled back)",
        lists=True,
    )
    deploy.add_argument("name", help="service name (a DNS label: it becomes NAME.internal)")
    deploy.add_argument("--image", help="image id (required to create; else the current release's image)")
    deploy.add_argument("--replicas", type=int, help="replicas (default 1 when creating; else scales first)")
    deploy.add_argument("--port", type=int, action="append", help="container port (repeatable; replaces the list)")
    deploy.add_argument(
        "--env", "-e", action="append", metavar="NAME=VALUE", help="environment variable (repeatable; replaces all)"
    )
    deploy.add_argument(
        "--secret-env", action="append", metavar="NAME=VALUE", help="secret variable, sealed at rest (replaces all)"
    )
    deploy.add_argument("--cpu", type=float, help="CPUs per replica (default 0.5)")
    deploy.add_argument("--memory-mb", type=int, help="memory per replica in MB (default 256)")
    deploy.add_argument("--restart", help="restart policy: no, on-failure[:N], always (default always)")
    deploy.add_argument("--health-check", choices=["http", "tcp"], help="health check type")
    deploy.add_argument("--health-path", help="HTTP health check path (default /)")
    deploy.add_argument("--health-interval", type=int, help="seconds between health checks (default 10)")
    deploy.add_argument("--no-health-check", action="store_true", help="remove the health check")
    deploy.add_argument(
        "--region",
        action="append",
        metavar="NAME=MIN",
        help="run at least MIN replicas in region NAME (repeatable; replaces the list)",
    )
    deploy.add_argument("--no-regions", action="store_true", help="remove the regional minimums")
    deploy.add_argument("--max-surge", type=int, help="replicas above the count while rolling (default 1)")
    deploy.add_argument("--max-unavailable", type=int, help="replicas below the count while rolling (default 0)")
    deploy.add_argument("--min-healthy-seconds", type=int, help="healthy this long before a replica counts")
    deploy.add_argument("--healthy-deadline-seconds", type=int, help="a replica not ready by then fails the release")
    deploy.add_argument("--no-auto-rollback", action="store_true", help="a failing release stops instead")
    deploy.add_argument("--detach", "-d", action="store_true", help="do not follow the rollout")
    deploy.add_argument("--timeout", type=float, default=600, help="seconds to follow the rollout (default 600)")
    deploy.add_argument("--command", nargs=argparse.REMAINDER, help="command and arguments (the rest of the line)")
    command(sub, "ls", cmd_services_ls, "list services with their ready replicas and release", lists=True)
    show = command(sub, "show", cmd_services_show, "a service: configuration and replicas by release", lists=True)
    show.add_argument("name", help="service name")
    scale = command(sub, "scale", cmd_services_scale, "change the number of replicas (no new release)", lists=True)
    scale.add_argument("name", help="service name")
    scale.add_argument("replicas", type=int, help="the replicas wanted")
    scale.add_argument("--wait", "-w", action="store_true", help="wait until exactly that many are ready")
    scale.add_argument("--timeout", type=float, default=300, help="seconds to wait with --wait (default 300)")
    releases = command(sub, "releases", cmd_services_releases, "a service's releases, newest first", lists=True)
    releases.add_argument("name", help="service name")
    rollback = command(
        sub,
        "rollback",
        cmd_services_rollback,
        "a new release with an earlier one's configuration (the previous healthy one by default), followed "
        "until healthy",
        lists=True,
    )
    rollback.add_argument("name", help="service name")
    rollback.add_argument("--release", type=int, help="the release number to return to")
    rollback.add_argument("--detach", "-d", action="store_true", help="do not follow the rollout")
    rollback.add_argument("--timeout", type=float, default=600, help="seconds to follow the rollout (default 600)")
    rm = command(sub, "rm", cmd_services_rm, "delete a service, its replicas (drained first) and its listeners")
    rm.add_argument("name", help="service name")
    rm.add_argument("--yes", action="store_true", help="do not ask to type the name")

    tokens = commands.add_parser("tokens", help="personal access tokens: create, ls, revoke", description="tokens")
    sub = tokens.add_subparsers(dest="tokens_command", required=True, metavar="COMMAND")
    create = command(sub, "create", cmd_tokens_create, "create a token (printed once) for scripts and CI", lists=True)
    create.add_argument("--name", required=True, help="a name to recognise it by")
    create.add_argument(
        "--scope", action="append", choices=["read", "deploy"], help="read and/or deploy (default read)"
    )
    create.add_argument("--expires-in-days", type=int, default=90, help="lifetime in days (default 90)")
    command(sub, "ls", cmd_tokens_ls, "list live tokens (never their secrets)", lists=True)
    revoke = command(sub, "revoke", cmd_tokens_revoke, "revoke a token at once")
    revoke.add_argument("token_id", help="token id")

    logs = command(
        commands,
        "logs",
        cmd_logs,
        "the trail of one of your requests: the function's and the workers' log lines it caused, oldest first",
        lists=True,
    )
    logs.add_argument(
        "--request",
        required=True,
        metavar="ID",
        help="the request id (X-Request-Id of the answer, or the one an error message quotes)",
    )

    account = commands.add_parser("account", help="the account: password, email, delete", description="account")
    sub = account.add_subparsers(dest="account_command", required=True, metavar="COMMAND")
    command(sub, "password", cmd_account_password, "change the password (other sessions end)")
    email = command(sub, "email", cmd_account_email, "change the email (a confirmation goes to the new address)")
    email.add_argument("new_email")
    confirm = command(sub, "confirm-email", cmd_account_confirm_email, "confirm a change of email with its token")
    confirm.add_argument("token")
    delete = command(sub, "delete", cmd_account_delete, "delete the account and everything it owns", lists=True)
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    delete.add_argument("--wait", action="store_true", help="repeat until every resource is gone")
    delete.add_argument("--timeout", type=float, default=180, help="seconds to wait with --wait (default 180)")


def add_push_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("archive", help="the archive (docker save IMAGE > FILE)")
    parser.add_argument("--name", required=True, help="image name")
    parser.add_argument("--tag", default="latest", help="image tag (default latest)")
    parser.add_argument("--quiet", "-q", action="store_true", help="print only the image id on stdout")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for processing (default 900)")


def run_user_command(args: argparse.Namespace) -> int:
    """Run a user command with an ``Api`` client; errors are printed and mapped to exit codes."""
    try:
        with Api(args.api, args.token) as api:
            return int(args.run_user(args, api))
    except CliError as exc:
        render.err.print(f"[red]error:[/] {render._escape(exc.message)}")
        return exc.exit_code
    except BrokenPipeError:
        return ExitCode.OK
