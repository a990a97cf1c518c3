"""Rich progress bars for a job, its active shards and its sentences, fed by the job's events."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class JobProgress:
    """One bar for the job's frames and one per active shard."""

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            disable=not enabled,
        )
        self.job_task: TaskID | None = None
        self.voice_task: TaskID | None = None
        self.shard_frames: dict[str, int] = {}
        self.shard_tasks: dict[str, TaskID] = {}
        self.done_frames = 0

    def __enter__(self) -> JobProgress:
        self.progress.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.__exit__(exc_type, exc, tb)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "planned":
            self.shard_frames = dict(event["shards"])
            reused = sum(self.shard_frames[n] for n in event.get("reused", []))
            self.done_frames = reused
            self.job_task = self.progress.add_task(
                f"job {event['job_id']}", total=event["frames"], completed=reused
            )
            if event.get("sentences"):
                self.voice_task = self.progress.add_task(
                    "  voice",
                    total=event["sentences"],
                    completed=len(event.get("sentences_reused", [])),
                )
        elif kind == "progress":
            for name, frames in event["active"].items():
                if self._finished(name):
                    continue  # the board still lists it until the worker's next reset
                if name not in self.shard_tasks and name in self.shard_frames:
                    self.shard_tasks[name] = self.progress.add_task(
                        f"  shard {name}", total=self.shard_frames[name]
                    )
                if name in self.shard_tasks:
                    self.progress.update(self.shard_tasks[name], completed=frames)
            if self.job_task is not None:
                active = sum(
                    min(f, self.shard_frames.get(n, f))
                    for n, f in event["active"].items()
                    if n in self.shard_tasks and not self._finished(n)
                )
                self.progress.update(self.job_task, completed=self.done_frames + active)
        elif kind == "shard_done":
            name = event["shard"]
            self.done_frames += event["frames"]
            task = self.shard_tasks.pop(name, None)
            if task is not None:
                self.progress.remove_task(task)
            self.shard_frames[name] = -1
            if self.job_task is not None:
                self.progress.update(self.job_task, completed=self.done_frames)
        elif kind == "sentence_done" and self.voice_task is not None:
            self.progress.advance(self.voice_task)
        elif kind == "retry":
            self.progress.console.print(f"[yellow]retrying {event['unit']}: {event['reason']}")
        elif kind == "warning":
            self.progress.console.print(f"[yellow]warning: {event['message']}")
        elif kind == "reducing" and self.job_task is not None:
            self.progress.update(self.job_task, description="joining and muxing")

    def _finished(self, name: str) -> bool:
        return self.shard_frames.get(name) == -1
