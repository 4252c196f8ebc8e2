"""Account management through the gateway: password and email changes, deletion of an account with every
resource it owns (checked in Docker, storage, the registry and lb-runtime), and the admin routes."""

from __future__ import annotations

import re
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import docker
import httpx
import psycopg
import pytest
from botocore.exceptions import ClientError

from shared.config import get_function_settings
from tests.conftest import LOCAL_AWS_URL, PROJECT_ROOT, RUN_ID, RunningLb, RunningWorker
from tests.e2e.conftest import SignedInUser, sign_up_and_in
from tests.e2e.test_images import upload_and_process
from tests.support.docker_images import build_test_image, save_image
from tests.support.waiting import wait_until
from worker.container_runtime import OWNER_LABEL


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sign_in(client: httpx.Client, email: str, password: str) -> dict[str, Any]:
    answer = client.post("/api/auth/signin", json={"email": email, "password": password})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


@pytest.fixture
def users(test_database: str) -> Iterator[list[str]]:
    """Ids of the test's users, removed afterwards with whatever they still own."""
    ids: list[str] = []
    yield ids
    with psycopg.connect(test_database) as conn:
        for table in ("listeners", "containers", "images"):
            conn.execute(f"DELETE FROM {table} WHERE owner_id = ANY(%s::uuid[])", (ids,))  # noqa: S608
        conn.execute("DELETE FROM users WHERE id = ANY(%s::uuid[])", (ids,))


def new_user(client: httpx.Client, users: list[str]) -> SignedInUser:
    user = sign_up_and_in(client)
    users.append(user.id)
    return user


# --- password and email ----------------------------------------------------------------------------


def test_changing_the_password_ends_every_other_session(client: httpx.Client, users: list[str]) -> None:
    user = new_user(client, users)
    other = sign_in(client, user.email, user.password)
    new_password = "another horse " + secrets.token_hex(4)

    wrong = client.post(
        "/api/auth/password", headers=user.auth_headers, json={"current_password": "nope", "new_password": new_password}
    )
    weak = client.post(
        "/api/auth/password", headers=user.auth_headers, json={"current_password": user.password, "new_password": "a"}
    )
    changed = client.post(
        "/api/auth/password",
        headers=user.auth_headers,
        json={"current_password": user.password, "new_password": new_password},
    )

    assert wrong.status_code == 401 and weak.status_code == 422
    assert changed.status_code == 200 and changed.json() == {"sessions_ended": 1}
    assert client.get("/api/auth/me", headers=bearer(other["access_token"])).status_code == 401
    assert client.post("/api/auth/refresh", json={"refresh_token": other["refresh_token"]}).status_code == 401
    assert client.get("/api/auth/me", headers=user.auth_headers).status_code == 200
    assert client.post("/api/auth/signin", json={"email": user.email, "password": user.password}).status_code == 401
    sign_in(client, user.email, new_password)


def test_changing_the_email_needs_the_token_sent_to_the_new_address(
    client: httpx.Client, users: list[str], test_database: str, gateway: Any
) -> None:
    user = new_user(client, users)
    new_email = f"moved-{secrets.token_hex(6)}@example.com"

    asked = client.post(
        "/api/auth/email", headers=user.auth_headers, json={"new_email": new_email, "password": user.password}
    )

    assert asked.status_code == 202 and asked.json()["new_email"] == new_email
    with psycopg.connect(test_database) as conn:
        row = conn.execute("SELECT body FROM dev_outbox WHERE recipient = %s", (new_email,)).fetchone()
    assert row is not None
    token = re.search(r"confirm-email ([A-Za-z0-9_-]+)", row[0]).group(1)  # type: ignore[union-attr]
    assert token not in gateway.access_log()
    assert client.post("/api/auth/email/confirm", json={"token": "forged"}).status_code == 404
    confirmed = client.post("/api/auth/email/confirm", json={"token": token})
    assert confirmed.status_code == 200 and confirmed.json()["email"] == new_email
    assert client.post("/api/auth/email/confirm", json={"token": token}).status_code == 404  # used once
    assert client.get("/api/auth/me", headers=user.auth_headers).status_code == 401  # sessions ended
    sign_in(client, new_email, user.password)
    taken = client.post(
        "/api/auth/email", headers=user.auth_headers, json={"new_email": "not an email", "password": user.password}
    )
    assert taken.status_code in (401, 422)


# --- deletion --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def web_archive(docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tag = f"berth-test/web:{RUN_ID}-accounts"
    build_test_image(docker_client, "web", tag)
    path = save_image(docker_client, tag, tmp_path_factory.mktemp("web-accounts") / "web.tar")
    docker_client.images.remove(tag)
    yield path


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _object_exists(key: str) -> bool:
    s3 = boto3.client("s3", endpoint_url=LOCAL_AWS_URL, region_name="us-east-1")
    try:
        s3.head_object(Bucket=get_function_settings().images_bucket, Key=key)
    except ClientError:
        return False
    return True


@pytest.mark.docker
def test_deleting_an_account_removes_everything_it_owns_and_a_second_delete_answers_the_same(
    client: httpx.Client,
    users: list[str],
    worker: RunningWorker,
    lb_runtime: RunningLb,
    web_archive: Path,
    docker_client: docker.DockerClient,
    test_database: str,
) -> None:
    # GIVEN a user with an image, two running replicas, a listener, a token and a second session
    user = new_user(client, users)
    image = upload_and_process(client, user, "web", web_archive)
    assert image["status"] == "ready"
    for n in (1, 2):
        made = client.post(
            "/api/containers",
            headers=user.auth_headers,
            json={"image_id": image["id"], "name": f"web-{n}", "service": "web", "ports": [{"container_port": 8080}]},
        )
        assert made.status_code == 202, made.text

    def running() -> bool:
        items = client.get("/api/containers", headers=user.auth_headers).json()["items"]
        return [c["status"] for c in items] == ["running", "running"]

    wait_until(running, timeout=90, interval=0.5, message="replicas did not run")
    listener = client.post("/api/load-balancer/listeners", headers=user.auth_headers, json={"service": "web"}).json()
    wait_until(lambda: _port_open(listener["port"]), timeout=30, message="lb-runtime did not bind the listener")
    token = client.post(
        "/api/auth/tokens", headers=user.auth_headers, json={"name": "ci", "scopes": ["read"], "expires_in_days": 1}
    ).json()["token"]
    other = sign_in(client, user.email, user.password)
    with psycopg.connect(test_database) as conn:
        (object_key,) = conn.execute("SELECT object_key FROM images WHERE id = %s", (image["id"],)).fetchone()  # type: ignore[misc]

    def registered() -> bool:  # a running replica is registered by its worker's next registry sync
        with psycopg.connect(test_database) as conn:
            row = conn.execute("SELECT count(*) FROM registry_instances WHERE owner_id = %s", (user.id,)).fetchone()
        return row is not None and row[0] == 2

    wait_until(registered, timeout=30, interval=0.5, message="the replicas were not registered")
    assert _object_exists(object_key)
    assert len(docker_client.containers.list(ignore_removed=True, filters={"label": f"{OWNER_LABEL}={user.id}"})) == 2

    # WHEN it is deleted: a wrong confirmation first, then the right one
    unconfirmed = client.request("DELETE", "/api/auth/me", headers=user.auth_headers, json={"confirm": "someone"})
    first = client.request("DELETE", "/api/auth/me", headers=user.auth_headers, json={"confirm": user.email})

    # THEN it stops working at once, everywhere
    assert unconfirmed.status_code == 409 and unconfirmed.json()["error"]["code"] == "confirmation_mismatch"
    assert first.status_code == 202 and first.json()["id"] == user.id
    assert first.json()["status"] in ("deleting", "deleted")
    assert client.get("/api/auth/me", headers=user.auth_headers).status_code == 401
    assert client.get("/api/images", headers=bearer(other["access_token"])).status_code == 401
    assert client.get("/api/images", headers=bearer(token)).status_code == 401
    assert client.post("/api/auth/refresh", json={"refresh_token": other["refresh_token"]}).status_code == 401
    assert client.post("/api/auth/signin", json={"email": user.email, "password": user.password}).status_code == 401

    # AND every resource goes: lb-runtime's port, the containers in Docker and the registry, then (a retry
    # finishing what waited for the hosts) the image in storage, Docker and the database
    wait_until(lambda: not _port_open(listener["port"]), timeout=30, message="the listener's port stayed open")
    stats = httpx.get(f"{lb_runtime.admin_url}/stats", params={"listener": listener["id"]}, timeout=5)
    assert stats.status_code == 404

    def finished() -> dict[str, Any] | None:
        again = client.request("DELETE", "/api/auth/me", headers=user.auth_headers, json={"confirm": user.email})
        assert again.status_code == 202, again.text
        return again.json() if again.json()["status"] == "deleted" else None

    done = wait_until(finished, timeout=120, interval=1, message="the account never finished deleting")
    assert done == {"id": user.id, "status": "deleted", "remaining": {"containers": 0, "images": 0}}
    last = client.request("DELETE", "/api/auth/me", headers=user.auth_headers, json={"confirm": user.email})
    assert (last.status_code, last.json()) == (202, done)
    assert not docker_client.containers.list(
        ignore_removed=True, all=True, filters={"label": f"{OWNER_LABEL}={user.id}"}
    )
    wait_until(lambda: not _object_exists(object_key), timeout=60, message="the archive stayed in storage")

    def image_gone() -> bool:
        return not docker_client.api.images(name=f"berth/{user.id}/*")

    wait_until(image_gone, timeout=90, interval=1, message="the image stayed in Docker")
    with psycopg.connect(test_database) as conn:
        assert (
            conn.execute("SELECT count(*) FROM registry_instances WHERE owner_id = %s", (user.id,)).fetchone()[0] == 0
        )  # type: ignore[index]
        assert conn.execute("SELECT count(*) FROM listeners WHERE owner_id = %s", (user.id,)).fetchone()[0] == 0  # type: ignore[index]
        assert (
            conn.execute(
                "SELECT count(*) FROM api_tokens WHERE user_id = %s AND revoked_at IS NULL", (user.id,)
            ).fetchone()[0]
            == 0
        )  # type: ignore[index]
        status = conn.execute("SELECT status, email FROM users WHERE id = %s", (user.id,)).fetchone()
    assert status is not None and status[0] == "deleted" and user.email not in status[1]
    # The email is free again.
    again = client.post("/api/auth/signup", json={"email": user.email, "password": user.password})
    assert again.status_code == 201
    users.append(again.json()["id"])


# --- admin -----------------------------------------------------------------------------------------


def grant_admin(email: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "admin", "grant", email],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_admins_list_disable_and_re_enable_users(client: httpx.Client, users: list[str]) -> None:
    # GIVEN an admin (granted by the server-side command, effective from the next sign-in) and a user
    admin = new_user(client, users)
    user = new_user(client, users)
    granted = grant_admin(admin.email)
    assert granted.returncode == 0, granted.stderr
    assert grant_admin("nobody-" + secrets.token_hex(3) + "@example.com").returncode == 5
    admin_headers = bearer(sign_in(client, admin.email, admin.password)["access_token"])
    user_token = client.post(
        "/api/auth/tokens", headers=user.auth_headers, json={"name": "ci", "scopes": ["read"], "expires_in_days": 1}
    ).json()["token"]
    admin_token = client.post(
        "/api/auth/tokens", headers=admin_headers, json={"name": "ci", "scopes": ["read"], "expires_in_days": 1}
    ).json()["token"]

    # THEN only the admin, signed in with a password, reaches the admin routes
    assert client.get("/api/admin/users", headers=user.auth_headers).status_code == 403
    assert client.get("/api/admin/users", headers=bearer(admin_token)).status_code == 403
    listed = client.get("/api/admin/users", headers=admin_headers, params={"limit": 100})
    assert listed.status_code == 200
    assert {"id", "email", "role", "plan", "status", "created_at"} <= set(listed.json()["items"][0])
    assert client.get("/api/admin/users", headers=admin_headers, params={"cursor": "bogus"}).status_code == 400

    # WHEN the admin disables the user: their session and token stop at once, and they cannot sign in
    disabled = client.post(f"/api/admin/users/{user.id}/disable", headers=admin_headers)
    assert disabled.status_code == 200 and disabled.json()["status"] == "disabled"
    assert client.get("/api/auth/me", headers=user.auth_headers).status_code == 401
    assert client.get("/api/images", headers=bearer(user_token)).status_code == 401
    assert client.post("/api/auth/signin", json={"email": user.email, "password": user.password}).status_code == 401

    # WHEN re-enabled: they sign in again (and the token, never revoked, works again)
    enabled = client.post(f"/api/admin/users/{user.id}/enable", headers=admin_headers)
    assert enabled.status_code == 200 and enabled.json()["status"] == "active"
    sign_in(client, user.email, user.password)
    assert client.get("/api/images", headers=bearer(user_token)).status_code == 200
    assert client.post("/api/admin/users/not-a-uuid/disable", headers=admin_headers).status_code == 404
