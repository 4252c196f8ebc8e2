"""Pure logic of issue 15's last pieces: quota_use alert rules (what the model accepts) and request trails (what
a request or job collects, what is kept of it, and the caller a job carries to the worker)."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from pydantic import ValidationError

from functions.alerts.models import SUBJECT_OF, CreateRule, QuotaName, RuleKind
from shared.billing.plan_store import QUOTA_FIELDS
from shared.jobs import Job
from shared.observability import (
    MAX_TRAIL_LINES,
    REDACTED,
    RequestTrail,
    get_logger,
    log_event,
    request_id_var,
    trail_var,
    user_id_var,
)
from shared.request_trail import MAX_VALUE_CHARS, stored_fields
from worker.alert_store import _USAGE_OF_QUOTA

logger = get_logger("trail-test")


def test_the_quota_names_are_the_plans_quotas() -> None:
    assert set(get_args(QuotaName)) == set(QUOTA_FIELDS)
    # every quota but the per-container one is counted by PlanStore.usage, which the evaluator reads
    assert set(_USAGE_OF_QUOTA) | {"max_memory_mb_per_container"} == set(QUOTA_FIELDS)
    assert SUBJECT_OF[RuleKind.QUOTA_USE] == "quota"


@pytest.mark.parametrize("threshold", [0.01, 0.6, 1])
def test_a_quota_rule_takes_a_share_above_0_and_at_most_1(threshold: float) -> None:
    rule = CreateRule.model_validate({"kind": "quota_use", "quota": "max_containers", "threshold": threshold})
    assert rule.quota == "max_containers" and rule.threshold == threshold


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"kind": "quota_use", "quota": "max_containers", "threshold": 0}, "above 0 and at most 1"),
        ({"kind": "quota_use", "quota": "max_containers", "threshold": 1.5}, "above 0 and at most 1"),
        ({"kind": "quota_use", "quota": "max_containers", "threshold": -0.1}, "greater than or equal to 0"),
        ({"kind": "quota_use", "quota": "max_containers"}, "needs a threshold"),
        ({"kind": "quota_use", "quota": "max_cpus", "threshold": 0.5}, "max_containers"),
        ({"kind": "quota_use", "threshold": 0.5}, "takes quota"),
        ({"kind": "quota_use", "quota": "max_listeners", "service": "web", "threshold": 0.5}, "takes quota"),
        ({"kind": "service_unhealthy", "service": "web", "quota": "max_listeners"}, "takes service"),
    ],
)
def test_bad_quota_rules_are_refused_with_the_reason(body: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError) as refused:
        CreateRule.model_validate(body)
    assert complaint in str(refused.value)


def test_log_event_lines_are_collected_in_the_current_trail_redacted() -> None:
    # GIVEN a trail being collected; WHEN lines are logged, one with a secret-looking field
    trail = RequestTrail()
    token = trail_var.set(trail)
    try:
        log_event(logger, "job sent", job_id="j1", kind="image.delete")
        log_event(logger, "signed", password="hunter2", nested={"api_key": "k", "n": 1})
    finally:
        trail_var.reset(token)
    log_event(logger, "outside any trail")
    # THEN the trail holds both, in order, secrets redacted as in the log line; nothing outside it
    assert [line.message for line in trail.lines] == ["job sent", "signed"]
    assert trail.lines[0].fields == {"job_id": "j1", "kind": "image.delete"}
    assert trail.lines[1].fields == {"password": REDACTED, "nested": {"api_key": REDACTED, "n": 1}}
    assert trail.lines[0].at <= trail.lines[1].at


def test_a_trail_keeps_a_bounded_number_of_lines_and_counts_the_rest() -> None:
    trail = RequestTrail()
    for n in range(MAX_TRAIL_LINES + 7):
        trail.add("line", {"n": n})
    assert len(trail.lines) == MAX_TRAIL_LINES and trail.dropped == 7


def test_what_is_kept_of_fields_is_json_and_bounded() -> None:
    class Opaque:
        def __str__(self) -> str:
            return "opaque"

    kept = stored_fields(
        {"long": "x" * (MAX_VALUE_CHARS + 50), "obj": Opaque(), "list": [1, "a", None], "nul": "a\x00b"}
    )
    assert kept == {"long": "x" * MAX_VALUE_CHARS, "obj": "opaque", "list": [1, "a", None], "nul": "a\ufffdb"}


def test_a_job_carries_its_request_and_its_sender_to_the_worker() -> None:
    # GIVEN a request of user u-1 under request id r-1; WHEN it makes a job
    tokens = (request_id_var.set("r-1"), user_id_var.set("u-1"))
    try:
        job = Job("image.delete", {"image_id": "i"})
    finally:
        request_id_var.reset(tokens[0])
        user_id_var.reset(tokens[1])
    # THEN the message carries both, and a job made outside any request carries neither
    decoded = Job.decode(job.encode())
    assert (decoded.request_id, decoded.owner_id, decoded.id) == ("r-1", "u-1", job.id)
    bare = Job.decode(Job("image.delete", {}).encode())
    assert (bare.request_id, bare.owner_id) == (None, None)
    assert Job.decode('{"kind": "k", "payload": {}, "owner_id": 7}').owner_id is None
