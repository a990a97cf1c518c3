"""The SyncFarm error tree.

    FarmError                      anything SyncFarm reports to a user
    ├── SpecError                  a job or settings value is invalid (names the field and the fix)
    ├── MediaError                 an input or intermediate file cannot be used
    │   ├── ProbeError             not a readable video (missing, not media, truncated, no frames)
    │   ├── FrameCountMismatch     a shard decoded to the wrong number of frames
    │   └── SourceUnavailable      reading the source failed with an I/O error (retryable)
    ├── FfmpegFailed               the ffmpeg binary exited non-zero (argv and stderr tail kept)
    ├── ModelError                 a model file is missing, has the wrong hash or contract
    │   ├── ChecksumMismatch
    │   └── DeviceUnavailable      the job demands a GPU provider this machine's onnxruntime lacks
    ├── ConsentError               the consent record is missing or does not allow the job
    ├── StorageError               a node cannot read an input or write the work directory
    │                              (or reach an object store: s3://; `retryable` when transient)
    ├── ShardFailed                a unit of work failed; `retryable` says whether to run it again
    ├── UnitFailed                 a unit failed for good (out of attempts, or not retryable)
    ├── Cancelled                  the job was cancelled; finished work stays in its work dir
    ├── UnexpectedError            anything that is not a FarmError: one line plus a log path
    └── StageNotBuilt              a requested stage is not implemented yet (never silently skipped)

Every message says what failed, which file or unit, expected versus found, and what to do. The CLI
prints `one_line()`.

Errors cross process boundaries (Ray actors, the job actor, the CLI): each pickles with its
message and fields, whatever its ``__init__`` looks like, and says whether running the same unit
again can help (`retryable`). A deterministic failure (a frame-count mismatch, a bad setting) is
never retried.
"""

from __future__ import annotations

import datetime as dt
import re
import traceback
from pathlib import Path
from typing import Any


def _restore(cls: type[FarmError], args: tuple[Any, ...], state: dict[str, Any]) -> FarmError:
    """Rebuild an error without calling its ``__init__`` (whose signature may differ)."""
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class FarmError(Exception):
    """Base class of every error SyncFarm reports to a user."""

    retryable: bool = False
    """Whether running the same unit of work again can succeed (a transient failure)."""

    def one_line(self) -> str:
        return " ".join(str(self).split())

    def __reduce__(self) -> tuple[Any, ...]:
        # The default pickling calls cls(*self.args), which breaks every subclass with its own
        # __init__ (Ray then delivers an UnserializableException instead of the error).
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class SpecError(FarmError):
    """A job or backend setting is invalid."""


class MediaError(FarmError):
    """A media file cannot be used."""


class ProbeError(MediaError):
    """The input is not a usable video."""


class FrameCountMismatch(MediaError):
    """A shard decoded or encoded to a different number of frames than planned.

    Deterministic: the same source gives the same count on every try, so it is not retried.
    """

    def __init__(self, what: str, expected: int, found: int) -> None:
        super().__init__(f"{what}: expected {expected} frames, found {found}")
        self.expected = expected
        self.found = found


class SourceUnavailable(MediaError):
    """Reading a file failed with an operating-system error (gone, unmounted, I/O error).

    Retryable: a network mount that hiccups, or a node with a stale mount, may read it next time.
    """

    retryable = True


class FfmpegFailed(FarmError):
    """The ffmpeg binary exited with an error; keeps the argv and the tail of stderr."""

    def __init__(self, argv: list[str], returncode: int, stderr_tail: str) -> None:
        last = stderr_tail.strip().splitlines()[-1] if stderr_tail.strip() else "no output"
        super().__init__(f"ffmpeg exited with code {returncode}: {last}")
        self.argv = argv
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class ModelError(FarmError):
    """A model file is missing or does not match its manifest."""


class ChecksumMismatch(ModelError):
    """A model file's sha256 differs from its manifest entry."""


class DeviceUnavailable(ModelError):
    """The job asked for a device (``--device cuda``/``tensorrt``) that this worker's
    onnxruntime or its resources cannot give; running it again on the same worker cannot help."""


class ConsentError(FarmError):
    """The identity's consent record is missing, invalid or does not cover the job."""


class StorageError(FarmError):
    """A node that will run work cannot read an input or write the job's work directory."""

    def __init__(
        self, message: str, *, node: str = "", path: str = "", retryable: bool = False
    ) -> None:
        super().__init__(message)
        self.node = node
        self.path = path
        self.retryable = retryable
        """True for a transient failure (an object store that did not answer), never for a
        missing bucket, missing credentials or a refused permission."""


class ShardFailed(FarmError):
    """A shard or sentence failed; `retryable` tells the pool whether to run it again."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class UnitFailed(FarmError):
    """A unit of work failed for good: not retryable, or out of attempts."""

    def __init__(self, message: str, *, unit: str = "", attempts: int = 0) -> None:
        super().__init__(message)
        self.unit = unit
        self.attempts = attempts


class Cancelled(FarmError):
    """The job was cancelled before it finished; its finished shards stay in the work dir."""

    def __init__(self, message: str, *, work_dir: str = "") -> None:
        super().__init__(message)
        self.work_dir = work_dir


class UnexpectedError(FarmError):
    """An error that is not a `FarmError` (a bug, or a library failing in a new way).

    The user gets one line; the traceback goes to ``log_path``.
    """

    def __init__(self, message: str, *, log_path: str = "") -> None:
        super().__init__(message)
        self.log_path = log_path


class StageNotBuilt(FarmError):
    """A requested stage or backend is not implemented yet."""


def plain_reason(error: BaseException) -> str:
    """What went wrong, in words: an OS or FFmpeg error's text without "[Errno N]" and paths
    the message names anyway."""
    strerror = getattr(error, "strerror", None)
    if isinstance(strerror, str) and strerror:
        return strerror
    return re.sub(r"\[Errno -?\d+\]\s*", "", " ".join(str(error).split())) or type(error).__name__


def record_unexpected(
    error: BaseException, log_dir: Path, *, what: str = "", detail: str | None = None
) -> UnexpectedError:
    """Write the traceback of an unknown error to a log file; return the one-line error.

    ``detail`` replaces the local traceback (a remote one, e.g. the text of a Ray task error).
    """
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    path = log_dir / f"error-{stamp}.log"
    text = re.sub(r"\x1b\[[0-9;]*m", "", detail) if detail else None  # Ray colours its text
    text = text or "".join(traceback.format_exception(error))
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        where = f"; traceback in {path}"
    except OSError:
        path, where = Path(), ""
    summary = " ".join(str(error).split())[:300]
    prefix = f"{what} failed with" if what else "unexpected"
    return UnexpectedError(
        f"{prefix} {type(error).__name__}: {summary}{where}",
        log_path=str(path) if where else "",
    )
