"""The gateway's OpenAPI document is an exact contract: schemathesis, given only the document, finds no
answer that disagrees with it.

Every phase runs (examples, coverage, fuzzing, stateful through the document's links) with every check,
against the session's local gateway (and lb-runtime, which answers listener stats) as a new user would
meet it: signed up and signed in through the API (tests/e2e/api_contract_hooks.py), with the gateway's
rate limits lifted (the `gateway` fixture). A ready image, a running replica of a service and a live host
(no worker: jobs wait in the host's queue) let creates reach the functions' logic. The run is bounded
(CONTRACT_MAX_EXAMPLES per operation, CONTRACT_MAX_TIME seconds in all) to stay near two to three
minutes on two cores.

Exclusions, each with its reason:
- `unsupported_method` (and `allow_header_conformance`, which only judges 405 answers): API Gateway HTTP
  APIs answer 404 `{"message":"Not Found"}` to a method no route declares, never 405 with `Allow`; the
  local gateway does the same (gateway/server.py).
- `use_after_free` on /api/containers/* (a filter_failure hook, as schemathesis's per-operation settings do
  not reach stateful checks): not API Gateway's doing but the contract's (section 5): a container's DELETE
  answers 202 and the host worker removes it later, and a deleted container's record, events and logs stay
  readable on purpose. The check runs for images and listeners, whose deletes are synchronous (204).
- `negative_data_rejection` on a case schemathesis labels negative but describes as its own default positive
  test case (a stateful step; seen on a rollback with no body, which the document allows): dropped in
  filter_failure, since nothing in the request is invalid.
- `negative_data_rejection` also accepts 413: a body over the route's `x-berth-max-body-bytes` (on AWS
  the 10 MB payload limit) is refused by the gateway before any function reads it, with the 413 each body
  route declares; a long enough string that breaks a `maxLength` takes that path.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from functions.load_balancer.models import MAX_LISTENER_PORT, MIN_LISTENER_PORT
from shared.config import get_function_settings
from shared.jobs import ensure_host_queue
from tests.conftest import PROJECT_ROOT, RunningGateway, RunningLb
from tests.e2e.conftest import SignedInUser, sign_up_and_in

DOCUMENT = PROJECT_ROOT / "gateway-config" / "openapi.yaml"
HOOKS_MODULE = "tests.e2e.api_contract_hooks"
MAX_EXAMPLES = int(os.environ.get("CONTRACT_MAX_EXAMPLES", "25"))
MAX_TIME_SECONDS = int(os.environ.get("CONTRACT_MAX_TIME", "150"))

# The schemathesis configuration, as its schemathesis.toml would hold it.
CONFIG = f"""
[checks]
negative_data_rejection.expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]

[generation]
max-examples = {MAX_EXAMPLES}

[phases.stateful]
max-steps = 8
"""


SERVICE = "web"


@dataclass
class ContractWorld:
    user: SignedInUser
    host_id: str
    image_id: str


def _sql(query: str, params: tuple[object, ...] = ()) -> None:
    with psycopg.connect(get_function_settings().database_url, autocommit=True) as conn:
        conn.execute(query, params)


@pytest.fixture(scope="module")
def contract_world(gateway: RunningGateway) -> Iterator[ContractWorld]:
    """The fuzz's user (signed up through the API), a ready image of theirs and a live host; removed after."""
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        user = sign_up_and_in(client)
    host_id = f"contract-host-{secrets.token_hex(4)}"
    _sql(
        "INSERT INTO hosts (id, address, cpu_capacity, memory_capacity_mb) VALUES (%s, '127.0.0.1', 64, 65536)",
        (host_id,),
    )
    image_id = str(uuid.uuid4())
    _sql(
        "INSERT INTO images (id, owner_id, name, tag, object_key, status) "
        "VALUES (%s, %s, 'web', 'ready', 'k', 'ready')",
        (image_id, user.id),
    )
    # A running replica of the service "web", as its host worker would have left it: listeners may front it.
    _sql(
        "INSERT INTO containers (id, owner_id, image_id, name, service, cpu, memory_mb, host_id, docker_id, status, "
        "desired_state) VALUES (%s, %s, %s, 'web-1', %s, 0.5, 256, %s, 'd-contract', 'running', 'running')",
        (str(uuid.uuid4()), user.id, image_id, SERVICE, host_id),
    )
    ensure_host_queue(get_function_settings(), host_id)
    yield ContractWorld(user, host_id, image_id)
    _sql("DELETE FROM users WHERE id = %s", (user.id,))
    _sql("DELETE FROM containers WHERE host_id = %s", (host_id,))
    _sql("DELETE FROM hosts WHERE id = %s", (host_id,))


def _document_for(settings_range: range, directory: Path) -> Path:
    """The document as this deployment states it: its listener ports are the operator's range (the document's
    20000-29999 is the default; a test process of a parallel run has its own slice of it)."""
    default = range(MIN_LISTENER_PORT, MAX_LISTENER_PORT + 1)
    if settings_range == default:
        return DOCUMENT
    text = DOCUMENT.read_text()
    assert text.count(f"minimum: {default[0]}") == 2 and text.count(f"maximum: {default[-1]}") == 2
    text = text.replace(f"minimum: {default[0]}", f"minimum: {settings_range[0]}")
    text = text.replace(f"maximum: {default[-1]}", f"maximum: {settings_range[-1]}")
    rendered = directory / "openapi.yaml"
    rendered.write_text(text)
    return rendered


def test_the_gateway_keeps_its_documented_contract_under_fuzzing(
    gateway: RunningGateway, lb_runtime: RunningLb, contract_world: ContractWorld, tmp_path: Path
) -> None:
    # GIVEN the local gateway, a signed-up user and the document, with nothing else
    user = contract_world.user
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": HOOKS_MODULE,
        "PYTHONPATH": str(PROJECT_ROOT),
        "BERTH_CONTRACT_URL": gateway.url,
        "BERTH_CONTRACT_EMAIL": user.email,
        "BERTH_CONTRACT_PASSWORD": user.password,
        "BERTH_CONTRACT_HOST_ID": contract_world.host_id,
        "BERTH_CONTRACT_IMAGE_ID": contract_world.image_id,
        "BERTH_CONTRACT_SERVICE": SERVICE,
    }
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file",
        str(tmp_path / "schemathesis.toml"),
        "run",
        str(_document_for(get_function_settings().lb_port_range, tmp_path)),
        "--url",
        gateway.url,
        "--checks",
        "all",
        "--exclude-checks",
        "unsupported_method,allow_header_conformance",
        "--max-time",
        str(MAX_TIME_SECONDS),
        "--workers",
        "2",
        "--continue-on-failure",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path / "report"),
    ]
    # WHEN schemathesis runs every phase with every check against it
    started = time.monotonic()
    run = subprocess.run(
        command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=MAX_TIME_SECONDS + 120
    )
    elapsed = time.monotonic() - started
    # THEN no check fails and no phase errs
    summary = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, f"schemathesis found disagreements ({elapsed:.0f} s):\n{run.stdout}\n{run.stderr}"
    assert "Stateful" in run.stdout and "API Links" in run.stdout, summary
