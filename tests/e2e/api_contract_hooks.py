"""Schemathesis hooks for the API contract fuzz (tests/e2e/test_api_contract.py), loaded by `st run`
through SCHEMATHESIS_HOOKS.

Three things the document cannot say for itself:
- who the caller is: a dynamic auth provider signs the contract's user in (again after a 401, since the
  fuzzer signs its own session out through POST /api/auth/signout and DELETE /ui/session);
- which positive bodies break a rule across fields that the document states in prose (OpenAPI 3.0 has no
  way to say "timeout at most interval"), or a name rule it carries as `x-berth-property-names` (3.0 has no
  propertyNames): such a body is not schema-valid in the document's own words, so it is left out of the
  positive cases. Negative cases are untouched: every rule below is still checked by the functions;
- a live container host: the test registers a host row without a worker, and its heartbeat is kept fresh
  before each create, so that creating a container reaches the function's logic (the job waits in the
  host's queue; nothing consumes it);
- what the caller owns: positive creates deploy the user's ready image and front the user's service
  (the document describes both references; a generated id only ever meets the 404).
"""

from __future__ import annotations

import os
import re
from typing import Any

import httpx
import psycopg
import schemathesis
from schemathesis import GenerationMode

BASE_URL = os.environ["BERTH_CONTRACT_URL"]
EMAIL = os.environ["BERTH_CONTRACT_EMAIL"]
PASSWORD = os.environ["BERTH_CONTRACT_PASSWORD"]
HOST_ID = os.environ["BERTH_CONTRACT_HOST_ID"]
READY_IMAGE_ID = os.environ["BERTH_CONTRACT_IMAGE_ID"]
# A service of the user's with a running container (the test's own row): what a listener can front.
SERVICE = os.environ["BERTH_CONTRACT_SERVICE"]
DATABASE_URL = os.environ["BERTH_DATABASE_URL"]
# The document's x-berth-property-names for env and secret_env (OpenAPI 3.0 has no propertyNames).
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


@schemathesis.auth()
class ContractUser:
    """The contract's user, signed in through the gateway; signed in again whenever a call answers 401."""

    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
        answer = httpx.post(f"{BASE_URL}/api/auth/signin", json={"email": EMAIL, "password": PASSWORD}, timeout=30)
        answer.raise_for_status()
        return str(answer.json()["access_token"])

    def set(self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def _health_check_consistent(check: Any, *, interval: int, timeout: int | None, container: bool) -> bool:
    """timeout_seconds at most interval_seconds (a container's check lowers a timeout it was not given);
    for a container's check also: no path on tcp, a port when the container publishes none."""
    if not isinstance(check, dict):
        return True
    interval = check.get("interval_seconds", interval)
    timeout = check.get("timeout_seconds", timeout)
    if isinstance(interval, int) and isinstance(timeout, int) and timeout > interval:
        return False
    return not (container and check.get("type") == "tcp" and check.get("path") is not None)


def _follows_prose_rules(operation_id: str, body: Any) -> bool:
    """Whether ``body`` keeps the rules across fields the document states in its descriptions."""
    if not isinstance(body, dict):
        return True
    if operation_id == "createContainer":
        # A region must be one some host belongs to (422 otherwise); a generated name is never one.
        if body.get("region") is not None:
            return False
        env, secret_env = body.get("env") or {}, body.get("secret_env") or {}
        if not all(ENV_NAME.fullmatch(name) for name in [*env, *secret_env]):
            return False
        if set(env) & set(secret_env):
            return False
        ports = [port.get("container_port") for port in body.get("ports") or [] if isinstance(port, dict)]
        if len(ports) != len(set(ports)):
            return False
        check = body.get("health_check")
        if isinstance(check, dict) and check.get("port") is None and not ports:
            return False
        return _health_check_consistent(check, interval=10, timeout=None, container=True)
    if operation_id in ("createListener", "updateListener"):
        # Weights name containers of the service by id; a generated id is never one of them.
        if body.get("weights"):
            return False
        # regions.order names regions of registered hosts (422 otherwise); a generated name is never one.
        regions = body.get("regions")
        if isinstance(regions, dict) and regions.get("order"):
            return False
        return _health_check_consistent(body.get("health_check"), interval=5, timeout=2, container=False)
    if operation_id == "signUp":
        # The policy's rules beyond the lengths (SignUpRequest's description); one character repeated is
        # what generators reach for, the others (common passwords, mostly the email) they do not find.
        password = body.get("password")
        return not (isinstance(password, str) and password and len(set(password)) == 1)
    return True


@schemathesis.hook
def filter_case(context: schemathesis.HookContext, case: schemathesis.Case) -> bool:
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return True
    return _follows_prose_rules(case.operation.definition.raw.get("operationId", ""), case.body)


@schemathesis.hook
def map_case(context: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    """Positive creates name what the user has, as a client would (the document says "a ready image of the
    caller", "a service of the caller"): a generated id names nothing and only ever reaches the 404."""
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE or not isinstance(case.body, dict):
        return case
    operation_id = case.operation.definition.raw.get("operationId")
    if operation_id == "createContainer":
        case.body = {**case.body, "image_id": READY_IMAGE_ID}
    elif operation_id == "createListener":
        case.body = {**case.body, "service": SERVICE}
    return case


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: schemathesis.Case, kwargs: dict[str, Any]) -> None:
    if case.operation.definition.raw.get("operationId") == "createContainer":
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            conn.execute("UPDATE hosts SET heartbeat_at = now() WHERE id = %s", (HOST_ID,))


@schemathesis.hook
def filter_failure(
    context: schemathesis.HookContext, failure: Any, case: schemathesis.Case, response: schemathesis.Response
) -> bool:
    """Two exclusions, nothing else dropped.

    ST202 (positive_data_acceptance): the same rules as filter_case, for the phases that build cases without
    it (examples, coverage): a refused body that breaks one of them is no failure.
    ST301 (use_after_free) on /api/containers/*: deleting a container is asynchronous by contract (202; the
    host worker removes it) and its record, events and logs stay readable afterwards on purpose (section 5;
    GET /api/containers?state=deleted). The check still judges images and listeners (synchronous 204)."""
    code = getattr(failure, "code", None)
    if code == "ST301":
        return not case.operation.path.startswith("/api/containers")
    if code != "ST202":
        return True
    return _follows_prose_rules(case.operation.definition.raw.get("operationId", ""), case.body)
