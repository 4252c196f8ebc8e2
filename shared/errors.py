"""Domain errors. Every layer raises these; one place (shared.http_app) turns them into HTTP answers."""

from __future__ import annotations

from typing import Any


class BerthError(Exception):
    """Base of every error a client may see: an HTTP status, a stable code and a human message."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers: dict[str, str] = {}


class BadRequest(BerthError):
    status = 400
    code = "bad_request"


class ValidationFailed(BerthError):
    status = 422
    code = "validation_failed"


class Unauthorized(BerthError):
    status = 401
    code = "unauthorized"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code:
            self.code = code
        self.headers = {"WWW-Authenticate": 'Bearer realm="berth"'}


class NotFound(BerthError):
    status = 404
    code = "not_found"


class Conflict(BerthError):
    status = 409
    code = "conflict"


class PayloadTooLarge(BerthError):
    status = 413
    code = "payload_too_large"


class RateLimited(BerthError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)
        self.headers = {"Retry-After": str(self.retry_after)}


class NotBuiltYet(BerthError):
    status = 501
    code = "not_implemented"


class ServiceUnavailable(BerthError):
    status = 503
    code = "service_unavailable"


class DependencyError(BerthError):
    """A backing service (database, Redis, storage) failed; retrying later may help."""

    status = 503
    code = "dependency_unavailable"


def error_body(code: str, message: str, request_id: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The public error shape: {"error": {"code", "message", "request_id"[, "details"]}}."""
    error: dict[str, Any] = {"code": code, "message": message, "request_id": request_id}
    if details:
        error["details"] = details
    return {"error": error}
