"""Schemathesis hooks for the API contract fuzz (tests/e2e/test_api_contract.py), loaded by `st run`
through SCHEMATHESIS_HOOKS.

Four things the document cannot say for itself:
- who the caller is: a dynamic auth provider signs the contract's user in (again after a 401, since the
  fuzzer signs its own session out through POST /api/auth/signout and DELETE /ui/session);
- which positive requests break a rule across fields or parameters that the document states in prose
  (OpenAPI 3.0 has no way to say "timeout at most interval" or "to after from"), a name rule it carries as
  `x-berth-property-names` (3.0 has no propertyNames), or a reference the generator cannot name (ids of
  the caller's containers or certificates, regions of registered hosts): such a request is not valid in the
  document's own words, so it is left out of the positive cases. Negative cases are untouched: every rule
  below is still checked by the functions;
- a live container host: the test registers a host row without a worker, and its heartbeat is kept fresh
  before each create, so that creating a container reaches the function's logic (the job waits in the
  host's queue; nothing consumes it);
- what the caller owns: positive creates deploy the user's ready image, front the user's service and upload
  a real certificate with its key (the document describes each; a generated id only ever meets the 404, a
  generated PEM is never a certificate).
"""

from __future__ import annotations

import ast
import os
import re
import sys
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import schemathesis
from schemathesis import GenerationMode

from shared.instants import EARLIEST, parse_date, parse_date_time
from tests.support.certificates import make_ca

# CPython 3.11 keeps the AST converter's recursion depth in state the threads share, so two ast.parse calls
# at once can fail with "SystemError: AST constructor recursion depth mismatch" (python/cpython#106905;
# later versions count per call). Hypothesis' pretty-printer parses reprs in each of the fuzzer's worker
# threads (--workers 2), and one such failure ended a run: in this process, one parse at a time.
if sys.version_info < (3, 12):
    _parse, _parse_lock = ast.parse, threading.Lock()

    def _one_parse_at_a_time(*args: Any, **kwargs: Any) -> Any:
        with _parse_lock:
            return _parse(*args, **kwargs)

    ast.parse = _one_parse_at_a_time

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
# A usable certificate chain and its key, as a client uploads one (the CA appended completes the chain).
CERTIFICATE_CHAIN, CERTIFICATE_KEY = make_ca("Berth Contract CA").issue("contract.example")
# Alert rules: the one subject field each kind takes, and the kinds that need a threshold (the operation's
# description and CreateAlertRuleRequest's).
ALERT_SUBJECTS = ("container_id", "service", "listener_id", "quota")
ALERT_SUBJECT_OF = {
    "container_unhealthy": "container_id",
    "container_restarts": "container_id",
    "service_unhealthy": "service",
    "deploy_failed": "service",
    "listener_error_rate": "listener_id",
    "listener_latency_p95": "listener_id",
    "quota_use": "quota",
}
ALERT_NEEDS_THRESHOLD = {"container_restarts", "listener_error_rate", "listener_latency_p95", "quota_use"}
# Listener history (listenerStats' description): kept at 10 s for a day, at 1 min for 30 days, 1000 steps.
HISTORY_SPAN = timedelta(days=30)
FINE_HISTORY = timedelta(days=1)
HISTORY_POINTS = 1000
HOUR = timedelta(hours=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
USAGE_SPAN = timedelta(days=366)


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
    for a container's (or service's) check also: no path on tcp."""
    if not isinstance(check, dict):
        return True
    interval = check.get("interval_seconds", interval)
    timeout = check.get("timeout_seconds", timeout)
    if isinstance(interval, int) and isinstance(timeout, int) and timeout > interval:
        return False
    return not (container and check.get("type") == "tcp" and check.get("path") is not None)


def _replicas_config_consistent(body: dict[str, Any], *, ports_default: list[Any] | None) -> bool:
    """A container's or service's env names, env beside secret_env, ports once each, and a health check that
    has a port (its own, or the first published); ``ports_default`` None: the ports are the service's current
    ones when the body names none (a deploy: the function answers 409 if they lack one, a state rule)."""
    env, secret_env = body.get("env") or {}, body.get("secret_env") or {}
    if not all(ENV_NAME.fullmatch(name) for name in [*env, *secret_env]):
        return False
    if set(env) & set(secret_env):
        return False
    ports_given = body.get("ports")
    ports = [port.get("container_port") for port in ports_given or [] if isinstance(port, dict)]
    if len(ports) != len(set(ports)):
        return False
    check = body.get("health_check")
    known_ports = ports if ports_given is not None else ports_default
    if isinstance(check, dict) and check.get("port") is None and known_ports == []:
        return False
    return _health_check_consistent(check, interval=10, timeout=None, container=True)


def _update_policy_consistent(policy: Any) -> bool:
    """UpdatePolicy's description: max_surge and max_unavailable not both 0, and min_healthy_seconds less
    than healthy_deadline_seconds (defaults 1, 0, 5 and 300)."""
    if not isinstance(policy, dict):
        return True
    if policy.get("max_surge", 1) == 0 and policy.get("max_unavailable", 0) == 0:
        return False
    return not policy.get("min_healthy_seconds", 5) >= policy.get("healthy_deadline_seconds", 300)


def _alert_rule_consistent(body: dict[str, Any]) -> bool:
    """The kind's one subject and no other; a threshold where the kind needs one, within its share."""
    kind = body.get("kind")
    subject = ALERT_SUBJECT_OF.get(kind) if isinstance(kind, str) else None
    if subject is None:
        return True
    if [name for name in ALERT_SUBJECTS if body.get(name) is not None] != [subject]:
        return False
    threshold = body.get("threshold")
    if kind in ALERT_NEEDS_THRESHOLD and threshold is None:
        return False
    if kind == "listener_error_rate" and isinstance(threshold, int | float) and threshold > 1:
        return False
    return not (kind == "quota_use" and isinstance(threshold, int | float) and not 0 < threshold <= 1)


# The instants of the query parameters are read as the functions read them (shared.instants, which
# tests/unit/test_instants.py holds to the document's formats): the rules below are about ranges, not formats.
def _query_instant(query: dict[str, Any], name: str, *, dates: bool) -> datetime | None:
    value = query.get(name)
    if not isinstance(value, str):
        return None
    return parse_date_time(value) or (parse_date(value) if dates else None)


def _usage_range_ok(query: dict[str, Any]) -> bool:
    """billingUsage's description: to after from (defaults: the start of this month, UTC, and now), and at
    most 366 days between them."""
    now = datetime.now(UTC)
    start = _query_instant(query, "from", dates=True) or datetime(now.year, now.month, 1, tzinfo=UTC)
    end = _query_instant(query, "to", dates=True) or now
    return start < end and end - start <= USAGE_SPAN


def _history_window_ok(query: dict[str, Any]) -> bool:
    """listenerStats' description: from before to (defaults: now, an hour before to), at most 30 days apart;
    a step not a multiple of 60 reaches back a day at most; at most 1000 steps from the aligned from."""
    if not any(name in query for name in ("from", "to", "step")):
        return True
    now = datetime.now(UTC)
    until = _query_instant(query, "to", dates=False) or now
    since = _query_instant(query, "from", dates=False) or max(until, EARLIEST + HOUR) - HOUR
    if since >= until or until - since > HISTORY_SPAN:
        return False
    step = query.get("step")
    if isinstance(step, str) and step.isdigit():
        step = int(step)
    if not isinstance(step, int):
        span = (until - since).total_seconds()
        step = 10 if span <= 3600 else 60 * max(1, int(span // (60 * HISTORY_POINTS)) + 1)
    if step <= 0 or step % 10 or (step % 60 and now - since > FINE_HISTORY):
        return False
    try:
        aligned = since - (since - EPOCH) % timedelta(seconds=step)
    except OverflowError:
        aligned = EARLIEST
    return (until - aligned).total_seconds() / step <= HISTORY_POINTS


def _follows_prose_rules(operation_id: str, body: Any, query: dict[str, Any] | None = None) -> bool:
    """Whether the request keeps the rules across fields and parameters the document states in its
    descriptions (``body`` as it is sent: after ``_as_the_user_sends``)."""
    if operation_id == "billingUsage":
        return _usage_range_ok(query or {})
    if operation_id == "listenerStats":
        return _history_window_ok(query or {})
    if not isinstance(body, dict):
        return True
    if operation_id == "createContainer":
        # A region must be one some host belongs to (422 otherwise); a generated name is never one.
        if body.get("region") is not None:
            return False
        return _replicas_config_consistent(body, ports_default=[])
    if operation_id == "createService":
        # regions name regions of registered hosts (422 otherwise); a generated name is never one.
        if body.get("regions"):
            return False
        return _replicas_config_consistent(body, ports_default=[]) and _update_policy_consistent(
            body.get("update_policy")
        )
    if operation_id == "deployService":
        if body.get("regions"):
            return False
        return _replicas_config_consistent(body, ports_default=None)
    if operation_id == "updateService":
        return _update_policy_consistent(body.get("update_policy"))
    if operation_id in ("createListener", "updateListener"):
        # Weights name containers of the service by id; a generated id is never one of them. Likewise
        # certificate_ids name the caller's certificates (422 for others), and an https listener needs them:
        # https listeners are tested with real certificates in tests/e2e/test_load_balancer_certificates.py.
        if body.get("weights") or body.get("certificate_ids"):
            return False
        if body.get("protocol") == "https" and (operation_id == "createListener" or "certificate_ids" in body):
            return False
        # regions.order names regions of registered hosts (422 otherwise); a generated name is never one.
        regions = body.get("regions")
        if isinstance(regions, dict) and regions.get("order"):
            return False
        return _health_check_consistent(body.get("health_check"), interval=5, timeout=2, container=False)
    if operation_id == "updateHostname":
        # listener_id names one of the caller's listeners; a generated id is none, and its 404 on this PATCH,
        # reached through the claim's link, would read as the claim itself gone. null (detach) is kept.
        return body.get("listener_id") is None
    if operation_id == "uploadCertificate":
        # A usable chain and its key (422 certificate_* otherwise): a generated PEM never is one.
        return body.get("certificate_chain") == CERTIFICATE_CHAIN and body.get("private_key") == CERTIFICATE_KEY
    if operation_id == "createAlertRule":
        return _alert_rule_consistent(body)
    if operation_id == "signUp":
        # The policy's rules beyond the lengths (SignUpRequest's description); one character repeated is
        # what generators reach for, the others (common passwords, mostly the email) they do not find.
        password = body.get("password")
        return not (isinstance(password, str) and password and len(set(password)) == 1)
    return True


def _as_the_user_sends(operation_id: str, body: Any) -> Any:
    """A positive body as a client would send it (the document says "a ready image of the caller", "a
    service of the caller", "PEM certificates ... and the leaf's private key"): it names what the user has."""
    if not isinstance(body, dict):
        return body
    if operation_id in ("createContainer", "createService"):
        return {**body, "image_id": READY_IMAGE_ID}
    if operation_id == "deployService" and body.get("image_id") is not None:
        return {**body, "image_id": READY_IMAGE_ID}
    if operation_id == "createListener":
        return {**body, "service": SERVICE}
    if operation_id == "uploadCertificate":
        return {**body, "certificate_chain": CERTIFICATE_CHAIN, "private_key": CERTIFICATE_KEY}
    return body


def _operation_id(case: schemathesis.Case) -> str:
    return str(case.operation.definition.raw.get("operationId", ""))


def _positive(case: schemathesis.Case) -> bool:
    return case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE


@schemathesis.hook
def filter_case(context: schemathesis.HookContext, case: schemathesis.Case) -> bool:
    if not _positive(case):
        return True
    operation_id = _operation_id(case)
    return _follows_prose_rules(operation_id, _as_the_user_sends(operation_id, case.body), case.query)


@schemathesis.hook
def map_case(context: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    if _positive(case):
        case.body = _as_the_user_sends(_operation_id(case), case.body)
    return case


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: schemathesis.Case, kwargs: dict[str, Any]) -> None:
    if _operation_id(case) == "createContainer":
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            conn.execute("UPDATE hosts SET heartbeat_at = now() WHERE id = %s", (HOST_ID,))


@schemathesis.hook
def filter_failure(
    context: schemathesis.HookContext, failure: Any, case: schemathesis.Case, response: schemathesis.Response
) -> bool:
    """Three exclusions, nothing else dropped.

    ST202 (positive_data_acceptance): the same rules as filter_case, for the phases that build cases without
    it: a refused request that breaks one of them is no failure.
    ST301 (use_after_free) on /api/containers/*: deleting a container is asynchronous by contract (202; the
    host worker removes it) and its record, events and logs stay readable afterwards on purpose (section 5;
    GET /api/containers?state=deleted). The check still judges images and listeners (synchronous 204).
    ST201 (negative_data_rejection) on a case schemathesis itself describes as its default positive test
    case: a stateful step can carry that case under a negative label (seen: POST .../rollback with no body,
    which the document allows, `requestBody.required: false`); nothing in it is invalid, so accepting it is
    right. Every truly mutated case is still judged."""
    code = getattr(failure, "code", None)
    if code == "ST201":
        description = getattr(getattr(getattr(case.meta, "phase", None), "data", None), "description", None) or ""
        return "positive test case" not in description.lower()
    if code == "ST301":
        return not case.operation.path.startswith("/api/containers")
    if code != "ST202":
        return True
    return _follows_prose_rules(_operation_id(case), case.body, case.query)
