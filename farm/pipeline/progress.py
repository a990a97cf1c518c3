"""A job's progress events, and the status they add up to.

Every step reports progress as small JSON-ready event dicts (the pipeline never draws). The CLI
draws them, metrics count them, the job actor keeps them for watchers and folds them into a
`JobStatus`::

    {"event": "planning"}
    {"event": "planned", "job_id", "frames", "shards": [[name, frames], ...], "reused": [names],
     "sentences": n, "sentences_reused": [indices], "work_dir"}
    {"event": "workers", "workers": [WorkerReport, ...]}
    {"event": "progress", "active": {shard name: frames done},
     "queued": {"video": n, "voice": n}, "inflight": {"video": n, "voice": n},
     "oldest_s": age of the oldest unit in flight, "timeout_s": when a unit is re-run}
    {"event": "warning", "message"}        a result the user should know about
    {"event": "notice", "message"}         what the job does on its own (resuming a run)
    {"event": "shard_done", "shard", "frames", "seconds"}
    {"event": "sentence_done", "sentence", "seconds", "stretch_ratio", "in_band"}
    {"event": "retry", "unit", "reason"}
    {"event": "reducing"}
    {"event": "finished", "output", "report": JobReport}
    {"event": "failed", "error"}           one line
    {"event": "cancelled", "work_dir"}
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

Event = dict[str, Any]
EventSink = Callable[[Event], None]

JobState = Literal["queued", "planning", "running", "reducing", "succeeded", "failed", "cancelled"]
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
TERMINAL_EVENTS = frozenset({"finished", "failed", "cancelled"})


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class JobStatus(BaseModel):
    """Where one run of a job stands (what `farm jobs` lists and the API returns)."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    job_id: str | None = None
    state: JobState = "queued"
    input: str
    output: str
    work_dir: str | None = None
    detached: bool = False
    frames_total: int = 0
    frames_done: int = 0
    shards_total: int = 0
    shards_done: int = 0
    sentences_total: int = 0
    sentences_done: int = 0
    retries: int = 0
    eta_s: float | None = None
    started_at: str
    finished_at: str | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES


class ProgressTracker:
    """Folds events into a `JobStatus`."""

    def __init__(self, *, run_id: str, input: str, output: str, detached: bool = False) -> None:
        self._status = JobStatus(
            run_id=run_id, input=input, output=output, detached=detached, started_at=utc_now()
        )
        self._shard_frames: dict[str, int] = {}
        self._done: set[str] = set()
        self._active: dict[str, int] = {}
        self._done_frames = 0
        self._reused_frames = 0
        self._running_since: float | None = None

    def _update(self, **changes: Any) -> None:
        self._status = self._status.model_copy(update=changes)

    def apply(self, event: Event) -> None:
        kind = event.get("event")
        if kind == "planning":
            self._update(state="planning")
        elif kind == "planned":
            self._shard_frames = {str(n): int(f) for n, f in event["shards"]}
            self._done = set(event.get("reused", []))
            self._done_frames = sum(self._shard_frames.get(n, 0) for n in self._done)
            self._reused_frames = self._done_frames
            self._running_since = time.monotonic()
            self._update(
                state="running",
                job_id=event.get("job_id"),
                work_dir=event.get("work_dir"),
                frames_total=int(event["frames"]),
                frames_done=self._done_frames,
                shards_total=len(self._shard_frames),
                shards_done=len(self._done),
                sentences_total=int(event.get("sentences", 0)),
                sentences_done=len(event.get("sentences_reused", [])),
            )
        elif kind == "progress":
            self._active = {
                str(n): int(f) for n, f in event.get("active", {}).items() if n not in self._done
            }
            self._refresh_frames()
        elif kind == "shard_done":
            name = str(event["shard"])
            if name not in self._done:
                self._done.add(name)
                self._done_frames += int(event["frames"])
            self._active.pop(name, None)
            self._update(shards_done=len(self._done))
            self._refresh_frames()
        elif kind == "sentence_done":
            self._update(sentences_done=self._status.sentences_done + 1)
        elif kind == "retry":
            self._update(retries=self._status.retries + 1)
        elif kind == "reducing":
            self._update(state="reducing", eta_s=None)
        elif kind == "finished":
            self._update(state="succeeded", finished_at=utc_now(), eta_s=0.0)
        elif kind == "failed":
            self._update(state="failed", finished_at=utc_now(), error=event.get("error"))
        elif kind == "cancelled":
            self._update(state="cancelled", finished_at=utc_now(), error=event.get("error"))

    def _refresh_frames(self) -> None:
        active = sum(min(f, self._shard_frames.get(n, f)) for n, f in self._active.items())
        done = min(self._done_frames + active, self._status.frames_total or 1 << 62)
        eta = None
        rendered = done - self._reused_frames  # reused shards say nothing about the speed
        if self._running_since is not None and rendered > 0:
            elapsed = time.monotonic() - self._running_since
            eta = round(elapsed * (self._status.frames_total - done) / rendered, 1)
        self._update(frames_done=done, eta_s=eta)

    def status(self) -> JobStatus:
        return self._status
