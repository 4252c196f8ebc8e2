"""Domain errors. Every layer raises these; one place (shared.http_app) turns them into HTTP answers."""

from __future__ import annotations

from typing import Any

# Per-field problems (a list of {field, message}) or, for a quota, {quota, limit, used}.
Details = list[dict[str, Any]] | dict[str, Any]


class BerthError(Exception):
    """Base of every error a client may see: an HTTP status, a stable code and a human message."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, details: Details | None = None) -> None:
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


class Forbidden(BerthError):
    """Authenticated, but not allowed: a token without the scope, a user without the role."""

    status = 403
    code = "forbidden"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code:
            self.code = code


class NotFound(BerthError):
    status = 404
    code = "not_found"


class Conflict(BerthError):
    status = 409
    code = "conflict"


class ConfirmationMismatch(Conflict):
    """A destructive request whose ``confirm`` does not name what it deletes (the account's email, the
    service's name): nothing is deleted."""

    code = "confirmation_mismatch"


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


class QuotaExceeded(BerthError):
    """A request the caller's plan does not allow (a limit of the plan, not a malformed request); the
    details name the quota, its limit and the current use."""

    status = 403
    code = "quota_exceeded"

    def __init__(self, message: str, *, quota: str, limit: int, used: int) -> None:
        super().__init__(message, details={"quota": quota, "limit": limit, "used": used})


class AccountSuspended(Forbidden):
    """The account is suspended (billing): it may read, but nothing that spends."""

    def __init__(self, message: str = "Your account is suspended; contact support to lift it.") -> None:
        super().__init__(message, code="account_suspended")


class ServiceUnavailable(BerthError):
    status = 503
    code = "service_unavailable"


class DependencyError(BerthError):
    """A backing service (database, Redis, storage) failed; retrying later may help, and the answer says when."""

    status = 503
    code = "dependency_unavailable"

    def __init__(self, message: str, *, details: Details | None = None) -> None:
        super().__init__(message, details=details)
        # The outages behind it (a database restarting, a failover) last seconds: advise a prompt retry.
        self.headers = {"Retry-After": "1"}


def error_body(code: str, message: str, request_id: str, details: Details | None = None) -> dict[str, Any]:
    """The public error shape: {"error": {"code", "message", "request_id"[, "details"]}}."""
    error: dict[str, Any] = {"code": code, "message": message, "request_id": request_id}
    if details:
        error["details"] = details
    return {"error": error}
