"""Frame processors: the per-frame stages a video worker runs over one shard.

A shard worker decodes frames ``[context_start, stop)`` of the source, hands them to each processor
in batches, in order, and keeps the outputs for ``[start, stop)`` only: frames before ``start`` are
context (a forced, non-scene split gives the next shard a few frames of the previous one so that
trackers warm up), and are never emitted twice.

::

    source frames   ... | 96 97 98 99 | 100 101 102 ... 199 | 200 ...
    shard 1                context     | start          stop)
                          (decoded, not emitted)

Processors see BGR ``uint8`` arrays of shape ``(height, width, 3)``. A processor that leaves a frame
unchanged returns the *same object*; the worker then re-encodes the decoded frame itself, so a frame
that no stage touched goes out bit-exact, with no RGB round trip.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

import numpy as np

from farm.devices import WorkerResources
from farm.errors import SpecError

if TYPE_CHECKING:
    from farm.spec import JobSpec

Frame = np.ndarray
"""One BGR uint8 frame, shape (height, width, 3)."""


@dataclass(frozen=True)
class ShardContext:
    """What a processor knows about the shard it is about to process."""

    job_id: str
    shard_index: int
    context_start: int
    """First decoded frame index (``<= start``); frames before ``start`` are context only."""
    start: int
    """First emitted frame index (inclusive)."""
    stop: int
    """End of the shard (exclusive)."""
    fps: Fraction
    width: int
    height: int
    starts_at_scene_cut: bool
    """True when ``start`` is a real scene cut: trackers must not carry anything across it."""


@runtime_checkable
class FrameProcessor(Protocol):
    """A per-frame stage. One instance serves one shard at a time, then the next.

    Required methods: ``prepare`` (reset per-shard state), ``process`` (one batch, in frame order)
    and ``close`` (release resources once the worker is done with the processor).
    """

    name: ClassVar[str]
    needs_pixels: ClassVar[bool]
    """False for stages that never touch pixels; the worker then skips the BGR conversion."""

    def prepare(self, context: ShardContext) -> None:
        """Reset per-shard state (tracks, smoothing) before the first batch of a shard."""

    def process(self, frames: Sequence[Frame], indices: Sequence[int]) -> list[Frame]:
        """Process consecutive frames; return one frame per input (the same object if unchanged)."""
        ...

    def close(self) -> None:
        """Release models and sessions."""


@runtime_checkable
class LumaMarker(Protocol):
    """Optional: a stage that only shifts luma (the watermark) and can work on the Y plane of
    the frame about to be encoded, so untouched frames never take the lossy RGB round trip."""

    def mark_luma(self, luma: np.ndarray, bit_depth: int) -> np.ndarray:
        """Return the marked luma plane (same shape and dtype)."""
        ...


@runtime_checkable
class ReportsNotes(Protocol):
    """Optional: a stage that says how it ran (the execution providers its models got, a
    fallback to the CPU) so the job report can say it."""

    def notes(self) -> list[str]:
        """Short sentences, the same on every shard of a job on the same kind of worker."""
        ...


class IdentityProcessor:
    """Passes every frame through unchanged (``farm run --passthrough``)."""

    name: ClassVar[str] = "identity"
    needs_pixels: ClassVar[bool] = False

    def prepare(self, context: ShardContext) -> None:
        return None

    def process(self, frames: Sequence[Frame], indices: Sequence[int]) -> list[Frame]:
        return list(frames)

    def close(self) -> None:
        return None


ProcessorFactory = Callable[["JobSpec", WorkerResources], FrameProcessor]
"""Builds one processor for a job on a worker: the worker's device and model cache come along."""


def _identity_factory(spec: JobSpec, resources: WorkerResources) -> FrameProcessor:
    return IdentityProcessor()


def _classic_swap_factory(spec: JobSpec, resources: WorkerResources) -> FrameProcessor:
    # Imported on first use: the face stack loads dlib and its models.
    from farm.face.processor import build_face_swap_processor

    return build_face_swap_processor(spec, resources)


def _onnx_swap_factory(spec: JobSpec, resources: WorkerResources) -> FrameProcessor:
    # Imported on first use: onnxruntime, insightface and the user's model files.
    from farm.face.onnx.processor import build_onnx_swap_processor

    return build_onnx_swap_processor(spec, resources)


def _watermark_factory(spec: JobSpec, resources: WorkerResources) -> FrameProcessor:
    from farm.provenance.video_watermark import build_watermark_processor

    return build_watermark_processor(spec)


def processor_factories() -> dict[str, ProcessorFactory]:
    """The registry of frame processors by name (a fresh dict: no module-level mutable state)."""
    return {
        "identity": _identity_factory,
        "classic-swap": _classic_swap_factory,
        "onnx-swap": _onnx_swap_factory,
        "watermark": _watermark_factory,
    }


def gpu_capable_processors() -> frozenset[str]:
    """Processors with a CUDA path (they take `WorkerResources.device`). The classic swap, the
    identity and the watermark run on the CPU; the neural swap runs where onnxruntime can."""
    return frozenset({"onnx-swap"})


def chain_can_use_gpu(spec: JobSpec) -> bool:
    """Whether any frame processor of the job can use a GPU (``device='auto'`` asks for one)."""
    return bool(gpu_capable_processors() & set(spec.processor_chain()))


def build_processors(
    spec: JobSpec,
    resources: WorkerResources | None = None,
    *,
    factories: dict[str, ProcessorFactory] | None = None,
) -> list[FrameProcessor]:
    """Instantiate the processor chain a job asks for, in order, on a worker's resources."""
    factories = factories if factories is not None else processor_factories()
    resources = resources or WorkerResources()
    chain: list[FrameProcessor] = []
    for name in spec.processor_chain():
        try:
            factory = factories[name]
        except KeyError:
            known = ", ".join(sorted(factories))
            raise SpecError(
                f"unknown frame processor {name!r}; known processors: {known}"
            ) from None
        chain.append(factory(spec, resources))
    return chain
