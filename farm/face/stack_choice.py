"""Which face stack a job runs: ``auto`` resolved once, when the job is planned.

The choice depends on which model files the models directory holds, so it is made on the
driver before the job's identity is computed: the resolved settings (``classic`` or ``onnx``,
the swapper, the detector) are what the job hashes, stores in its ledger and hands to every
worker. Two runs of the same job therefore render with the same models even when a file is
added to the models directory in between (a resume keeps its ledger's choice), and the report
says what was chosen and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from farm.errors import ModelError, SpecError
from farm.face.catalogue import model_status, neural_manifest, require
from farm.face.settings import FaceSettings, SwapperName
from farm.models import ModelManifest

if TYPE_CHECKING:
    from farm.face.identity import FaceEmbedder

RECOGNISER = "arcface_w600k_r50"
"""Every neural swapper takes the identity as a w600k_r50 ArcFace embedding."""
SCRFD = "scrfd_10g"
SWAPPER_PREFERENCE: tuple[SwapperName, ...] = ("inswapper_128", "simswap_512", "simswap_256")
"""``auto``'s order: inswapper carries identity best in FaceFusion's and our users' experience;
SimSwap 512 is sharper than 256."""
SIMSWAP_CONVERTER = "crossface_simswap"
PARSER_MODELS = {"bisenet": "bisenet_resnet_34"}
ENHANCER_MODELS = {"gfpgan_1.4": "gfpgan_1.4", "codeformer": "codeformer"}


@dataclass(frozen=True)
class FaceStackChoice:
    """The resolved face settings and, in words, why."""

    settings: FaceSettings
    reason: str

    @property
    def models(self) -> tuple[str, ...]:
        return required_models(self.settings)


def swapper_models(swapper: SwapperName) -> tuple[str, ...]:
    """The model files a swapper needs besides itself: the recogniser, SimSwap's converter."""
    extra = (SIMSWAP_CONVERTER,) if swapper.startswith("simswap") else ()
    return (swapper, RECOGNISER, *extra)


def required_models(settings: FaceSettings) -> tuple[str, ...]:
    """Every catalogue model a resolved face stack loads."""
    names: list[str] = []
    if settings.backend == "onnx" and settings.swapper is not None:
        names += swapper_models(settings.swapper)
    if settings.detector == "scrfd":
        names.append(SCRFD)
    if settings.face_parser is not None:
        names.append(PARSER_MODELS[settings.face_parser])
    if settings.enhancer is not None:
        names.append(ENHANCER_MODELS[settings.enhancer])
    return tuple(names)


def _present(manifest: ModelManifest, names: tuple[str, ...]) -> bool:
    """All of ``names`` are present and match their pinned hash (onnxruntime is core)."""
    return all(model_status(manifest, name, ("CPUExecutionProvider",)).usable for name in names)


def resolve_face_stack(settings: FaceSettings, models_dir: Path | None) -> FaceStackChoice:
    """Resolve ``auto`` (backend, swapper, detector) from the models present; check that every
    model the result needs is there and is the right file (`ModelError` naming the file, its
    sha256, licence and where to get it)."""
    manifest = neural_manifest(models_dir)
    neural_only = [
        flag
        for flag, value in (
            ("--face-parser", settings.face_parser),
            ("--enhancer", settings.enhancer),
            ("--swapper", settings.swapper),
        )
        if value is not None
    ]
    backend, swapper = settings.backend, settings.swapper
    reasons: list[str] = []
    if backend == "classic" and neural_only:
        raise SpecError(
            f"{', '.join(neural_only)} work on a neural swap: use --face-backend onnx (or auto) "
            "or drop them"
        )
    if backend == "auto":
        if swapper is not None:
            backend = "onnx"
            reasons.append(f"--swapper {swapper} asks for the neural backend")
        else:
            complete = [s for s in SWAPPER_PREFERENCE if _present(manifest, swapper_models(s))]
            if complete:
                backend, swapper = "onnx", complete[0]
                reasons.append(f"auto: {swapper} and its models are in {models_dir}")
            elif neural_only:
                raise ModelError(
                    f"{', '.join(neural_only)} need a neural swapper, but the models directory "
                    f"({models_dir or 'none: set --models-dir or $FARM_MODELS'}) has none of "
                    f"{', '.join(SWAPPER_PREFERENCE)} with {RECOGNISER}; `farm models list` "
                    "shows what is missing"
                )
            else:
                backend = "classic"
                where = models_dir or "no models directory (--models-dir, $FARM_MODELS)"
                reasons.append(f"auto: no neural swapper in {where}, so the classic swap")
    if backend == "onnx" and swapper is None:
        complete = [s for s in SWAPPER_PREFERENCE if _present(manifest, swapper_models(s))]
        swapper = complete[0] if complete else SWAPPER_PREFERENCE[0]
        reasons.append(f"--face-backend onnx with {swapper}")
    detector = settings.detector
    if detector == "auto":
        if _present(manifest, (SCRFD,)):
            detector = "scrfd"
            reasons.append("detector auto: SCRFD is present")
        else:
            detector = "yunet"
            reasons.append("detector auto: YuNet (no SCRFD model present)")
    resolved = settings.model_copy(
        update={"backend": backend, "swapper": swapper, "detector": detector}
    )
    for name in required_models(resolved):
        require(manifest, name)
    return FaceStackChoice(resolved, "; ".join(reasons) or "as asked")


def known_swappers() -> tuple[str, ...]:
    return get_args(SwapperName)


def pack_embedder(models_dir: Path | None) -> FaceEmbedder | None:
    """ArcFace for `farm identity create` when the models directory holds the verified
    w600k_r50 file (its embeddings then go into the pack); None otherwise."""
    manifest = neural_manifest(models_dir)
    if models_dir is None or not _present(manifest, (RECOGNISER,)):
        return None
    from farm.face.onnx.arcface import ArcFaceRecogniser, PackEmbedder
    from farm.face.onnx.runtime import SessionFactory

    path = require(manifest, RECOGNISER)
    recogniser = ArcFaceRecogniser(path, SessionFactory("cpu"))
    return PackEmbedder(recogniser, manifest.entry(RECOGNISER).sha256 or "", RECOGNISER)
