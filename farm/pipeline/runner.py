"""The one pipeline, and the small protocol that lets any shell drive it.

`execute_job` is every job, wherever it runs: plan, voice plan, units, reduce, report. What
differs between a laptop test and a GPU cluster is only *where* units and the reducer run, which
is the `Runner`'s business:

* `InProcessRunner` (here): units one after another in this process, the reducer in-process.
  Tests and library users run exactly the steps production runs.
* ``actors.ray_runner.RayRunner``: units on leased worker actors (GPU-aware pools), the reducer
  in a reducer actor, all owned by the job actor that calls `execute_job`.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from farm.errors import Cancelled, SpecError
from farm.fsutil import write_json_atomic
from farm.pipeline.plan import JobPlan, pending_shards, prepare_job, report_path, shard_task
from farm.pipeline.progress import EventSink, utc_now
from farm.pipeline.reduce import ReduceRequest, reduce_job
from farm.pipeline.remote import RemoteJob
from farm.pipeline.report import JobReport, WorkerReport
from farm.pipeline.storage import StorageAccess, check_access, storage_access, storage_error
from farm.pipeline.units import Unit, UnitResult, UnitWorker, decode_threads, schedule_units
from farm.pipeline.voice import SentenceResult, pending_sentences, plan_voice_units
from farm.render import ShardResult
from farm.spec import JobSpec


@dataclass
class RunOutcome:
    """What running the units says beyond each unit's own result."""

    retries: int = 0
    workers: list[WorkerReport] = field(default_factory=list)
    device: str = "cpu"


class Runner(Protocol):
    """Where a job's units and its reducer run.

    Required methods:

    * ``start``: the job has begun (nothing is planned yet): acquire what the units will need,
      in the background; return at once.
    * ``run_units``: prove storage is reachable wherever units will run, then run every unit
      (video and voice at the same time where the runner can), calling ``on_done`` for each
      result as it arrives; the first failure that retries cannot fix stops every other unit
      and is raised; ``cancel`` being set stops everything and raises `Cancelled`.
    * ``reduce``: run `reduce_job` where the work directory is reachable; return its report.
    * ``close``: the job has ended, however: give back everything acquired.
    """

    def start(self, spec: JobSpec, cancel: threading.Event) -> None: ...

    def run_units(
        self,
        spec: JobSpec,
        units: Sequence[Unit],
        access: StorageAccess,
        on_done: Callable[[UnitResult], None],
        on_event: EventSink,
        cancel: threading.Event,
    ) -> RunOutcome: ...

    def reduce(self, request: ReduceRequest, cancel: threading.Event) -> JobReport: ...

    def close(self) -> None: ...


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def _check_cancel(cancel: threading.Event, plan: JobPlan) -> None:
    if cancel.is_set():
        raise Cancelled(
            f"job {plan.job_id} was cancelled; its finished shards are kept in {plan.work_dir}: "
            f"`farm resume {plan.work_dir}` finishes it",
            work_dir=str(plan.work_dir),
        )


def outcome_warnings(spec: JobSpec, frames_changed: int) -> list[str]:
    """What the rendered shards say about the double (they ran; did the swap happen?)."""
    face = spec.face
    if face is None or frames_changed > 0:
        return []
    if face.faces == "reference":
        return [
            f"the reference person ({face.reference}) was never found in {spec.input.name}: "
            "no frame was changed"
        ]
    return [
        f"no frame was swapped: no face was found in {spec.input.name} (the classic swap finds "
        "frontal faces of at least 80 px)"
    ]


def execute_job(
    spec: JobSpec,
    runner: Runner,
    *,
    run_id: str | None = None,
    on_event: EventSink | None = None,
    cancel: threading.Event | None = None,
) -> JobReport:
    """Run one job from spec to signed output with ``runner``; return its report."""
    cancel = cancel or threading.Event()
    runner.start(spec, cancel)
    try:
        return _execute(spec, runner, run_id or new_run_id(), on_event, cancel)
    finally:
        runner.close()


def _execute(
    spec: JobSpec,
    runner: Runner,
    run_id: str,
    on_event: EventSink | None,
    cancel: threading.Event,
) -> JobReport:
    emit: EventSink = on_event or (lambda event: None)
    started = time.perf_counter()
    started_at = utc_now()
    emit({"event": "planning"})
    remote = RemoteJob.of(spec)  # s3:// locations: staged on this node's disk (pipeline.remote)
    if remote is not None:
        spec = remote.stage()
    plan, ledger = prepare_job(spec)
    if remote is not None:
        remote.attach(ledger)
    voice = plan_voice_units(plan)
    todo_shards, reused_shards = pending_shards(plan, ledger)
    todo_sentences, reused_sentences = (
        pending_sentences(voice, ledger) if voice is not None else ([], [])
    )
    threads = decode_threads(spec.cluster.cpus_per_worker)
    units = schedule_units(
        [shard_task(plan, s, decode_threads=threads) for s in todo_shards], todo_sentences
    )
    emit(
        {
            "event": "planned",
            "job_id": plan.job_id,
            "run_id": run_id,
            "work_dir": str(plan.work_dir),
            "frames": plan.info.video.frame_count,
            "shards": [[s.name, s.frames] for s in plan.shards],
            "reused": reused_shards,
            "sentences": len(voice.tasks) if voice is not None else 0,
            "sentences_reused": [r.index for r in reused_sentences],
        }
    )
    for warning in plan.warnings:
        emit({"event": "warning", "message": warning})
    if reused_shards or reused_sentences:
        emit(
            {
                "event": "notice",
                "message": f"resuming an earlier run of this job from {plan.work_dir}: "
                f"{len(reused_shards)} of {len(plan.shards)} shards"
                + (f" and {len(reused_sentences)} sentences" if reused_sentences else "")
                + " already done",
            }
        )
    done_records = ledger.data["done"]
    by_name = {s.name: s for s in plan.shards}
    shards: dict[str, ShardResult] = {
        name: ShardResult.from_record(by_name[name], done_records[name], plan.work_dir)
        for name in reused_shards
    }
    sentences: dict[int, SentenceResult] = {r.index: r for r in reused_sentences}

    def on_done(result: UnitResult) -> None:
        if isinstance(result, ShardResult):
            ledger.mark_done(result.name, result.record(plan.work_dir))
            shards[result.name] = result
            emit(
                {
                    "event": "shard_done",
                    "shard": result.name,
                    "frames": result.frames,
                    "seconds": result.seconds,
                    "worker": result.worker,
                }
            )
        else:
            ledger.mark_sentence(result.index, result.record())
            sentences[result.index] = result
            emit(
                {
                    "event": "sentence_done",
                    "sentence": result.index,
                    "seconds": result.seconds,
                    "stretch_ratio": result.report.stretch_ratio,
                    "in_band": result.report.in_band,
                }
            )

    _check_cancel(cancel, plan)
    outcome = RunOutcome()
    t_render = time.perf_counter()
    if units:
        try:
            outcome = runner.run_units(
                plan.spec, units, storage_access(plan), on_done, emit, cancel
            )
        except Cancelled:
            cancel.set()
    _check_cancel(cancel, plan)
    render_s = time.perf_counter() - t_render
    late = outcome_warnings(spec, sum(r.frames_changed for r in shards.values()))
    for warning in late:
        emit({"event": "warning", "message": warning})
    if spec.strict and late:
        raise SpecError(f"--strict: {late[0]}")
    emit({"event": "reducing"})
    request = ReduceRequest(
        plan=plan,
        run_id=run_id,
        shards=tuple(shards[s.name] for s in plan.shards),
        reused_shards=tuple(reused_shards),
        voice=voice,
        sentences=tuple(sentences[i] for i in sorted(sentences)),
        reused_sentences=tuple(r.index for r in reused_sentences),
        workers=tuple(outcome.workers),
        retries=outcome.retries,
        device=outcome.device,
        timings={"render_s": render_s},
        warnings=tuple(late),
    )
    try:
        report = runner.reduce(request, cancel)
    except Cancelled:
        cancel.set()
        _check_cancel(cancel, plan)
        raise
    seconds = dict(report.stage_seconds)
    seconds["job_s"] = round(time.perf_counter() - started, 4)
    report = report.model_copy(
        update={"stage_seconds": seconds, "started_at": started_at, "finished_at": utc_now()}
    )
    if remote is not None:
        report = remote.describe(report)
    ledger.mark_output({"path": report.output, "sha256": report.output_sha256, "run_id": run_id})
    write_json_atomic(report_path(spec.output), report.model_dump(mode="json"))
    if remote is not None:
        remote.publish()
    if not plan.keep_work_dir:
        shutil.rmtree(plan.work_dir, ignore_errors=True)
    emit({"event": "finished", "output": report.output, "report": report.model_dump(mode="json")})
    return report


class InProcessRunner:
    """Runs every unit in this process, one after another, and the reducer in-process.

    No retries: a unit's error is the job's error (the Ray runner retries what can be retried).
    """

    def __init__(self, worker: UnitWorker | None = None) -> None:
        self.worker = worker or UnitWorker(where="local")

    def start(self, spec: JobSpec, cancel: threading.Event) -> None:
        return None

    def close(self) -> None:
        return None

    def run_units(
        self,
        spec: JobSpec,
        units: Sequence[Unit],
        access: StorageAccess,
        on_done: Callable[[UnitResult], None],
        on_event: EventSink,
        cancel: threading.Event,
    ) -> RunOutcome:
        problems = check_access(access)
        if problems:
            raise storage_error("local", problems)
        for unit in units:
            if cancel.is_set():
                raise Cancelled("the job was cancelled")

            def on_frames(name: str, frames: int) -> None:
                on_event({"event": "progress", "active": {name: frames}})

            on_done(self.worker.run(spec, unit, on_frames))
        stats = self.worker.stats()
        return RunOutcome(
            workers=[
                WorkerReport(
                    slot="local",
                    node_id="local",
                    pid=os.getpid(),
                    device=self.worker.resources.device.describe(),
                    units=len(units),
                    model_loads=stats.model_loads,
                )
            ],
            device=self.worker.resources.device.kind,
        )

    def reduce(self, request: ReduceRequest, cancel: threading.Event) -> JobReport:
        return reduce_job(request)
