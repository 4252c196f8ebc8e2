"""Structured logging for every process: JSON lines with a request id and acting user, never a secret.

While a request (or a job it sent) runs, its ``log_event`` lines are also collected in a ``RequestTrail``,
when one is set: shared.request_trail keeps them as the caller's request trail."""

from __future__ import annotations

import logging
import os
import re
import sys
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
user_id_var: ContextVar[str] = ContextVar("user_id", default="-")

# Keys whose values never reach a log line, whatever logs them.
_SECRET_KEY = re.compile(r"pass(word)?|secret|token|authorization|cookie|private|credential|api[_-]?key", re.IGNORECASE)
REDACTED = "[redacted]"
# The most lines one request's trail collects in one process; more are counted, not kept.
MAX_TRAIL_LINES = 200


def new_request_id() -> str:
    return uuid.uuid4().hex


def redact(fields: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``fields`` with values of secret-looking keys replaced."""
    clean: dict[str, Any] = {}
    for key, value in fields.items():
        if _SECRET_KEY.search(key):
            clean[key] = REDACTED
        elif isinstance(value, dict):
            clean[key] = redact(value)
        else:
            clean[key] = value
    return clean


class _ContextFilter(logging.Filter):
    """Stamps the current request id and user on each record; powertools emits record extras."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.user_id = user_id_var.get()
        return True


def get_logger(service: str, level: str | None = None) -> Logger:
    """A powertools JSON logger for ``service`` that stamps request id and user on every line.

    Loggers of one service share one underlying logger, configured by the first of them: so the level is
    ``BERTH_LOG_LEVEL`` unless the caller names one, and every module of a program agrees on it."""
    level = (level or os.environ.get("BERTH_LOG_LEVEL") or "INFO").upper()
    logger = Logger(service=service, level=level, stream=sys.stderr, log_uncaught_exceptions=False)
    logger.addFilter(_ContextFilter())
    return logger


@dataclass(frozen=True)
class TrailLine:
    at: datetime
    message: str
    fields: dict[str, Any]  # redacted, as logged


@dataclass
class RequestTrail:
    """The ``log_event`` lines of one request (or of one job it sent) in this process, whatever the log level."""

    lines: list[TrailLine] = field(default_factory=list)
    dropped: int = 0

    def add(self, message: str, fields: dict[str, Any]) -> None:
        if len(self.lines) >= MAX_TRAIL_LINES:
            self.dropped += 1
            return
        self.lines.append(TrailLine(datetime.now(UTC), message, fields))


# The trail being collected in this task, if any (set by shared.request_trail around a request or a job).
trail_var: ContextVar[RequestTrail | None] = ContextVar("request_trail", default=None)


def log_event(logger: Logger, message: str, **fields: Any) -> None:
    """Log ``message`` with key=value ``fields``, secrets redacted (and add it to the current request trail)."""
    clean = redact(fields)
    logger.info(message, extra=clean)
    trail = trail_var.get()
    if trail is not None:
        trail.add(message, clean)
