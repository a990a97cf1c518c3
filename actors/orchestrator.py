"""The job orchestrator: owns the job's Ray references, the ledger and the worker pool.

It only wires `farm.job` steps together: prepare (probe, plan, ledger) -> video shards on the
pool -> finish (reduce, mux). Progress goes to a callback as small event dicts, which the CLI
draws and metrics count.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray

from actors.pool import ActorPool, WorkItem
from actors.video_worker import ProgressBoard, VideoWorker
from actors.voice_worker import VoiceWorker
from farm.errors import SpecError
from farm.face.identity import load_identity
from farm.job import JobPlan, finish_job, pending_shards, prepare_job, record_shard, shard_task
from farm.media.audio import decode_audio
from farm.metrics import FarmMetrics
from farm.plan.shards import schedule_order
from farm.render import ShardResult, ShardTask
from farm.spec import JobSpec
from farm.voice import decide_voice_stage
from farm.voice.model import FittedSentence
from farm.voice.stage import finish_voice
from farm.voice.tasks import SentenceTask, VoiceJob, prepare_voice_job

log = logging.getLogger(__name__)

ProgressCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ClusterShape:
    cpus: float
    gpus: float


def cluster_shape() -> ClusterShape:
    resources = ray.cluster_resources()
    return ClusterShape(float(resources.get("CPU", 1)), float(resources.get("GPU", 0)))


def video_pool_size(spec: JobSpec, shape: ClusterShape, shard_count: int) -> int:
    cluster = spec.cluster
    if cluster.video_workers is not None:
        size = cluster.video_workers
    elif cluster.gpus_per_worker > 0 and shape.gpus > 0:
        size = int(shape.gpus / cluster.gpus_per_worker)
    else:
        size = int(shape.cpus / cluster.cpus_per_worker)
    return max(1, min(size, shard_count))


def make_video_pool(
    spec: JobSpec, size: int, board: Any, on_retry: Callable[[str, str], None] | None = None
) -> ActorPool[ShardTask, ShardResult]:
    cluster = spec.cluster
    threads = max(1, math.floor(cluster.cpus_per_worker))
    options: dict[str, Any] = {"num_cpus": cluster.cpus_per_worker, "max_restarts": 0}
    if cluster.gpus_per_worker > 0:
        options["num_gpus"] = cluster.gpus_per_worker
    remote_worker = ray.remote(VideoWorker)

    def make_actor() -> Any:
        return remote_worker.options(**options).remote(threads)

    def submit(actor: Any, task: ShardTask) -> ray.ObjectRef:
        return actor.render.remote(spec, task, board)

    return ActorPool(
        make_actor,
        size,
        submit=submit,
        max_inflight_per_actor=cluster.max_inflight_per_worker,
        timeout_s=cluster.shard_timeout_s,
        max_attempts=cluster.max_attempts,
        on_retry=on_retry,
        actor_start_timeout_s=cluster.actor_start_timeout_s,
    )


@dataclass
class VoiceOutcome:
    timeline: np.ndarray | None = None
    report: dict[str, Any] | None = None
    error: BaseException | None = None


def prepare_voice(plan: JobPlan) -> tuple[VoiceJob | None, str | None]:
    """The voice stage's tasks, or why it is skipped (said in the report, never silent)."""
    spec = plan.spec
    if spec.voice.mode == "keep":
        return None, None
    audio = plan.info.audio
    if audio is None:
        return None, "the input has no audio stream: voice stage skipped, video still produced"
    if spec.face is None:
        raise SpecError("re-voicing needs an identity pack with voice references")
    pack = load_identity(spec.face.identity)
    pcm = decode_audio(plan.info.path, audio)
    decision = decide_voice_stage(pcm, spec.voice)
    if not decision.run:
        return None, decision.reason
    job = prepare_voice_job(
        pcm, audio.sample_rate, spec.voice, tuple(pack.voice_refs), int(plan.job_id[:8], 16)
    )
    return job, None


def run_voice(
    spec: JobSpec, job: VoiceJob, emit: ProgressCallback, metrics: FarmMetrics
) -> VoiceOutcome:
    """Every sentence on the voice pool, then one timeline exactly as long as the audio."""
    fitted: list[FittedSentence] = []
    remote_worker = ray.remote(VoiceWorker)
    options: dict[str, Any] = {"num_cpus": spec.cluster.cpus_per_worker, "max_restarts": 0}

    def on_retry(key: str, reason: str) -> None:
        metrics.retries.labels("voice", reason).inc()
        emit({"event": "retry", "shard": key, "reason": reason})

    pool: ActorPool[SentenceTask, FittedSentence] = ActorPool(
        lambda: remote_worker.options(**options).remote(),
        max(1, min(spec.cluster.voice_workers, len(job.tasks))),
        submit=lambda actor, task: actor.synthesize.remote(task),
        max_inflight_per_actor=spec.cluster.max_inflight_per_worker,
        timeout_s=spec.cluster.shard_timeout_s,
        max_attempts=spec.cluster.max_attempts,
        on_retry=on_retry,
        actor_start_timeout_s=spec.cluster.actor_start_timeout_s,
    )

    def on_done(item: WorkItem[SentenceTask], result: FittedSentence) -> None:
        fitted.append(result)
        metrics.frames.labels("voice").inc()
        emit({"event": "sentence_done", "sentence": item.payload.sentence.index})

    started = time.perf_counter()
    items = [WorkItem(key=f"sentence {t.sentence.index}", payload=t) for t in job.tasks]
    try:
        if items:
            pool.run(items, on_done)
    finally:
        pool.shutdown()
    job.timings["synthesize_and_fit"] = time.perf_counter() - started
    timeline, report = finish_voice(job.plan, fitted, spec.voice, job.warnings, job.timings)
    return VoiceOutcome(timeline=timeline, report=report.to_dict())


def run_job(
    spec: JobSpec,
    *,
    on_event: ProgressCallback | None = None,
    metrics: FarmMetrics | None = None,
) -> dict[str, Any]:
    """Run one job on the connected Ray cluster and return its summary."""
    emit = on_event or (lambda event: None)
    metrics = metrics or FarmMetrics()
    started = time.perf_counter()
    try:
        summary = _run(spec, emit, metrics)
    except BaseException:
        metrics.jobs.labels("failed").inc()
        raise
    metrics.jobs.labels("succeeded").inc()
    metrics.job_seconds.observe(time.perf_counter() - started)
    summary["stage_seconds"]["job_s"] = round(time.perf_counter() - started, 4)
    return summary


def _run(spec: JobSpec, emit: ProgressCallback, metrics: FarmMetrics) -> dict[str, Any]:
    threads = max(1, math.floor(spec.cluster.cpus_per_worker))
    plan: JobPlan = prepare_job(spec, worker_threads=threads)
    voice_job, voice_skip = prepare_voice(plan)
    if voice_skip:
        plan.warnings.append(voice_skip)
    todo = schedule_order(pending_shards(plan))
    emit(
        {
            "event": "planned",
            "job_id": plan.job_id,
            "frames": plan.info.video.frame_count,
            "shards": [(s.name, s.frames) for s in plan.shards],
            "reused": sorted(plan.reused),
        }
    )
    metrics.shards.labels("reused").inc(len(plan.reused))
    results: list[ShardResult] = []
    retries = 0
    t_render = time.perf_counter()
    voice = VoiceOutcome(report={"skipped": True, "reason": voice_skip} if voice_skip else None)
    voice_thread: threading.Thread | None = None
    if voice_job is not None:
        # Sentences run on their own workers at the same time as the video shards.
        def voice_main() -> None:
            try:
                outcome = run_voice(plan.spec, voice_job, emit, metrics)
                voice.timeline, voice.report = outcome.timeline, outcome.report
            except BaseException as exc:
                voice.error = exc

        voice_thread = threading.Thread(target=voice_main, name="voice-stage", daemon=True)
        voice_thread.start()
    if todo:
        board = ProgressBoard.options(num_cpus=0).remote()  # type: ignore[attr-defined]
        size = video_pool_size(spec, cluster_shape(), len(todo))
        if voice_job is not None and spec.cluster.video_workers is None:
            size = max(1, size - spec.cluster.voice_workers)

        def on_retry(key: str, reason: str) -> None:
            metrics.retries.labels("video", reason).inc()
            emit({"event": "retry", "shard": key, "reason": reason})

        pool = make_video_pool(plan.spec, size, board, on_retry)

        def on_done(item: WorkItem[ShardTask], result: ShardResult) -> None:
            record_shard(plan, result)
            results.append(result)
            metrics.shards.labels("done").inc()
            metrics.frames.labels("video").inc(result.frames)
            metrics.shard_seconds.labels("video").observe(result.seconds)
            emit(
                {
                    "event": "shard_done",
                    "shard": result.name,
                    "frames": result.frames,
                    "seconds": result.seconds,
                }
            )

        last_poll = 0.0

        def on_tick(queued: int, inflight: int) -> None:
            nonlocal last_poll
            metrics.queue_depth.labels("video").set(queued)
            metrics.inflight.labels("video").set(inflight)
            now = time.monotonic()
            if now - last_poll > 0.5:
                last_poll = now
                try:
                    frames = ray.get(board.snapshot.remote(), timeout=5)
                except Exception:
                    frames = {}
                emit({"event": "progress", "active": frames})

        items = [WorkItem(key=f"shard {s.name}", payload=shard_task(plan, s)) for s in todo]
        try:
            pool.run(items, on_done, on_tick)
        finally:
            retries = pool.retries
            pool.shutdown()
            ray.kill(board)
            metrics.inflight.labels("video").set(0)
    if voice_thread is not None:
        voice_thread.join()
        if voice.error is not None:
            raise voice.error
    plan.timings["render_s"] = time.perf_counter() - t_render
    emit({"event": "reducing"})
    summary = finish_job(plan, results, audio_timeline=voice.timeline, voice_report=voice.report)
    summary["retries"] = retries
    emit({"event": "finished", "output": summary["output"]})
    return summary
