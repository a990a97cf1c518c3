"""Where a worker's backends run: the device Ray gave the worker, and the models it has loaded.

A worker learns its device once, when it starts (under Ray from the GPU ids assigned to the actor;
in-process it is the CPU), and hands the same `WorkerResources` to every backend it builds. Ray
sets ``CUDA_VISIBLE_DEVICES`` to the assigned ids, so inside the process the visible devices are
numbered from 0: `Device.local_ids` is what CUDA libraries take, `Device.ids` what Ray assigned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from farm.models import ModelCache

DeviceKind = Literal["cpu", "cuda"]


@dataclass(frozen=True)
class Device:
    """A worker's compute device: the CPU, or the CUDA GPUs assigned to it."""

    kind: DeviceKind = "cpu"
    ids: tuple[str, ...] = ()
    """GPU ids as the cluster assigned them (``ray.get_gpu_ids``); empty on the CPU."""

    @classmethod
    def cpu(cls) -> Device:
        return cls()

    @classmethod
    def from_gpu_ids(cls, ids: Sequence[object]) -> Device:
        """The device of a worker given these GPU ids (none: the CPU)."""
        clean = tuple(str(i) for i in ids)
        return cls("cuda", clean) if clean else cls()

    @property
    def local_ids(self) -> tuple[int, ...]:
        """The device ordinals a CUDA library sees in this process (0..n-1)."""
        return tuple(range(len(self.ids)))

    def describe(self) -> str:
        return f"cuda:{','.join(self.ids)}" if self.kind == "cuda" else "cpu"

    def onnx_providers(self) -> list[Any]:
        """onnxruntime execution providers, CUDA first when there is a GPU; the CPU always last,
        so a session still opens where the CUDA provider is missing."""
        if self.kind == "cuda" and self.ids:
            return [
                ("CUDAExecutionProvider", {"device_id": self.local_ids[0]}),
                "CPUExecutionProvider",
            ]
        return ["CPUExecutionProvider"]


@dataclass
class WorkerResources:
    """What a worker gives each backend it builds: its device, threads and loaded models."""

    device: Device = field(default_factory=Device.cpu)
    threads: int = 1
    models: ModelCache = field(default_factory=lambda: ModelCache())
