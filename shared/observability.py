"""Structured logging for every process: JSON lines with a request id and acting user, never a secret."""

from __future__ import annotations

import logging
import re
import sys
import uuid
from contextvars import ContextVar
from typing import Any

from aws_lambda_powertools import Logger

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
user_id_var: ContextVar[str] = ContextVar("user_id", default="-")

# Keys whose values never reach a log line, whatever logs them.
_SECRET_KEY = re.compile(r"pass(word)?|secret|token|authorization|cookie|private|credential|api[_-]?key", re.IGNORECASE)
REDACTED = "[redacted]"


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


def get_logger(service: str, level: str = "INFO") -> Logger:
    """A powertools JSON logger for ``service`` that stamps request id and user on every line."""
    logger = Logger(service=service, level=level, stream=sys.stderr, log_uncaught_exceptions=False)
    logger.addFilter(_ContextFilter())
    return logger


def log_event(logger: Logger, message: str, **fields: Any) -> None:
    """Log ``message`` with key=value ``fields``, secrets redacted."""
    logger.info(message, extra=redact(fields))
