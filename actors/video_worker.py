"""Video worker actor: renders shards with `farm.render.render_shard`; nothing else."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import ray

from farm.chaos import inject
from farm.processing import FrameProcessor, build_processors
from farm.render import ShardResult, ShardTask, render_shard
from farm.spec import JobSpec


@ray.remote
class ProgressBoard:
    """Frames done per active shard, written by workers and read by the orchestrator."""

    def __init__(self) -> None:
        self.frames: dict[str, int] = {}

    def report(self, shard: str, frames: int) -> None:
        self.frames[shard] = self.frames.get(shard, 0) + frames

    def reset(self, shard: str) -> None:
        self.frames.pop(shard, None)

    def snapshot(self) -> dict[str, int]:
        return dict(self.frames)


class VideoWorker:
    """One worker process; holds the processors of the job it served last.

    Processors are rebuilt when a task carries a different spec, so one actor can serve two jobs
    with different settings one after the other.
    """

    def __init__(self, threads: int = 1) -> None:
        self.threads = max(1, threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(self.threads))
        import cv2

        cv2.setNumThreads(self.threads)
        self._spec_hash: str | None = None
        self._processors: list[FrameProcessor] = []
        # Per-node worker metrics go out through Ray's metrics agent on every node (ray_ prefix);
        # job-level metrics come from the driver's prometheus-client endpoint.
        from ray.util.metrics import Counter, Histogram

        self._frames = Counter(
            "farm_worker_frames", "Frames rendered by this worker", tag_keys=("stage",)
        )
        self._shard_seconds = Histogram(
            "farm_worker_shard_seconds",
            "Shard render time on this worker",
            boundaries=[0.5, 1, 2, 5, 10, 30, 60, 120, 300],
            tag_keys=("stage",),
        )

    def _processors_for(self, spec: JobSpec) -> list[FrameProcessor]:
        key = spec.worker_key()
        if key != self._spec_hash:
            for processor in self._processors:
                processor.close()
            self._processors = build_processors(spec)
            self._spec_hash = key
        return self._processors

    def ping(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def render(self, spec: JobSpec, task: ShardTask, board: Any = None) -> ShardResult:
        processors = self._processors_for(spec)
        name = task.shard.name
        if board is not None:
            board.reset.remote(name)

        done = 0

        def on_frames(count: int) -> None:
            nonlocal done
            done += count
            if board is not None:
                board.report.remote(name, count)
            inject(spec.chaos, name, done)

        result = render_shard(task, processors, on_frames=on_frames)
        self._frames.inc(result.frames, tags={"stage": "video"})
        self._shard_seconds.observe(result.seconds, tags={"stage": "video"})
        return dataclasses.replace(result, worker=ray.get_runtime_context().get_node_id())
