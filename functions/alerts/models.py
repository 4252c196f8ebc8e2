"""The alerts function's request and response bodies (the public contract)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

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


SUBJECT_OF: dict[RuleKind, Literal["container_id", "service", "listener_id"]] = {
    RuleKind.CONTAINER_UNHEALTHY: "container_id",
    RuleKind.CONTAINER_RESTARTS: "container_id",
    RuleKind.SERVICE_UNHEALTHY: "service",
    RuleKind.LISTENER_ERROR_RATE: "listener_id",
    RuleKind.LISTENER_LATENCY_P95: "listener_id",
    RuleKind.DEPLOY_FAILED: "service",
}
# Literal rather than the enum in bodies: strict models take the JSON string as it comes.
RuleKindName = Literal[
    "container_unhealthy",
    "container_restarts",
    "service_unhealthy",
    "listener_error_rate",
    "listener_latency_p95",
    "deploy_failed",
]
NEEDS_THRESHOLD = {RuleKind.CONTAINER_RESTARTS, RuleKind.LISTENER_ERROR_RATE, RuleKind.LISTENER_LATENCY_P95}


class CreateWebhook(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    url: str = Field(min_length=8, max_length=2048, pattern=r"^https?://[^\s]+$")
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
    threshold: float | None = Field(default=None, ge=0, le=1_000_000)
    window_seconds: int = Field(default=300, ge=10, le=MAX_WINDOW_SECONDS)
    for_seconds: int = Field(default=60, ge=0, le=MAX_FOR_SECONDS)
    resolve_after_seconds: int = Field(default=0, ge=0, le=MAX_FOR_SECONDS)

    @model_validator(mode="after")
    def _one_subject(self) -> CreateRule:
        kind = RuleKind(self.kind)
        subject = SUBJECT_OF[kind]
        given = [name for name in ("container_id", "service", "listener_id") if getattr(self, name) is not None]
        if given != [subject]:
            raise ValueError(f"a {kind.value} rule takes {subject} (and no other subject)")
        if kind in NEEDS_THRESHOLD and self.threshold is None:
            raise ValueError(f"a {kind.value} rule needs a threshold")
        if kind is RuleKind.LISTENER_ERROR_RATE and self.threshold is not None and self.threshold > 1:
            raise ValueError("an error-rate threshold is a share from 0 to 1")
        return self


class Rule(BaseModel):
    id: str
    kind: RuleKind
    container_id: str | None
    service: str | None
    listener_id: str | None
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
