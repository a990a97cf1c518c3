"""The worker actor: a `UnitWorker` in a Ray process, plus what only Ray can tell it.

One actor class serves video shards and voice sentences of any job. It learns its device from
the GPU ids Ray assigned (``CUDA_VISIBLE_DEVICES`` is already set for it), hands that device to
every backend it builds, and keeps its models loaded between jobs. Per-node work metrics go out
through Ray's metrics agent (``ray_farm_worker_*``).
"""

from __future__ import annotations

import os
from typing import Any

import ray

from farm.devices import Device, WorkerResources
from farm.pipeline.storage import StorageAccess, check_access
from farm.pipeline.units import Unit, UnitResult, UnitWorker
from farm.render import ShardResult
from farm.spec import JobSpec


@ray.remote(num_cpus=0)
class ProgressBoard:
    """Frames done per active shard, written by workers and read by the job's runner."""

    def __init__(self) -> None:
        self.frames: dict[str, int] = {}

    def report(self, shard: str, frames: int) -> None:
        self.frames[shard] = frames

    def forget(self, shard: str) -> None:
        self.frames.pop(shard, None)

    def snapshot(self) -> dict[str, int]:
        return dict(self.frames)


class FarmWorker:
    """One worker process of a pool (created by the fleet, leased to jobs)."""

    def __init__(self, threads: int = 1) -> None:
        self.threads = max(1, threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(self.threads))
        import cv2

        cv2.setNumThreads(self.threads)
        context = ray.get_runtime_context()
        gpu_ids = context.get_accelerator_ids().get("GPU", [])
        self.node_id = context.get_node_id()
        self.device = Device.from_gpu_ids(gpu_ids)
        self.worker = UnitWorker(
            WorkerResources(device=self.device, threads=self.threads), where=self.node_id
        )
        from ray.util.metrics import Counter, Histogram

        self._frames = Counter(
            "farm_worker_frames", "Frames rendered by this worker", tag_keys=("stage",)
        )
        self._unit_seconds = Histogram(
            "farm_worker_shard_seconds",
            "Unit run time on this worker",
            boundaries=[0.5, 1, 2, 5, 10, 30, 60, 120, 300],
            tag_keys=("stage",),
        )

    def describe(self) -> dict[str, Any]:
        """Where this worker runs and on what (also its readiness probe)."""
        stats = self.worker.stats()
        return {
            "node_id": self.node_id,
            "pid": os.getpid(),
            "device": self.device.describe(),
            "gpu_ids": list(self.device.ids),
            "units": stats.units,
            "model_loads": stats.model_loads,
            "processor_builds": stats.processor_builds,
        }

    def check_storage(self, access: StorageAccess) -> list[tuple[str, str]]:
        return check_access(access)

    def run(self, spec: JobSpec, unit: Unit, board: Any = None) -> UnitResult:
        def on_frames(shard: str, frames: int) -> None:
            if board is not None:
                board.report.remote(shard, frames)

        context = ray.get_runtime_context()
        # ray.cancel sets a flag on a running actor task; the unit checks it between batches.
        result = self.worker.run(spec, unit, on_frames, should_stop=context.is_canceled)
        if isinstance(result, ShardResult):
            if board is not None:
                board.forget.remote(result.name)
            self._frames.inc(result.frames, tags={"stage": "video"})
            self._unit_seconds.observe(result.seconds, tags={"stage": "video"})
        else:
            self._frames.inc(1, tags={"stage": "voice"})  # one sentence
            self._unit_seconds.observe(result.seconds, tags={"stage": "voice"})
        return result
