"""The alerts function's request and response bodies (the public contract): alerts and request trails."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

SERVICE_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
UUID_PATTERN = r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
MAX_FOR_SECONDS = 86400
MAX_WINDOW_SECONDS = 86400


class RuleKind(StrEnum):
    """What a rule watches, and on which subject (the one field it needs)."""

    CONTAINER_UNHEALTHY = "container_unhealthy"  # container_id: wanted running, not running (or unhealthy)
    CONTAINER_RESTARTS = "container_restarts"  # container_id: more than `threshold` restarts in the window
    SERVICE_UNHEALTHY = "service_unhealthy"  # service: a replica wanted running is not running
    LISTENER_ERROR_RATE = "listener_error_rate"  # listener_id: share of failed requests (0-1) above threshold
    LISTENER_LATENCY_P95 = "listener_latency_p95"  # listener_id: p95 latency in ms above threshold
    DEPLOY_FAILED = "deploy_failed"  # service: its newest release failed or was rolled back
    QUOTA_USE = "quota_use"  # quota: what the owner holds is at least `threshold` (0-1] of the plan's limit


Subject = Literal["container_id", "service", "listener_id", "quota"]
SUBJECTS: tuple[Subject, ...] = ("container_id", "service", "listener_id", "quota")
SUBJECT_OF: dict[RuleKind, Subject] = {
    RuleKind.CONTAINER_UNHEALTHY: "container_id",
    RuleKind.CONTAINER_RESTARTS: "container_id",
    RuleKind.SERVICE_UNHEALTHY: "service",
    RuleKind.LISTENER_ERROR_RATE: "listener_id",
    RuleKind.LISTENER_LATENCY_P95: "listener_id",
    RuleKind.DEPLOY_FAILED: "service",
    RuleKind.QUOTA_USE: "quota",
}
# Literal rather than the enum in bodies: strict models take the JSON string as it comes.
RuleKindName = Literal[
    "container_unhealthy",
    "container_restarts",
    "service_unhealthy",
    "listener_error_rate",
    "listener_latency_p95",
    "deploy_failed",
    "quota_use",
]
NEEDS_THRESHOLD = {
    RuleKind.CONTAINER_RESTARTS,
    RuleKind.LISTENER_ERROR_RATE,
    RuleKind.LISTENER_LATENCY_P95,
    RuleKind.QUOTA_USE,
}
# The plan's quotas a quota_use rule may watch: shared.billing.plan_store.QUOTA_FIELDS, spelled out for the
# schema (tests/unit/test_observability_logic.py keeps the two equal).
QuotaName = Literal[
    "max_containers",
    "max_memory_mb_per_container",
    "max_memory_mb_total",
    "max_listeners",
    "max_image_storage_mb",
]


def _nullable_quota_schema(schema: dict[str, Any]) -> None:
    """The quota field's schema as the document states it: a string enum that lists null (in OpenAPI 3.0 a
    nullable enum must, or null is refused)."""
    schema.pop("anyOf", None)
    schema.update({"type": "string", "nullable": True, "enum": [*get_args(QuotaName), None]})


# A request id as the gateway keeps it from X-Request-Id (and as the functions make one).
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"


# What shared.webhooks takes as a URL, as a pattern: http or https, an ASCII host name or IPv4 address (RFC 3986's
# reg-name characters: no credentials, no IPv6 literal), a port from 1 to 65535, then a path, query or fragment
# of printable ASCII (anything else percent-encoded). An explicit range, not "\S": regex engines disagree on
# which characters are spaces (ECMA's \s leaves out U+0085, Python's and Rust's include it). Whether the host
# resolves to a public address is checked when the webhook is created.
WEBHOOK_URL_PATTERN = (
    r"^https?://[A-Za-z0-9._~%!$&'()*+,;=-]+"
    r"(?::(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
    r"(?:[/?#][\x21-\x7e]*)?$"
)


class CreateWebhook(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    url: str = Field(min_length=8, max_length=2048, pattern=WEBHOOK_URL_PATTERN)
    secret: str = Field(min_length=16, max_length=256)


class Webhook(BaseModel):
    id: str
    url: str
    created_at: datetime


class WebhookPage(BaseModel):
    items: list[Webhook]
    next_cursor: str | None


class CreateRule(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    kind: RuleKindName
    container_id: str | None = Field(default=None, pattern=UUID_PATTERN)
    service: str | None = Field(default=None, max_length=63, pattern=SERVICE_PATTERN)
    listener_id: str | None = Field(default=None, pattern=UUID_PATTERN)
    quota: QuotaName | None = Field(default=None, json_schema_extra=_nullable_quota_schema)
    threshold: float | None = Field(default=None, ge=0, le=1_000_000)
    window_seconds: int = Field(default=300, ge=10, le=MAX_WINDOW_SECONDS)
    for_seconds: int = Field(default=60, ge=0, le=MAX_FOR_SECONDS)
    resolve_after_seconds: int = Field(default=0, ge=0, le=MAX_FOR_SECONDS)

    @model_validator(mode="after")
    def _one_subject(self) -> CreateRule:
        kind = RuleKind(self.kind)
        subject = SUBJECT_OF[kind]
        given = [name for name in SUBJECTS if getattr(self, name) is not None]
        if given != [subject]:
            raise ValueError(f"a {kind.value} rule takes {subject} (and no other subject)")
        if kind in NEEDS_THRESHOLD and self.threshold is None:
            raise ValueError(f"a {kind.value} rule needs a threshold")
        if kind is RuleKind.LISTENER_ERROR_RATE and self.threshold is not None and self.threshold > 1:
            raise ValueError("an error-rate threshold is a share from 0 to 1")
        if kind is RuleKind.QUOTA_USE and self.threshold is not None and not 0 < self.threshold <= 1:
            raise ValueError("a quota_use threshold is a share of the quota above 0 and at most 1 (0.8 is 80%)")
        return self


class Rule(BaseModel):
    id: str
    kind: RuleKind
    container_id: str | None
    service: str | None
    listener_id: str | None
    quota: str | None
    threshold: float | None
    window_seconds: int
    for_seconds: int
    resolve_after_seconds: int
    state: Literal["ok", "pending", "firing"]
    created_at: datetime


class RulePage(BaseModel):
    items: list[Rule]
    next_cursor: str | None


class Alert(BaseModel):
    id: str
    rule_id: str
    kind: RuleKind
    state: Literal["pending", "firing", "resolved"]
    started_at: datetime
    fired_at: datetime | None
    resolved_at: datetime | None
    summary: str


class AlertPage(BaseModel):
    items: list[Alert]
    next_cursor: str | None


class RequestEvent(BaseModel):
    at: datetime
    source: Literal["function", "worker"]
    service: str  # the function's name, or "worker"
    message: str
    fields: dict[str, Any]


class RequestTrailAnswer(BaseModel):
    request_id: str
    events: list[RequestEvent]
    truncated: bool  # more lines are kept than one answer holds (the oldest are answered)
