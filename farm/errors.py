"""The SyncFarm error tree.

    FarmError                      anything SyncFarm reports to a user
    ├── SpecError                  a job or settings value is invalid (names the field and the fix)
    ├── MediaError                 an input or intermediate file cannot be used
    │   ├── ProbeError             not a readable video (missing, not media, truncated, no frames)
    │   └── FrameCountMismatch     a shard decoded to the wrong number of frames
    ├── FfmpegFailed               the ffmpeg binary exited non-zero (argv and stderr tail kept)
    ├── ModelError                 a model file is missing, has the wrong hash or contract
    │   └── ChecksumMismatch
    ├── ConsentError               the consent record is missing or does not allow the job
    ├── ShardFailed                a unit of work failed; `retryable` says whether to run it again
    └── StageNotBuilt              a requested stage is not implemented yet (never silently skipped)

Every message says what failed, which file or unit, expected versus found, and what to do. The CLI
prints `str(error)` as one line.
"""

from __future__ import annotations


class FarmError(Exception):
    """Base class of every error SyncFarm reports to a user."""

    def one_line(self) -> str:
        return " ".join(str(self).split())


class SpecError(FarmError):
    """A job or backend setting is invalid."""


class MediaError(FarmError):
    """A media file cannot be used."""


class ProbeError(MediaError):
    """The input is not a usable video."""


class FrameCountMismatch(MediaError):
    """A shard decoded or encoded to a different number of frames than planned."""

    def __init__(self, what: str, expected: int, found: int) -> None:
        super().__init__(f"{what}: expected {expected} frames, found {found}")
        self.expected = expected
        self.found = found


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


class ConsentError(FarmError):
    """The identity's consent record is missing, invalid or does not cover the job."""


class ShardFailed(FarmError):
    """A shard or sentence failed; `retryable` tells the pool whether to run it again."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class StageNotBuilt(FarmError):
    """A requested stage or backend is not implemented yet."""
