"""The error contract at the Ray boundary: unwrap once, keep retryability, never a traceback.

A `FarmError` raised in an actor reaches the caller wrapped in a ``RayTaskError`` whose ``cause``
is the original error, fields and all (`FarmError` pickles). `unwrap` takes it out. Anything
else becomes an `UnexpectedError`: one line for the user, the remote traceback in a log file.
Failures of the machinery itself (a dead actor or node) are told apart by `is_system_failure`:
the pool runs that unit again elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import ray.exceptions

from farm.errors import FarmError, record_unexpected

SYSTEM_FAILURES: tuple[type[BaseException], ...] = (
    ray.exceptions.RayActorError,
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.ObjectLostError,
    ray.exceptions.NodeDiedError,
    ray.exceptions.OwnerDiedError,
    ray.exceptions.TaskCancelledError,
    ray.exceptions.ActorUnavailableError,
)
"""Failures of a process, node or object, never of the work itself."""


def is_system_failure(error: BaseException) -> bool:
    return isinstance(error, SYSTEM_FAILURES)


def unwrap(error: BaseException, *, log_dir: Path, what: str = "") -> FarmError:
    """The `FarmError` a caller should see for an exception that came back through Ray."""
    # First: Ray raises a class derived from both RayTaskError and the cause's own class.
    if isinstance(error, ray.exceptions.RayTaskError):
        cause = error.cause
        if isinstance(cause, FarmError):
            return cause
        if isinstance(cause, ray.exceptions.RayTaskError):  # a task that called another
            return unwrap(cause, log_dir=log_dir, what=what)
        original = cause if cause is not None else error
        return record_unexpected(original, log_dir, what=what, detail=str(error))
    if isinstance(error, FarmError):
        return error
    return record_unexpected(error, log_dir, what=what)
