"""Errors of the HTTP API's own rules (the app maps each to its status code)."""

from __future__ import annotations

from farm.errors import FarmError


class ApiRefused(FarmError):
    """A request the API refuses; ``status`` is the HTTP status it answers with."""

    status: int = 400

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class RecordConflict(ApiRefused):
    """The request conflicts with a stored record (409)."""

    status = 409


class IdempotencyConflict(RecordConflict):
    """The Idempotency-Key was used before with a different request body."""


class IdentityInUse(RecordConflict):
    """An identity cannot be deleted while jobs that use it are still active."""


class TooManyRequests(ApiRefused):
    """A rate limit or the concurrent-job quota is reached (429 with Retry-After)."""

    status = 429
    retryable = True

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QuotaExceeded(TooManyRequests):
    """The token already has as many active jobs as it may."""
