"""The job orchestrator: owns the job's Ray references, the ledger and the worker pool.

It only wires `farm.job` steps together: prepare (probe, plan, ledger) -> video shards on the
pool -> finish (reduce, mux). Progress goes to a callback as small event dicts, which the CLI
draws and metrics count.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray

from actors.pool import ActorPool, WorkItem
from actors.video_worker import ProgressBoard, VideoWorker
from farm.job import JobPlan, finish_job, pending_shards, prepare_job, record_shard, shard_task
from farm.metrics import FarmMetrics
from farm.plan.shards import schedule_order
from farm.render import ShardResult, ShardTask
from farm.spec import JobSpec

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
    )


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
    if todo:
        board = ProgressBoard.options(num_cpus=0).remote()  # type: ignore[attr-defined]
        size = video_pool_size(spec, cluster_shape(), len(todo))

        def on_retry(key: str, reason: str) -> None:
            metrics.retries.labels("video", reason).inc()
            emit({"event": "retry", "shard": key, "reason": reason})

        pool = make_video_pool(spec, size, board, on_retry)

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
    plan.timings["render_s"] = time.perf_counter() - t_render
    emit({"event": "reducing"})
    summary = finish_job(plan, results)
    summary["retries"] = retries
    emit({"event": "finished", "output": summary["output"]})
    return summary
