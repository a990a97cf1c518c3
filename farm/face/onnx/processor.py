"""The neural face-swap frame processor (``onnx-swap``): the classic stage's tracking and face
selection, with a neural swapper rendering the faces.

Everything but the rendering is shared with ``classic-swap`` (`farm.face.processor`): detection
(YuNet or SCRFD), dlib landmarks, tracks, One-Euro smoothing, scene cuts, ``all``/``largest``/
``reference``. Each chosen face is handed to `NeuralFaceRenderer` as the five points of its
smoothed landmarks (eye centres, nose tip, mouth corners), so the aligned crop moves as steadily
as the track does.

The models load inside the worker, once per worker (its `ModelCache`), on the execution
providers `SessionFactory` picks for the worker's device; what they got is a note in the job
report. The identity latent is computed once per job from the identity pack's photos.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from farm.devices import WorkerResources
from farm.errors import MediaError, SpecError
from farm.face.catalogue import full_face_manifest
from farm.face.geometry import five_points
from farm.face.identity import IdentityPack, load_identity
from farm.face.onnx.arcface import ArcFaceRecogniser, normalise
from farm.face.onnx.enhancer import FaceEnhancer
from farm.face.onnx.parser import BiSeNetParser
from farm.face.onnx.renderer import NeuralFaceRenderer
from farm.face.onnx.runtime import ProviderPreference, SessionFactory, provider_preference
from farm.face.onnx.swappers import FaceSwapModel, open_swapper
from farm.face.processor import FaceSwapProcessor
from farm.face.settings import FaceSettings
from farm.face.stack_choice import (
    ENHANCER_MODELS,
    PARSER_MODELS,
    RECOGNISER,
    SIMSWAP_CONVERTER,
)
from farm.face.timing import StageTimer
from farm.face.tracking import TrackedFace
from farm.models import ModelManifest
from farm.processing import Frame

if TYPE_CHECKING:
    from farm.spec import JobSpec


def identity_embedding(
    pack: IdentityPack, recogniser: Callable[[], ArcFaceRecogniser], sha256: str | None
) -> np.ndarray:
    """The identity's raw ArcFace embedding: the direction of the mean of its photos' unit
    embeddings (each photo counts the same), at their mean length (SimSwap's converter takes
    raw embeddings). Taken from the pack when it stored them with this very model file
    (``sha256``), else computed from its crops."""
    raw = pack.stored_embeddings(RECOGNISER, sha256)
    if raw is None:
        model = recogniser()
        raw = [model.embed(face.image, five_points(face.landmarks)) for face in pack.faces]
    if not raw:
        raise MediaError(f"identity pack {pack.root} has no faces")
    direction = normalise(np.mean([normalise(r) for r in raw], axis=0))
    length = float(np.mean([np.linalg.norm(r) for r in raw]))
    return (direction * length).astype(np.float32)


def build_renderer(
    settings: FaceSettings,
    pack: IdentityPack,
    manifest: ModelManifest,
    sessions: SessionFactory,
    resources: WorkerResources,
    timer: StageTimer,
) -> NeuralFaceRenderer:
    """The renderer for a resolved ``onnx`` face stack, its models loaded once per worker."""
    name = settings.swapper
    if settings.backend != "onnx" or name is None:
        raise SpecError("the onnx-swap processor needs a resolved neural stack (--swapper NAME)")
    models = resources.models

    def verified(model: str) -> Path:
        return manifest.verified_path(model)

    recogniser_path = verified(RECOGNISER)

    def recogniser() -> ArcFaceRecogniser:
        return models.get(
            ("arcface", recogniser_path, sessions.preference),
            lambda: ArcFaceRecogniser(recogniser_path, sessions),
        )

    swapper_path = verified(name)
    converter = verified(SIMSWAP_CONVERTER) if name.startswith("simswap") else None
    swapper: FaceSwapModel = models.get(
        ("swapper", name, swapper_path, converter, sessions.preference),
        lambda: open_swapper(name, swapper_path, sessions, converter=converter),
    )
    latent = models.get(
        ("identity-latent", name, swapper_path, pack.root, pack.manifest.model_dump_json()),
        lambda: swapper.identity_latent(
            identity_embedding(pack, recogniser, manifest.entry(RECOGNISER).sha256)
        ),
    )
    parser = None
    if settings.face_parser is not None:
        parser_path = verified(PARSER_MODELS[settings.face_parser])
        parser = models.get(
            ("parser", parser_path, sessions.preference),
            lambda: BiSeNetParser(parser_path, sessions),
        )
    enhancer = None
    if settings.enhancer is not None:
        enhancer_name = settings.enhancer
        enhancer_path = verified(ENHANCER_MODELS[enhancer_name])
        enhancer = models.get(
            ("enhancer", enhancer_path, settings.enhancer_strength, sessions.preference),
            lambda: FaceEnhancer(
                enhancer_name, enhancer_path, sessions, strength=settings.enhancer_strength
            ),
        )
    return NeuralFaceRenderer(
        swapper,
        latent,
        parser=parser,
        enhancer=enhancer,
        colour_transfer=settings.colour_transfer,
        timer=timer,
    )


class OnnxSwapProcessor(FaceSwapProcessor):
    """``onnx-swap``: the classic stage's detection, tracking and selection; neural rendering."""

    name: ClassVar[str] = "onnx-swap"

    def __init__(
        self,
        settings: FaceSettings,
        pack: IdentityPack,
        manifest: ModelManifest,
        resources: WorkerResources | None = None,
        *,
        preference: ProviderPreference = "auto",
    ) -> None:
        resources = resources or WorkerResources()
        super().__init__(settings, pack, manifest, resources, preference=preference)
        sessions = SessionFactory(preference, resources)
        self._plan = sessions.plan()
        self._renderer = build_renderer(settings, pack, manifest, sessions, resources, self.timer)

    def notes(self) -> list[str]:
        """What the job report says about how this worker ran the models."""
        swapper = self.settings.swapper
        line = f"onnx-swap: {swapper} on {self._plan.describe()}"
        if self._plan.on_gpu:
            device = self._plan.providers[0]
            if isinstance(device, tuple):
                line += f" (device {device[1].get('device_id', 0)})"
        return [line] + ([f"onnx-swap: {self._plan.note}"] if self._plan.note else [])

    def _render_batch(
        self, frames: Sequence[Frame], chosen: list[list[TrackedFace]]
    ) -> list[Frame]:
        faces = [[five_points(face.landmarks) for face in faces] for faces in chosen]
        return self._renderer.render_batch(frames, faces)


def build_onnx_swap_processor(
    spec: JobSpec, resources: WorkerResources | None = None
) -> OnnxSwapProcessor:
    """The ``onnx-swap`` processor of a job whose face stack was resolved to ``onnx``."""
    settings = spec.face
    if settings is None:
        raise SpecError("the onnx-swap processor needs face settings (--identity DIR)")
    return OnnxSwapProcessor(
        settings,
        load_identity(settings.identity),
        full_face_manifest(spec.models_dir),
        resources,
        preference=provider_preference(spec.cluster.device),
    )
