"""Rich progress for a job, fed by its events (the vocabulary is in `farm.pipeline.progress`).

What the user sees, top to bottom (rows appear as the job gets there)::

    ✓ planning         3 shards, 5 sentences                 0:00:12
    ⠦ job 3f2a9c0d11ab ━━━━━━╸        175/300 30.0 fps  0:00:04 0:00:05 3 workers · 2 shards running
    ⠦   voice          ━━━━━━━━       3/5     -- sent/s 0:00:02 -:--:-- 1 running, 2 queued
    ⠦   shard 00000    ━━━━━━          50/100 20.0 fps  0:00:02 0:00:03
    ⠦   shard 00001    ━━╸             25/100 10.0 fps  0:00:02 0:00:08
    ⠴ reducing         joining, muxing, signing              0:00:01    (after the last shard)

The job bar counts reused shards as done, the voice bar reused sentences. There is one bar per
shard the workers report as active, timed from when it was first seen; it goes when the shard is
done (a late report for a done shard does not bring it back). Everything is driven by events: no
work per frame, only per event (at most a few a second) plus rich's own refresh.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column
from rich.text import Text

BAR_KINDS = frozenset({"job", "shard", "voice"})
"""Tasks drawn as bars; the others ("status": planning, reducing) are a spinner and a line."""

PLANNING_TEXT = "probe, scene cuts, shard plan"
REDUCING_TEXT = "joining, muxing, signing"


class _MarkColumn(SpinnerColumn):
    """A spinner while a task runs, ✓ once it is finished, its mark (✗) once it was stopped."""

    def __init__(self) -> None:
        super().__init__(finished_text="[green]✓")

    def render(self, task: Task) -> Text:
        mark = task.fields.get("mark")
        if mark:
            return Text.from_markup(str(mark))
        rendered = super().render(task)
        return rendered if isinstance(rendered, Text) else Text(str(rendered))


class _BarsOnly(ProgressColumn):
    """``column`` for bar tasks; for status tasks, their ``detail`` text (or nothing)."""

    def __init__(self, column: ProgressColumn, *, detail: bool = False) -> None:
        self.column = column
        self.detail = detail
        super().__init__(table_column=column.get_table_column())

    def render(self, task: Task) -> RenderableType:
        if task.fields.get("kind") in BAR_KINDS:
            return self.column(task)
        return Text(str(task.fields.get("detail", "")) if self.detail else "", no_wrap=True)


class _RateColumn(ProgressColumn):
    """Frames (or sentences) per second over rich's sliding window; blank for status tasks."""

    def render(self, task: Task) -> Text:
        if task.fields.get("kind") not in BAR_KINDS:
            return Text("")
        unit = str(task.fields.get("unit", "fps"))
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text(f"-- {unit}", style="progress.data.speed")
        digits = 1 if unit == "fps" else 2
        return Text(f"{speed:.{digits}f} {unit}", style="progress.data.speed")


class JobProgress:
    """The job's progress as rich bars: planning, the job's frames, its voice, active shards,
    reducing. ``get_time`` (seconds, monotonic) is for tests; rich's clock by default."""

    def __init__(
        self,
        console: Console,
        enabled: bool = True,
        *,
        get_time: Callable[[], float] | None = None,
    ) -> None:
        self.enabled = enabled
        self.progress = Progress(
            _MarkColumn(),
            TextColumn("{task.description}", table_column=Column(no_wrap=True)),
            _BarsOnly(BarColumn(bar_width=32), detail=True),
            _BarsOnly(MofNCompleteColumn()),
            _RateColumn(),
            TimeElapsedColumn(),
            _BarsOnly(TimeRemainingColumn()),
            TextColumn("{task.fields[note]}", style="dim", table_column=Column(no_wrap=True)),
            console=console,
            transient=False,
            disable=not enabled,
            get_time=get_time,
        )
        self.planning_task: TaskID | None = None
        self.reducing_task: TaskID | None = None
        self.job_task: TaskID | None = None
        self.voice_task: TaskID | None = None
        self.shard_frames: dict[str, int] = {}
        self.shard_tasks: dict[str, TaskID] = {}
        self.active_frames: dict[str, int] = {}  # last frames reported per shard with a bar
        self.done_shards: set[str] = set()
        self.done_frames = 0
        self.sentences_done = 0
        self.workers = 0
        self.over = False

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
        if kind == "retry":
            self._print(f"[yellow]retrying {event['unit']}: {event['reason']}")
            self._forget_attempt(str(event["unit"]))
        elif kind == "warning":
            self._print(f"[yellow]warning: {event['message']}")
        elif kind == "notice":
            self._print(str(event["message"]))
        elif self.over:
            return  # nothing moves after the job's end
        elif kind == "planning":
            self._planning()
        elif kind == "planned":
            self._planned(event)
        elif kind == "workers":
            self.workers = len(event.get("workers", []))
            if self.job_task is not None:
                self.progress.update(self.job_task, note=self._workers_note())
        elif kind == "progress":
            self._on_progress(event)
        elif kind == "shard_done":
            self._shard_done(str(event["shard"]), int(event["frames"]))
        elif kind == "sentence_done":
            self._sentence_done()
        elif kind == "reducing":
            self._reducing()
        elif kind == "finished":
            self._finished()
        elif kind in ("failed", "cancelled"):
            self._stopped(str(kind))

    # -- the events ---------------------------------------------------------------------------

    def _planning(self) -> None:
        if self.planning_task is None:
            self.planning_task = self._add(
                "planning", kind="status", total=None, detail=PLANNING_TEXT
            )

    def _planned(self, event: dict[str, Any]) -> None:
        self.shard_frames = {str(n): int(f) for n, f in event["shards"]}
        self.done_shards = {str(n) for n in event.get("reused", [])}
        self.done_frames = sum(self.shard_frames.get(n, 0) for n in self.done_shards)
        sentences = int(event.get("sentences") or 0)
        self.sentences_done = min(len(event.get("sentences_reused", [])), sentences)
        if self.planning_task is not None:
            detail = f"{len(self.shard_frames)} shards"
            if sentences:
                detail += f", {sentences} sentences"
            self.progress.update(self.planning_task, total=1, completed=1, detail=detail)
        self.job_task = self._add(
            f"job {event['job_id']}",
            kind="job",
            total=int(event["frames"]),
            completed=self.done_frames,
            note="waiting for workers",
        )
        if sentences:
            # Its clock starts with the first voice work, not at the plan.
            self.voice_task = self._add(
                "  voice",
                kind="voice",
                total=sentences,
                completed=self.sentences_done,
                unit="sent/s",
                start=self.sentences_done >= sentences,
            )

    def _on_progress(self, event: dict[str, Any]) -> None:
        for raw_name, raw_frames in event.get("active", {}).items():
            name, frames = str(raw_name), int(raw_frames)
            if name in self.done_shards or name not in self.shard_frames:
                continue  # the board still lists a done shard until the worker's next reset
            frames = min(frames, self.shard_frames[name])
            task = self.shard_tasks.get(name)
            if task is None:
                # Added at 0 and moved to its first report at once: that first sample is rich's
                # baseline for the shard's speed, so its fps shows from the second report on.
                self.shard_tasks[name] = task = self._add(
                    f"  shard {name}", kind="shard", total=self.shard_frames[name]
                )
                self.progress.update(task, completed=frames)
            else:
                self.progress.update(task, completed=frames)
            self.active_frames[name] = frames
        queued, inflight = event.get("queued") or {}, event.get("inflight") or {}
        if self.job_task is not None:
            note = self._workers_note()
            if "video" in inflight or "video" in queued:
                shards = _counts(inflight.get("video", 0), queued.get("video", 0), "shard")
                note = _join(note, shards)
            self.progress.update(self.job_task, completed=self._job_frames(), note=note)
        if self.voice_task is not None and ("voice" in inflight or "voice" in queued):
            if inflight.get("voice"):
                self.progress.start_task(self.voice_task)  # no-op once started
            note = _counts(inflight.get("voice", 0), queued.get("voice", 0))
            self.progress.update(self.voice_task, note=note)

    def _shard_done(self, name: str, frames: int) -> None:
        if name in self.done_shards:
            return
        self.done_shards.add(name)
        self.done_frames += frames
        self.active_frames.pop(name, None)
        task = self.shard_tasks.pop(name, None)
        if task is not None:
            self.progress.remove_task(task)
        if self.job_task is not None:
            self.progress.update(self.job_task, completed=self._job_frames())

    def _sentence_done(self) -> None:
        self.sentences_done += 1
        if self.voice_task is not None:
            self.progress.start_task(self.voice_task)
            self.progress.update(self.voice_task, completed=self.sentences_done)

    def _forget_attempt(self, unit: str) -> None:
        """A shard's attempt failed: its bar goes, and comes back when the next attempt reports."""
        kind, _, name = unit.partition(" ")
        if kind != "shard" or name not in self.shard_tasks:
            return
        self.progress.remove_task(self.shard_tasks.pop(name))
        self.active_frames.pop(name, None)
        if self.job_task is not None:
            self.progress.update(self.job_task, completed=self._job_frames())

    def _reducing(self) -> None:
        self._drop_shard_bars()
        for task in (self.job_task, self.voice_task):
            if task is not None:
                self.progress.update(task, note="")
                self.progress.stop_task(task)  # their clocks stop where rendering did
        if self.reducing_task is None:
            self.reducing_task = self._add(
                "reducing", kind="status", total=None, detail=REDUCING_TEXT
            )

    def _finished(self) -> None:
        self.over = True
        self._drop_shard_bars()
        for task_id in (self.planning_task, self.job_task, self.voice_task, self.reducing_task):
            if task_id is not None:
                task = self._task(task_id)
                total = task.total if task.total is not None else 1
                self.progress.update(task_id, total=total, completed=total, note="")
                self.progress.stop_task(task_id)

    def _stopped(self, how: str) -> None:
        """The job failed or was cancelled: what was running stops, marked ✗, where it was."""
        self.over = True
        self._drop_shard_bars()
        mark = "[red]✗" if how == "failed" else "[yellow]✗"
        for task_id in (self.planning_task, self.job_task, self.voice_task, self.reducing_task):
            if task_id is None or self._task(task_id).finished:
                continue
            self.progress.stop_task(task_id)  # (an unstarted bar stops pulsing, at 0:00:00)
            note = how if task_id in (self.job_task, self.planning_task, self.reducing_task) else ""
            self.progress.update(task_id, mark=mark, note=note)

    # -- helpers ------------------------------------------------------------------------------

    def _add(
        self,
        description: str,
        *,
        kind: str,
        total: int | None,
        completed: int = 0,
        start: bool = True,
        **fields: Any,
    ) -> TaskID:
        fields.setdefault("note", "")
        fields.setdefault("unit", "fps")
        task = self.progress.add_task(
            description, start=start, total=total, completed=completed, kind=kind, **fields
        )
        if total is not None and completed >= total:
            self.progress.update(task, completed=completed)  # rich marks it finished on update
        return task

    def _task(self, task_id: TaskID) -> Task:
        return next(t for t in self.progress.tasks if t.id == task_id)

    def _job_frames(self) -> int:
        return self.done_frames + sum(self.active_frames.values())

    def _drop_shard_bars(self) -> None:
        for task in self.shard_tasks.values():
            self.progress.remove_task(task)
        self.shard_tasks.clear()
        self.active_frames.clear()

    def _workers_note(self) -> str:
        if self.workers:
            return f"{self.workers} worker" + ("s" if self.workers != 1 else "")
        return ""

    def _print(self, markup: str) -> None:
        self.progress.console.print(markup)


def _counts(running: int, queued: int, what: str = "") -> str:
    what = f" {what}{'' if running == 1 else 's'}" if what else ""
    text = f"{running}{what} running"
    return f"{text}, {queued} queued" if queued else text


def _join(*parts: str) -> str:
    return " · ".join(p for p in parts if p)
