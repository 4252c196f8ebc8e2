"""`berth` as a user runs it, as a subprocess against the local platform (gateway + worker): login, push
with progress, two replicas, logs -f, a listener, stop, rm, logout; `--json` parses; exit codes hold."""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
import psycopg
import pytest

from tests.conftest import LISTENER_PORTS, PROJECT_ROOT, RUN_ID, RunningGateway, RunningWorker
from tests.support.docker_images import build_test_image, save_image
from worker.container_runtime import CONTAINER_ID_LABEL

pytestmark = pytest.mark.docker

PASSWORD = "correct horse " + secrets.token_hex(4)
GREETING = f"hello-from-berth-{RUN_ID}"


@dataclass
class Cli:
    env: dict[str, str]
    config_dir: Path

    def run(self, *args: str, stdin: str | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli.main", *args],
            env=self.env,
            cwd=PROJECT_ROOT,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ok(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        result = self.run(*args, stdin=stdin)
        assert result.returncode == 0, (
            f"berth {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", *args],
            env=self.env,
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture(scope="module")
def web_archive(docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tag = f"berth-test/web:{RUN_ID}-cli"
    build_test_image(docker_client, "web", tag)
    path = save_image(docker_client, tag, tmp_path_factory.mktemp("web-cli") / "web.tar")
    docker_client.images.remove(tag)
    yield path


@pytest.fixture
def account(gateway: RunningGateway, test_database: str) -> Iterator[str]:
    email = f"cli-{secrets.token_hex(6)}@example.com"
    created = httpx.post(gateway.url + "/api/auth/signup", json={"email": email, "password": PASSWORD}, timeout=30)
    assert created.status_code == 201, created.text
    yield email
    with psycopg.connect(test_database) as conn:
        conn.execute("DELETE FROM containers WHERE owner_id = %s", (created.json()["id"],))
        conn.execute("DELETE FROM listeners WHERE owner_id = %s", (created.json()["id"],))
        conn.execute("DELETE FROM images WHERE owner_id = %s", (created.json()["id"],))
        conn.execute("DELETE FROM users WHERE id = %s", (created.json()["id"],))


@pytest.fixture
def cli(gateway: RunningGateway, tmp_path: Path) -> Cli:
    env = dict(os.environ)
    env.pop("BERTH_TOKEN", None)
    env.update({"XDG_CONFIG_HOME": str(tmp_path / "config"), "BERTH_API": gateway.url, "NO_COLOR": "1"})
    return Cli(env, tmp_path / "config" / "berth")


def _read_until(process: subprocess.Popen[str], text: str, timeout: float) -> list[str]:
    """Lines of ``process``'s stdout until one contains ``text`` (read on a thread, so it can time out)."""
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if text in line:
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    found.wait(timeout)
    return lines if found.is_set() else []


def test_a_user_session_from_login_to_logout(
    cli: Cli, account: str, web_archive: Path, worker: RunningWorker, docker_client: docker.DockerClient
) -> None:
    # GIVEN an account; WHEN the user logs in with email and password
    login = cli.ok("login", "--email", account, "--password-stdin", stdin=PASSWORD + "\n")

    # THEN a refresh token is stored in the XDG config dir, readable by the user only
    assert "logged in" in login.stderr
    config = cli.config_dir / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.config_dir.stat().st_mode) == 0o700
    assert json.loads(config.read_text())["refresh_token"]
    assert cli.json("whoami")["email"] == account

    # WHEN an image is pushed: a progress bar of the upload and of the processing, then the report
    pushed = cli.ok("images", "push", str(web_archive), "--name", "web", "--tag", "1")
    assert "uploading" in pushed.stderr and "processing" in pushed.stderr
    assert "ready" in pushed.stdout and "findings" in pushed.stdout
    images = cli.json("images", "ls")
    assert [image["name"] for image in images] == ["web"] and images[0]["status"] == "ready"
    image_id = images[0]["id"]
    shown = cli.json("images", "show", image_id)
    assert shown["id"] == image_id

    # WHEN two replicas run (printing a greeting before serving)
    started = json.loads(
        cli.ok(
            "containers",
            "run",
            image_id,
            "--json",
            "--name",
            "web",
            "--replicas",
            "2",
            "--port",
            "8080",
            "--command",
            "sh",
            "-c",
            f"echo {GREETING}; exec httpd -f -vv -p 8080 -h /srv/www",
        ).stdout
    )
    assert [c["status"] for c in started] == ["running", "running"]
    assert {c["name"] for c in started} == {"web-1", "web-2"} and {c["service"] for c in started} == {"web"}
    listed = cli.json("containers", "ls", "--service", "web")
    assert sorted(c["id"] for c in listed) == sorted(c["id"] for c in started)

    # THEN logs -f shows the line the container printed (shipped by the worker), and keeps following
    follower = cli.popen("containers", "logs", "web-1", "-f")
    try:
        lines = _read_until(follower, GREETING, timeout=60)
        assert lines, "the greeting never appeared in `berth containers logs -f`"
        assert follower.poll() is None, "logs -f exited instead of following"
    finally:
        follower.terminate()
        follower.wait(10)
    stats = cli.run("containers", "stats", started[0]["id"], "--json")
    assert stats.returncode == 0 and "latest" in json.loads(stats.stdout)

    # WHEN a listener is put in front of the service
    listener = cli.json("listeners", "create", "--service", "web")
    assert listener["service"] == "web" and LISTENER_PORTS[0] <= listener["port"] <= LISTENER_PORTS[1]
    assert [item["id"] for item in cli.json("listeners", "ls")] == [listener["id"]]

    # WHEN a replica is stopped, and everything removed
    stopped = cli.json("containers", "stop", "web-1", "--wait")
    assert [c["status"] for c in stopped] == ["stopped"]
    cli.ok("containers", "rm", *(c["id"] for c in started), "--wait")
    cli.ok("listeners", "rm", listener["id"])
    assert cli.json("containers", "ls") == [] and cli.json("listeners", "ls") == []
    assert not docker_client.containers.list(
        ignore_removed=True, all=True, filters={"label": f"{CONTAINER_ID_LABEL}={started[0]['id']}"}
    )
    cli.ok("images", "rm", image_id)

    # WHEN the user logs out: the session ends and the credentials are forgotten
    cli.ok("logout")
    assert "refresh_token" not in json.loads(config.read_text())
    after = cli.run("whoami")
    assert after.returncode == 3 and "berth login" in after.stderr


def test_tokens_from_the_cli_and_exit_codes_scripts_rely_on(cli: Cli, account: str) -> None:
    cli.ok("login", "--email", account, "--password-stdin", stdin=PASSWORD + "\n")

    # A read token, created once and listed without its secret
    created = cli.json("tokens", "create", "--name", "ci-read", "--scope", "read", "--expires-in-days", "7")
    assert created["scopes"] == ["read"] and created["token"]
    listed = cli.json("tokens", "ls")
    assert [t["name"] for t in listed] == ["ci-read"] and "token" not in listed[0]

    # Used through BERTH_TOKEN (no config needed): reading works, deploying is 403 -> exit 4
    reader = Cli({**cli.env, "BERTH_TOKEN": created["token"], "XDG_CONFIG_HOME": "/nonexistent"}, cli.config_dir)
    assert reader.json("images", "ls") == []
    refused = reader.run("containers", "run", "00000000-0000-0000-0000-000000000000", "--name", "x", "--detach")
    assert refused.returncode == 4, refused.stderr
    assert "insufficient_scope" in refused.stderr

    # Exit codes: 5 not found, 7 invalid input, 2 a bad local file, 3 after revocation
    assert cli.run("images", "show", "00000000-0000-0000-0000-000000000000").returncode == 5
    assert cli.run("tokens", "create", "--name", "x", "--expires-in-days", "0").returncode == 7
    assert cli.run("images", "push", "/nonexistent.tar", "--name", "web").returncode == 2
    cli.ok("tokens", "revoke", created["id"])
    revoked = reader.run("images", "ls")
    assert revoked.returncode == 3 and "token_revoked" in revoked.stderr

    # `berth login --token` stores a token instead of a session
    deploy = cli.json("tokens", "create", "--name", "ci-deploy", "--scope", "deploy", "--scope", "read")
    with_token = Cli({**cli.env, "XDG_CONFIG_HOME": str(cli.config_dir.parent.parent / "token-config")}, cli.config_dir)
    with_token.ok("login", "--token", deploy["token"])
    assert with_token.json("whoami")["email"] == account
    stored = json.loads((cli.config_dir.parent.parent / "token-config" / "berth" / "config.json").read_text())
    assert stored["token"] == deploy["token"] and "refresh_token" not in stored


def test_a_service_deployed_scaled_and_rolled_back_from_the_cli(
    cli: Cli, account: str, web_archive: Path, worker: RunningWorker, lb_runtime: Any
) -> None:
    cli.ok("login", "--email", account, "--password-stdin", stdin=PASSWORD + "\n")
    image_id = cli.json("images", "push", str(web_archive), "--name", "web", "--tag", "1")["id"]
    rolling = ("--min-healthy-seconds", "1", "--healthy-deadline-seconds", "60")
    check = ("--health-check", "http", "--health-path", "/cgi-bin/whoami", "--health-interval", "1")

    # WHEN `services deploy` names a service that does not exist: it is created, and followed until healthy
    # (a regional minimum that is no whole number is refused before anything is sent)
    wrong = cli.run("services", "deploy", "web", "--image", image_id, "--region", "local=two")
    assert wrong.returncode == 2 and "--region takes NAME=MIN" in wrong.stderr
    assert cli.json("services", "ls") == []
    created = cli.run(
        "services", "deploy", "web", "--image", image_id, "--replicas", "2", "--port", "8080", "--region", "local=1",
        *check, *rolling,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "created" in created.stderr and "release 1 of web is healthy" in created.stderr
    assert "web.internal" in created.stdout
    service = cli.json("services", "show", "web")
    assert service["replicas"] == service["running_replicas"] == 2 and service["release_status"] == "healthy"
    assert service["regions"] == [{"name": "local", "min": 1}]
    assert "regions local (at least 1)" in cli.ok("services", "show", "web").stdout

    # WHEN a change is deployed: release 2 rolls (its progress on stderr) and ends healthy, on 2 replicas
    changed = cli.json("services", "deploy", "web", "--env", "GREETING=two", "--no-regions")
    assert changed["release"] == 2 and changed["release_status"] == "healthy" and changed["env_names"] == ["GREETING"]
    assert changed["regions"] == []
    assert [(r["release"], r["running"]) for r in changed["replicas_by_release"]] == [(2, 2)]

    # WHEN it is scaled to 1 and waited for
    scaled = cli.json("services", "scale", "web", "1", "--wait")
    assert scaled["replicas"] == scaled["running_replicas"] == 1

    # WHEN a release fails its health check: it is rolled back automatically and the deploy exits 11
    failing = cli.run(
        "services",
        "deploy",
        "web",
        "--health-check",
        "http",
        "--health-path",
        "/no-such-page",
        "--health-interval",
        "1",
    )
    assert failing.returncode == 11, failing.stderr
    assert "rolled_back" in failing.stderr

    # THEN releases --json parses, newest first, each with its status and reason
    releases = cli.json("services", "releases", "web")
    assert [(r["number"], r["status"]) for r in releases] == [(3, "rolled_back"), (2, "healthy"), (1, "superseded")]
    assert releases[0]["reason"]

    # WHEN the user rolls back by hand to release 1: a new release 4 with release 1's configuration, healthy
    rolled = cli.json("services", "rollback", "web", "--release", "1")
    assert rolled["number"] == 4 and rolled["status"] == "healthy" and rolled["reason"] == "rollback to release 1"
    assert cli.json("services", "show", "web")["env_names"] == []
    assert cli.json("services", "show", "web")["regions"] == [{"name": "local", "min": 1}]
    assert [s["name"] for s in cli.json("services", "ls")] == ["web"]

    # WHEN it is removed (the name typed to confirm): it is gone; a missing service exits 5
    cli.ok("services", "rm", "web", stdin="web\n")
    assert cli.json("services", "ls") == []
    assert cli.run("services", "show", "web").returncode == 5
