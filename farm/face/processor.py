"""The classic face-swap frame processor (``classic-swap``), built from a `JobSpec`.

One instance serves one shard at a time. ``prepare`` resets the tracker; frames before
``context.start`` only warm the tracker up and come back untouched (they are never emitted), and
when ``context.starts_at_scene_cut`` is set nothing seen in them is carried past ``start``.
A frame with no face to swap is returned as the same object; a swapped frame is a copy whose
face regions (and only those) were rewritten.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from farm.devices import WorkerResources
from farm.errors import SpecError
from farm.face.catalogue import full_face_manifest
from farm.face.detector_choice import build_detector, dlib_stack, hog_box_relation
from farm.face.dlib_stack import DlibFaceStack, descriptor_distance
from farm.face.identity import IdentityPack, analyse_source_face, load_identity, read_image
from farm.face.onnx.runtime import ProviderPreference, provider_preference
from farm.face.settings import FaceSettings
from farm.face.swap import ClassicSwapper
from farm.face.timing import StageTimer
from farm.face.tracking import FaceTracker, TrackedFace
from farm.models import ModelManifest
from farm.processing import Frame, ShardContext
from farm.voice.speakers import ObservedFace

if TYPE_CHECKING:
    from farm.spec import JobSpec

logger = logging.getLogger(__name__)

REFERENCE_DESCRIPTOR_EVERY = 50
"""faces='reference': re-describe each track this often (frames) and average."""
LARGEST_HYSTERESIS = 1.2
"""faces='largest': another face must be this much larger to take over."""


class FaceSwapProcessor:
    """Detect, track, select and swap faces in BGR frames."""

    name: ClassVar[str] = "classic-swap"
    needs_pixels: ClassVar[bool] = True

    def __init__(
        self,
        settings: FaceSettings,
        pack: IdentityPack,
        manifest: ModelManifest,
        resources: WorkerResources | None = None,
        *,
        preference: ProviderPreference = "auto",
    ) -> None:
        self.settings = settings
        self.pack = pack
        self.timer = StageTimer()
        resources = resources or WorkerResources()
        # dlib runs on the CPU whatever device the worker has; the models load once per worker.
        self._stack = dlib_stack(manifest, resources)
        self.detector = build_detector(settings, manifest, resources, preference=preference)
        self._reference: np.ndarray | None = None
        if settings.faces == "reference":
            if settings.reference is None:
                raise SpecError("faces='reference' needs a reference image (--reference IMG)")
            self._reference = reference_descriptor(self._stack, settings.reference)
        self._tracker = FaceTracker(
            self.detector,
            self._stack,
            hog_box=hog_box_relation(self.detector),
            detect_every=settings.detect_every,
            detect_max_side=settings.detect_max_side,
            max_gap=settings.max_gap_frames,
            min_cutoff=settings.smoothing_min_cutoff,
            beta=settings.smoothing_beta,
            descriptor_every=REFERENCE_DESCRIPTOR_EVERY if settings.faces == "reference" else 0,
            timer=self.timer,
        )
        self._context: ShardContext | None = None
        self._chosen: int | None = None

    @cached_property
    def _swapper(self) -> ClassicSwapper:
        """The classic renderer, built on first use: a neural renderer (`OnnxSwapProcessor`)
        or a speaker analysis (`observe`) never draws with it."""
        settings = self.settings
        return ClassicSwapper(
            self.pack.faces,
            colour_transfer=settings.colour_transfer,
            poisson=settings.poisson,
            keep_mouth=settings.keep_mouth,
            mask_blur=settings.mask_blur,
            shape_transfer=settings.shape_transfer,
            timer=self.timer,
        )

    def prepare(self, context: ShardContext) -> None:
        self._context = context
        self._tracker.fps = float(context.fps) if context.fps > 0 else 25.0
        self._tracker.reset()
        self._chosen = None

    def process(self, frames: Sequence[Frame], indices: Sequence[int]) -> list[Frame]:
        if len(frames) != len(indices):
            raise ValueError(f"{len(frames)} frames but {len(indices)} indices")
        if not frames:
            return []
        context = self._context
        start = context.start if context is not None else indices[0]
        if context is not None and context.starts_at_scene_cut and indices[0] < start:
            # Context frames from before a real cut show another scene: never track them.
            warm = sum(1 for index in indices if index < start)
            return list(frames[:warm]) + self.process(frames[warm:], indices[warm:])
        tracked = self._tracker.track_batch(frames, indices)
        chosen = [
            self._select(faces) if index >= start else []
            for index, faces in zip(indices, tracked, strict=True)
        ]
        return self._render_batch(frames, chosen)

    def _render_batch(
        self, frames: Sequence[Frame], chosen: list[list[TrackedFace]]
    ) -> list[Frame]:
        """Each frame with its chosen faces swapped (a neural renderer batches them)."""
        return [
            self._render(frame, faces) if faces else frame
            for frame, faces in zip(frames, chosen, strict=True)
        ]

    def observe(self, frames: Sequence[Frame], indices: Sequence[int]) -> list[list[ObservedFace]]:
        """Every tracked face of each frame and whether the swap selects it (nothing drawn)."""
        observed = []
        for faces in self._tracker.track_batch(frames, indices):
            chosen = {face.track.track_id for face in self._select(faces)}
            observed.append(
                [
                    ObservedFace(f.track.track_id, f.track.track_id in chosen, f.landmarks)
                    for f in faces
                ]
            )
        return observed

    def start_range(self, start: int, stop: int, fps: float) -> None:
        """Forget the tracks: frames [start, stop) of one scene follow (`observe`)."""
        self._tracker.fps = fps if fps > 0 else 25.0
        self._tracker.reset()
        self._context = None
        self._chosen = None

    def close(self) -> None:
        """Forget the shard; the models stay loaded for the next shard until the object goes."""
        self._tracker.reset()
        self._context = None

    def _select(self, faces: list[TrackedFace]) -> list[TrackedFace]:
        mode = self.settings.faces
        if mode == "all" or not faces:
            return faces
        if mode == "largest":
            areas = {f.track.track_id: _area(f) for f in faces}
            best = max(faces, key=lambda f: areas[f.track.track_id])
            current = self._chosen
            if (
                current in areas
                and areas[best.track.track_id] < LARGEST_HYSTERESIS * areas[current]
            ):
                best = next(f for f in faces if f.track.track_id == current)
            self._chosen = best.track.track_id
            return [best]
        chosen = []
        for face in faces:
            descriptor = face.track.descriptor
            if descriptor is not None and self._reference is not None:
                distance = descriptor_distance(descriptor, self._reference)
                face.track.selected = distance < self.settings.reference_threshold
            if face.track.selected:
                chosen.append(face)
        return chosen

    def _render(self, frame: Frame, faces: list[TrackedFace]) -> Frame:
        """A copy of ``frame`` with the faces swapped, or ``frame`` itself if none could be."""
        with self.timer("blend"):
            out = frame.copy()
        changed = False
        for face in faces:
            changed |= self._swapper.swap(
                out,
                face.landmarks,
                mean_shape=face.track.mean_shape,
                smooth_colour=face.track.smooth_colour,
            )
        return out if changed else frame


def _area(face: TrackedFace) -> float:
    x0, y0 = face.landmarks.min(axis=0)
    x1, y1 = face.landmarks.max(axis=0)
    return float((x1 - x0) * (y1 - y0))


def reference_descriptor(stack: DlibFaceStack, image: Path) -> np.ndarray:
    """The descriptor of the (largest) face in a reference image."""
    face, _, warnings = analyse_source_face(stack, read_image(image), image.name)
    for warning in warnings:
        logger.warning("reference image: %s", warning)
    return face.descriptor


def build_face_swap_processor(
    spec: JobSpec, resources: WorkerResources | None = None
) -> FaceSwapProcessor:
    """The ``classic-swap`` processor for a job: loads the identity pack and the face models."""
    settings = spec.face
    if settings is None:
        raise SpecError("the classic-swap processor needs face settings (--identity DIR)")
    return build_from_settings(
        settings,
        models_dir=spec.models_dir,
        resources=resources,
        preference=provider_preference(spec.cluster.device),
    )


def build_from_settings(
    settings: FaceSettings,
    *,
    models_dir: Path | None = None,
    resources: WorkerResources | None = None,
    preference: ProviderPreference = "auto",
) -> FaceSwapProcessor:
    """Like `build_face_swap_processor`, from the face settings alone (tests, benchmarks)."""
    return FaceSwapProcessor(
        settings,
        load_identity(settings.identity),
        full_face_manifest(models_dir),
        resources,
        preference=preference,
    )


def shard_context(
    start: int,
    stop: int,
    width: int,
    height: int,
    *,
    fps: Fraction = Fraction(25),
    cut: bool = True,
) -> ShardContext:
    """A one-shard context for running the processor outside the farm (tests, benchmarks)."""
    return ShardContext(
        job_id="local",
        shard_index=0,
        context_start=start,
        start=start,
        stop=stop,
        fps=fps,
        width=width,
        height=height,
        starts_at_scene_cut=cut,
    )
