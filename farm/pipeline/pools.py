"""How many workers of which shape a job asks for, from what the cluster has (pure, Ray-free).

    nodes (CPUs, GPUs each) + the job's settings  ->  device, and pools of (kind, shape, count)

* Video workers on GPU nodes take ``gpus_per_worker`` (fractional: 0.25 is four per GPU) and
  ``cpus_per_worker`` each; as many as both resources allow. Nodes without a GPU get CPU workers
  (``device='auto'``) or none (``device='cuda'``).
* Voice workers are placed first when their shape differs (a GPU voice backend on GPU nodes, say);
  when video and voice workers have the same shape they are one pool whose workers take both
  kinds of unit, so a small machine never splits its few CPUs between idle pools.
* ``video_workers`` caps the video pool (a batch gives each running job its share).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from farm.errors import SpecError
from farm.spec import ClusterSettings

PoolKind = Literal["video", "voice", "any"]


@dataclass(frozen=True, order=True)
class WorkerShape:
    """The resources one worker actor asks Ray for."""

    num_cpus: float
    num_gpus: float = 0.0

    def fits(self, cpus: float, gpus: float) -> int:
        """How many workers of this shape fit in the given free resources."""
        by_cpu = math.floor(cpus / self.num_cpus + 1e-9) if self.num_cpus > 0 else 1 << 30
        by_gpu = math.floor(gpus / self.num_gpus + 1e-9) if self.num_gpus > 0 else 1 << 30
        return max(0, min(by_cpu, by_gpu))


@dataclass(frozen=True)
class NodeResources:
    node_id: str
    cpus: float
    gpus: float = 0.0


@dataclass(frozen=True)
class PoolRequest:
    kind: PoolKind
    shape: WorkerShape
    count: int


@dataclass(frozen=True)
class PoolPlan:
    device: Literal["cpu", "cuda"]
    pools: tuple[PoolRequest, ...]
    warnings: tuple[str, ...] = ()


def _video_gpus(cluster: ClusterSettings, has_gpus: bool, gpu_capable: bool) -> float:
    """GPUs per video worker: 0 for CPU workers."""
    if cluster.device == "cpu":
        return 0.0
    if cluster.device in ("cuda", "tensorrt"):
        if not has_gpus:
            raise SpecError(
                f"device {cluster.device!r} but the cluster has no GPU; use --device auto or "
                "cpu, or join a cluster with GPU nodes (--address)"
            )
        return cluster.gpus_per_worker or 1.0
    if not has_gpus:
        return 0.0
    if cluster.gpus_per_worker > 0:
        return cluster.gpus_per_worker
    return 1.0 if gpu_capable else 0.0


def plan_pools(
    cluster: ClusterSettings,
    nodes: Sequence[NodeResources],
    *,
    video_units: int,
    voice_units: int,
    gpu_capable: bool = False,
) -> PoolPlan:
    """The pools a job leases. ``gpu_capable``: a backend of the job can use CUDA."""
    gpu_nodes = [n for n in nodes if n.gpus > 0]
    warnings: list[str] = []
    if cluster.device == "auto" and cluster.gpus_per_worker > 0 and not gpu_nodes:
        warnings.append(
            f"--gpus-per-worker {cluster.gpus_per_worker} but the cluster has no GPU: "
            "video workers run on CPUs"
        )
    if cluster.voice_gpus_per_worker > 0 and not gpu_nodes and voice_units:
        raise SpecError(
            "voice workers ask for GPUs (--voice-gpus-per-worker) but the cluster has none"
        )
    vgpu = _video_gpus(cluster, bool(gpu_nodes), gpu_capable)
    gpu_shape = WorkerShape(cluster.cpus_per_worker, vgpu)
    cpu_shape = WorkerShape(cluster.cpus_per_worker, 0.0)
    voice_shape = WorkerShape(cluster.voice_cpus_per_worker, cluster.voice_gpus_per_worker)
    free = {n.node_id: [n.cpus, n.gpus] for n in nodes}

    def place(shape: WorkerShape, want: int, node_ok: set[str]) -> int:
        """Reserve up to ``want`` workers, one node after another with the most room first."""
        placed = 0
        while placed < want:
            room = [
                (shape.fits(*free[n]), n)
                for n in sorted(free)
                if n in node_ok and shape.fits(*free[n])
            ]
            if not room:
                break
            _, node = max(room)
            free[node][0] -= shape.num_cpus
            free[node][1] -= shape.num_gpus
            placed += 1
        return placed

    all_nodes = set(free)
    gpu_ids = {n.node_id for n in gpu_nodes}
    cpu_ids = all_nodes - gpu_ids
    pools: list[PoolRequest] = []
    shared = voice_units > 0 and voice_shape in (gpu_shape if vgpu else cpu_shape,)
    if voice_units > 0 and not shared:
        want = min(cluster.voice_workers, voice_units)
        voice_nodes = gpu_ids if voice_shape.num_gpus > 0 else all_nodes
        placed = place(voice_shape, want, voice_nodes)
        if placed == 0:
            raise SpecError(
                f"no node has room for a voice worker ({voice_shape.num_cpus} CPU, "
                f"{voice_shape.num_gpus} GPU); lower --voice-gpus-per-worker or add nodes"
            )
        pools.append(PoolRequest("voice", voice_shape, placed))
    units = video_units + (voice_units if shared else 0)
    want = min(cluster.video_workers or 1 << 30, max(1, units))
    kind: PoolKind = "any" if shared else "video"
    if vgpu > 0:
        on_gpus = place(gpu_shape, want, gpu_ids)
        if on_gpus:
            pools.append(PoolRequest(kind, gpu_shape, on_gpus))
        if cluster.device == "auto":  # nodes without a GPU still render, on their CPUs
            on_cpus = place(cpu_shape, want - on_gpus, cpu_ids)
            if on_cpus:
                # Not "any": a shared pool's voice units asked for the GPU shape.
                pools.append(PoolRequest("video", cpu_shape, on_cpus))
    else:
        on_cpus = place(cpu_shape, want, all_nodes)
        if on_cpus:
            pools.append(PoolRequest(kind, cpu_shape, on_cpus))
    if not any(p.kind in ("video", "any") for p in pools):
        shape = gpu_shape if vgpu else cpu_shape
        raise SpecError(
            f"no node has room for a video worker ({shape.num_cpus} CPU, {shape.num_gpus} GPU)"
            + (" after the voice workers; lower --voice-workers" if voice_units else "")
            + "; lower --cpus-per-worker / --gpus-per-worker or add nodes"
        )
    # What the video workers really got: GPU nodes without CPU room leave only CPU workers.
    on_gpu = any(p.shape.num_gpus > 0 and p.kind != "voice" for p in pools)
    if vgpu > 0 and not on_gpu:
        warnings.append(
            "no GPU node has room for a video worker "
            f"({cluster.cpus_per_worker} CPU each): video workers run on CPUs"
        )
    return PoolPlan("cuda" if on_gpu else "cpu", tuple(pools), tuple(warnings))
