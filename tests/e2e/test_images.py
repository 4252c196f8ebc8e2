"""Images as a user meets them: create, upload to storage, complete, watch it process, read the reports.

Everything is real: the gateway and its functions, moto's S3 and SQS, PostgreSQL, a `berth worker`
process and Docker Engine.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.e2e.conftest import SignedInUser, sign_up_and_in
from tests.support.archives import Entry, build_archive, image_config
from tests.support.docker_images import FINDINGS_WASTED_BYTES
from tests.support.waiting import wait_until

pytestmark = pytest.mark.docker

TERMINAL = {"ready", "rejected", "failed"}


def create_image(client: httpx.Client, user: SignedInUser, name: str, tag: str = "1") -> dict[str, Any]:
    answer = client.post("/api/images", json={"name": name, "tag": tag}, headers=user.auth_headers)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def upload(image: dict[str, Any], archive: Path) -> httpx.Response:
    """POST the archive to the presigned target with plain HTTP, as curl or a browser would."""
    with archive.open("rb") as data:
        return httpx.post(
            image["upload"]["url"],
            data=image["upload"]["fields"],
            files={"file": ("image.tar", data, "application/x-tar")},
            timeout=60,
        )


def wait_until_done(client: httpx.Client, user: SignedInUser, image_id: str, timeout: float = 90) -> dict[str, Any]:
    seen_stages = set()

    def finished() -> dict[str, Any] | None:
        answer = client.get(f"/api/images/{image_id}", headers=user.auth_headers)
        assert answer.status_code == 200, answer.text
        body = dict(answer.json())
        if body.get("progress"):
            seen_stages.add(body["progress"]["stage"])
        return body | {"_stages": seen_stages} if body["status"] in TERMINAL else None

    return wait_until(finished, timeout=timeout, interval=0.2, message=f"image {image_id} did not finish")


def upload_and_process(client: httpx.Client, user: SignedInUser, name: str, archive: Path) -> dict[str, Any]:
    image = create_image(client, user, name)
    assert upload(image, archive).status_code in (200, 201, 204)
    completed = client.post(f"/api/images/{image['id']}/complete", headers=user.auth_headers)
    assert completed.status_code == 202, completed.text
    return wait_until_done(client, user, image["id"])


def test_findings_image_end_to_end(
    client: httpx.Client, worker: Any, findings_archive: Path, docker_client: docker.DockerClient
) -> None:
    # GIVEN a user and the project's multi-layer test image saved as an archive
    user = sign_up_and_in(client)
    image = create_image(client, user, "web", "1")
    assert image["status"] == "pending_upload"
    assert set(image["upload"]) >= {"url", "fields"}

    # WHEN they complete before uploading, they are told to upload first
    early = client.post(f"/api/images/{image['id']}/complete", headers=user.auth_headers)
    assert early.status_code == 409 and "upload" in early.json()["error"]["message"].lower()

    # WHEN they upload with plain HTTP and complete
    assert upload(image, findings_archive).status_code in (200, 201, 204)
    completed = client.post(f"/api/images/{image['id']}/complete", headers=user.auth_headers)
    assert completed.status_code == 202 and completed.json()["status"] == "uploaded"

    # THEN the worker processes it to ready, reporting progress on the way
    ready = wait_until_done(client, user, image["id"])
    assert ready["status"] == "ready", ready
    assert ready["exposed_ports"] == ["8080/tcp"]
    assert ready["cmd"][0] == "httpd"
    assert "API_TOKEN" in ready["env_names"]
    assert "not-a-real-token" not in str(ready)
    assert ready["size_bytes"] > 1_000_000 and len(ready["layers"]) >= 5
    kinds = {(f["kind"], f["path"]) for f in ready["scan"]["findings"]}
    assert ("private_key", "/root/.ssh/id_rsa") in kinds
    assert ("setuid", "/bin/suid-helper") in kinds
    assert ("secret_env", "env:API_TOKEN") in kinds
    assert ("root_user", "config:User") in kinds
    assert ready["optimization"]["wasted_bytes"] == FINDINGS_WASTED_BYTES
    assert 0 < ready["optimization"]["efficiency"] < 1
    # AND the image is in Docker under the platform's namespace for this user only
    reference = f"berth/{user.id}/web:1"
    assert docker_client.images.get(reference).id

    # AND another user can neither see nor touch it
    other = sign_up_and_in(client)
    for method, path in [("GET", ""), ("DELETE", ""), ("POST", "/complete")]:
        answer = client.request(method, f"/api/images/{image['id']}{path}", headers=other.auth_headers)
        assert answer.status_code == 404, (method, path, answer.text)
    assert client.get("/api/images", headers=other.auth_headers).json()["items"] == []

    # AND completing again changes nothing
    again = client.post(f"/api/images/{image['id']}/complete", headers=user.auth_headers)
    assert again.status_code == 409

    # WHEN the owner deletes it, it is gone from the API and from Docker
    assert client.delete(f"/api/images/{image['id']}", headers=user.auth_headers).status_code == 204
    assert client.get(f"/api/images/{image['id']}", headers=user.auth_headers).status_code == 404
    wait_until(
        lambda: not docker_client.api.images(name=reference),
        timeout=30,
        interval=0.2,
        message=f"{reference} still in Docker after delete",
    )


def test_names_are_per_user_and_lists_paginate(client: httpx.Client) -> None:
    alice, bob = sign_up_and_in(client), sign_up_and_in(client)
    create_image(client, alice, "app", "1")
    create_image(client, bob, "app", "1")  # the same name for another user is fine
    duplicate = client.post("/api/images", json={"name": "app", "tag": "1"}, headers=alice.auth_headers)
    assert duplicate.status_code == 409
    for tag in ("2", "3", "4"):
        create_image(client, alice, "app", tag)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/api/images", params=params, headers=alice.auth_headers).json()
        seen += [f"{item['name']}:{item['tag']}" for item in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == ["app:1", "app:2", "app:3", "app:4"]


@pytest.mark.parametrize(
    "body",
    [
        {"name": "UPPER", "tag": "1"},
        {"name": "", "tag": "1"},
        {"name": "a b", "tag": "1"},
        {"name": "ok", "tag": "bad tag"},
        {"name": 5, "tag": "1"},
        {"name": "ok", "tag": "1", "extra": True},
        {"tag": "1"},
    ],
)
def test_bad_image_input_is_a_clear_4xx(client: httpx.Client, body: dict[str, Any]) -> None:
    user = sign_up_and_in(client)
    answer = client.post("/api/images", json=body, headers=user.auth_headers)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "validation_failed"


def test_bad_cursor_and_unknown_ids(client: httpx.Client) -> None:
    user = sign_up_and_in(client)
    assert client.get("/api/images", params={"cursor": "nonsense!"}, headers=user.auth_headers).status_code == 400
    assert client.get("/api/images/not-a-uuid", headers=user.auth_headers).status_code == 404
    assert client.get("/api/images", params={"limit": 0}, headers=user.auth_headers).status_code == 422


def test_tags_inside_an_upload_cannot_re_point_any_name(
    client: httpx.Client, worker: Any, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    # GIVEN alice's image web:1, ready in Docker
    alice, mallory = sign_up_and_in(client), sign_up_and_in(client)
    alice_reference, stray = f"berth/{alice.id}/web:1", f"berth-e2e-stray-{uuid.uuid4().hex[:12]}:1"
    config = image_config(user="1000", cmd=["/bin/true"])
    own = build_archive(tmp_path / "alice.tar", [[Entry("srv/alice.bin", os.urandom(256 * 1024))]], config=config)
    images = [upload_and_process(client, alice, "web", own)]
    try:
        assert images[0]["status"] == "ready", images[0]
        alice_id = docker_client.images.get(alice_reference).id
        # WHEN mallory uploads an archive whose manifest and repositories file name alice's image and another
        evil = build_archive(
            tmp_path / "mallory.tar",
            [[Entry("srv/mallory.bin", os.urandom(256 * 1024))]],
            config=image_config(user="1000", cmd=["/bin/false"]),
            repo_tags=[alice_reference, stray],
            extra=[Entry("repositories", json.dumps({f"berth/{alice.id}/web": {"1": "x" * 64}}).encode())],
        )
        images.append(upload_and_process(client, mallory, "web", evil))
        # THEN mallory's image is ready under mallory's own name only
        assert images[1]["status"] == "ready", images[1]
        mallory_id = docker_client.images.get(f"berth/{mallory.id}/web:1").id
        assert mallory_id != alice_id
        assert docker_client.images.get(mallory_id).tags == [f"berth/{mallory.id}/web:1"]
        # AND alice's name still points at alice's image, and the other name was never created
        assert docker_client.images.get(alice_reference).id == alice_id
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(stray)
    finally:
        for image, user in zip(images, (alice, mallory), strict=False):
            client.delete(f"/api/images/{image['id']}", headers=user.auth_headers)
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(stray, force=True)


MALICIOUS = {
    "not-a-tar": lambda tmp: (tmp / "x.tar").write_bytes(b"definitely not a tar archive " * 50) and tmp / "x.tar",
    "no-manifest": lambda tmp: build_archive(tmp / "a.tar", [[Entry("bin/app", b"x")]], manifest=False),
    "traversal": lambda tmp: build_archive(tmp / "a.tar", [[Entry("../../etc/cron.d/x", b"x")]]),
    "device": lambda tmp: build_archive(tmp / "a.tar", [[Entry.device("dev/kmem")]]),
    "bomb": lambda tmp: build_archive(tmp / "a.tar", [[Entry("zeros", bytes(48 * 1024 * 1024))]], compress_layers=True),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_archives_end_rejected(client: httpx.Client, worker: Any, tmp_path: Path, case: str) -> None:
    user = sign_up_and_in(client)
    result = upload_and_process(client, user, f"evil-{case}", MALICIOUS[case](tmp_path))
    assert result["status"] == "rejected", result
    assert result["reason"]
    assert result["scan"] is None and result["size_bytes"] is None


def test_berth_push_uploads_and_follows_progress_to_ready(
    client: httpx.Client, gateway: Any, worker: Any, findings_archive: Path
) -> None:
    import subprocess
    import sys

    user = sign_up_and_in(client)
    pushed = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "push",
            str(findings_archive),
            "--name",
            "pushed",
            "--tag",
            "2",
            "--api",
            gateway.url,
        ],
        env={**gateway.env, "BERTH_TOKEN": user.access_token},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    lines = pushed.stdout.splitlines()
    assert lines[0].startswith("image ") and "uploading" in lines[0]
    # At least one progress line before ready (how many depends on how fast the worker is)
    assert "ready" in lines
    assert any(line.startswith(("uploaded", "processing")) for line in lines[1 : lines.index("ready")])
    assert "[critical] private_key /root/.ssh/id_rsa" in pushed.stdout
    assert user.access_token not in pushed.stdout + pushed.stderr

    # --quiet: the image id alone on stdout (for scripts), the progress on stderr.
    quiet = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "push",
            str(findings_archive),
            "--name=quiet",
            "--quiet",
            f"--api={gateway.url}",
        ],
        env={**gateway.env, "BERTH_TOKEN": user.access_token},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    image_id = quiet.stdout.strip()
    assert client.get(f"/api/images/{image_id}", headers=user.auth_headers).json()["status"] == "ready"
    assert "ready" in quiet.stderr.splitlines()

    missing = subprocess.run(
        [sys.executable, "-m", "cli.main", "push", "/nonexistent.tar", "--name", "x", "--api", gateway.url],
        env={**gateway.env, "BERTH_TOKEN": user.access_token},
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2 and "docker save" in missing.stderr
