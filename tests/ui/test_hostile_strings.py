"""Hostile strings render as text. Names of containers and images cannot hold '<' (the API refuses it),
so the hostile text comes in where the API lets users put anything: a file name inside an image (shown in
the optimisation report), the image's command, working directory and environment variable names (the
inspection), a container's command, and the log lines that command prints. Each must show literally,
create no element and run no script (no dialog opens).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from playwright.sync_api import expect

from tests.conftest import RUN_ID, RunningGateway
from tests.e2e.conftest import SignedInUser, sign_up_and_in
from tests.e2e.test_images import upload_and_process
from tests.support.docker_containers import remove_labelled
from tests.support.docker_images import BUSYBOX
from tests.support.waiting import wait_until
from tests.ui.conftest import SLOW, BrowserSession, open_browser, sign_in_in_browser
from worker.container_runtime import OWNER_LABEL

pytestmark = pytest.mark.docker

IMG = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>alert(2)</script>"
BOLD_DIR = "/srv/<b>bold</b>"
ITALIC_ENV = "<i>x</i>"  # Docker accepts any environment variable name in an image's config
SHELL = f"echo '{IMG}'; echo '{SCRIPT}' >&2; exec /bin/busybox sleep 3600"

_DOCKERFILE = f"""\
FROM scratch
COPY busybox /bin/busybox
COPY hostile/ /srv/
WORKDIR {BOLD_DIR}
ENV {ITALIC_ENV}=1
CMD ["/bin/busybox", "sh", "-c", "echo '{IMG}'"]
"""


@dataclass
class HostileWorld:
    user: SignedInUser
    image: dict[str, Any]
    container: dict[str, Any]


def _build_hostile_image(client: docker.DockerClient, tag: str, destination: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="berth-hostile-") as scratch:
        context = Path(scratch)
        shutil.copy(BUSYBOX, context / "busybox")
        (context / "hostile").mkdir()
        # Bigger than busybox, so it tops the optimisation report's largest files.
        (context / "hostile" / IMG).write_bytes(b"\0" * (4 * 1024 * 1024))
        (context / "Dockerfile").write_text(_DOCKERFILE)
        client.images.build(path=str(context), tag=tag, rm=True, forcerm=True, pull=False, nocache=True)
    with destination.open("wb") as out:
        for chunk in client.images.get(tag).save(named=True):
            out.write(chunk)
    client.images.remove(tag)
    return destination


@pytest.fixture(scope="module")
def hostile(
    gateway: RunningGateway, worker: Any, docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostileWorld]:
    archive = _build_hostile_image(
        docker_client, f"berth-test/hostile:{RUN_ID}", tmp_path_factory.mktemp("hostile") / "hostile.tar"
    )
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        user = sign_up_and_in(client)
        image = upload_and_process(client, user, "hostile", archive)
        assert image["status"] == "ready", image
        body = {"image_id": image["id"], "name": "hostile", "command": ["/bin/busybox", "sh", "-c", SHELL]}

        def answered() -> httpx.Response | None:
            answer = client.post("/api/containers", json=body, headers=user.auth_headers)
            return None if answer.status_code == 503 else answer  # 503 until the session worker's host registers

        created = wait_until(answered, timeout=30, interval=0.5, message="no host took the container")
        assert created.status_code == 202, created.text
    try:
        yield HostileWorld(user, image, created.json())
    finally:
        remove_labelled(docker_client, OWNER_LABEL, user.id)


@pytest.fixture
def signed_in(
    playwright_browser: Any, gateway: RunningGateway, ui_origin: str, hostile: HostileWorld
) -> Iterator[BrowserSession]:
    session = open_browser(playwright_browser, gateway.url)
    session.open("/signin")
    sign_in_in_browser(session, hostile.user.email, hostile.user.password)
    session.page.wait_for_url("**/ui/#/containers")
    yield session
    session.context.close()
    assert session.page_faults() == []


def assert_inert(session: BrowserSession) -> None:
    """Nothing hostile became markup or ran: no img with src=x, only our own module script, no dialog."""
    page = session.page
    expect(page.locator("main h1")).to_have_count(1)  # only the page on screen drew into it
    assert page.locator("img[src='x']").count() == 0
    assert page.locator("b").count() == 0
    assert page.locator("i").count() == 0
    scripts = page.eval_on_selector_all("script", "nodes => nodes.map(n => n.src)")
    assert len(scripts) == 1 and scripts[0].endswith("/app.js"), scripts
    page.wait_for_timeout(300)  # part of the check: an onerror would have fired by now
    assert session.dialogs == []


def test_image_metadata_renders_as_text(signed_in: BrowserSession, hostile: HostileWorld) -> None:
    page = signed_in.page
    signed_in.go(f"/images/{hostile.image['id']}")
    expect(page.locator(".image-status .badge")).to_have_text("ready", timeout=SLOW)
    largest = page.get_by_role("table", name="Largest files")
    expect(largest).to_contain_text(f"/srv/{IMG}")
    expect(page.get_by_role("definition").filter(has_text=BOLD_DIR)).to_be_visible()
    expect(page.get_by_role("definition").filter(has_text=f"PATH {ITALIC_ENV}")).to_be_visible()
    expect(page.get_by_role("definition").filter(has_text=f"sh -c echo '{IMG}'")).to_be_visible()
    signed_in.screenshot("hostile-image")
    assert_inert(signed_in)


def test_container_command_and_log_lines_render_as_text(signed_in: BrowserSession, hostile: HostileWorld) -> None:
    page = signed_in.page
    expect(page.get_by_role("link", name="hostile")).to_be_visible()
    page.get_by_role("link", name="hostile").click()
    expect(page.get_by_role("heading", name="Container hostile")).to_be_visible()
    expect(page.locator("dl.details code")).to_contain_text(SHELL)
    logs = page.get_by_role("log", name="Container logs")
    expect(logs.locator("li.log-stdout .log-text", has_text=IMG)).to_have_text(IMG, timeout=SLOW)
    expect(logs.locator("li.log-stderr .log-text", has_text=SCRIPT)).to_have_text(SCRIPT, timeout=SLOW)
    signed_in.screenshot("hostile-container")
    assert_inert(signed_in)
    assert signed_in.foreign_requests() == []
