"""The neural face models SyncFarm can use, and which of them this machine has.

None of these weights ship on PyPI and no model hub is reachable from a render node, so users
bring the files into a models directory (``--models-dir`` or ``$FARM_MODELS``). Each model here
names its file, the sha256 of the published file, its licence, where a user obtains it, and its
input/output contract (../shared/reference/faceswap.md §2). A ``manifest.json`` in the models
directory may add entries or override these (same name: its file and hash win), which is how a
fine-tuned or converted model, or a test's synthetic graph, is registered.

The pinned hashes are those of the files as their publishers released them, read from Git LFS
pointers and checksum lists in public projects (ReActor, VisoMaster, Hugging Face mirrors). Some
names cover two different files: FaceFusion's re-upload of inswapper_128.onnx (sha256
a290273e…, 555 303 150 bytes) is not insightface's original (e4a3f08c…, 554 253 681 bytes), and
FaceFusion's arcface_w600k_r50.onnx is not buffalo_l's w600k_r50.onnx. A user with the other file
registers it in manifest.json under the same name. No published hash was found for
simswap_256.onnx: it is checked by its contract only.

`model_statuses` says for every model whether its file is present, matches its hash, and can run
here (its runtime is installed; the providers onnxruntime offers), so `farm models list` and
backend ``auto`` see the same facts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from farm.errors import ChecksumMismatch, ModelError
from farm.fsutil import sha256_file
from farm.models import (
    MANIFEST_NAME,
    InputContract,
    ModelEntry,
    ModelManifest,
    builtin_face_manifest,
    load_manifest,
)

MODELS_ENV = "FARM_MODELS"
"""The environment variable naming the models directory when ``--models-dir`` is not given."""

Role = Literal["detector", "landmarker", "recogniser", "converter", "swapper", "parser", "enhancer"]

INSIGHTFACE_NONCOMMERCIAL = (
    "insightface pretrained models: non-commercial research use only (contact insightface for a "
    "commercial licence)"
)
INSIGHTFACE_PACKS = "https://github.com/deepinsight/insightface/tree/master/python-package"
FACEFUSION_ASSETS = (
    "https://github.com/facefusion/facefusion-assets/releases (models-3.0.0 and later)"
)


@dataclass(frozen=True)
class CatalogueModel:
    """One neural model the face stack knows how to call."""

    entry: ModelEntry
    role: Role
    commercial_use: bool
    """Whether the licence allows commercial use (a studio must know before a paid job)."""


def _onnx(
    name: str,
    file: str,
    sha256: str | None,
    *,
    role: Role,
    licence: str,
    source: str,
    commercial_use: bool,
    kind: str,
    input_size: tuple[int, int],
    normalisation: str,
    output: str,
    colour: Literal["rgb", "bgr"] = "rgb",
    points: int | None = None,
) -> CatalogueModel:
    entry = ModelEntry(
        name=name,
        file=file,
        sha256=sha256,
        licence=licence,
        source=source,
        contract=InputContract(
            runtime="onnxruntime",
            kind=kind,
            colour=colour,
            dtype="float32",
            layout="NCHW",
            input_size=input_size,
            normalisation=normalisation,
            output=output,
            points=points,
        ),
    )
    return CatalogueModel(entry=entry, role=role, commercial_use=commercial_use)


def neural_catalogue() -> tuple[CatalogueModel, ...]:
    """Every neural face model, in the order ``auto`` prefers them within a role."""
    return (
        _onnx(
            "scrfd_10g",
            "det_10g.onnx",
            "5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91",
            role="detector",
            licence=INSIGHTFACE_NONCOMMERCIAL,
            source=f"insightface buffalo_l pack ({INSIGHTFACE_PACKS})",
            commercial_use=False,
            kind="scrfd-detector",
            input_size=(640, 640),
            normalisation="(x-127.5)/128",
            output="9 tensors: scores, box distances and 5 keypoints at strides 8/16/32, "
            "2 anchors per cell",
        ),
        _onnx(
            "arcface_w600k_r50",
            "w600k_r50.onnx",
            "4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43",
            role="recogniser",
            licence=INSIGHTFACE_NONCOMMERCIAL,
            source=f"insightface buffalo_l pack ({INSIGHTFACE_PACKS})",
            commercial_use=False,
            kind="arcface-recogniser",
            input_size=(112, 112),
            normalisation="(x-127.5)/127.5",
            output="(N, 512) raw embedding of an arcface_112_v2-aligned crop",
        ),
        _onnx(
            "inswapper_128",
            "inswapper_128.onnx",
            "e4a3f08c753cb72d04e10aa0f7dbe3deebbf39567d4ead6dce08e98aa49e16af",
            role="swapper",
            licence=INSIGHTFACE_NONCOMMERCIAL,
            source="insightface inswapper (https://huggingface.co/deepinsight/inswapper)",
            commercial_use=False,
            kind="inswapper",
            input_size=(128, 128),
            normalisation="x/255",
            output="(1, 3, 128, 128) RGB in [0, 1]; source latent = L2(embedding · emap)",
        ),
        _onnx(
            "simswap_512",
            "simswap_unofficial_512.onnx",
            "fe805d1ce7d9e66322e2a8811f593a821e7d92f9ff861dd233794bdb2bb7a586",
            role="swapper",
            licence="SimSwap: CC BY-NC 4.0 (non-commercial); unofficial 512 export by FaceFusion",
            source=FACEFUSION_ASSETS,
            commercial_use=False,
            kind="simswap",
            input_size=(512, 512),
            normalisation="x/255",
            output="(1, 3, 512, 512) RGB in [0, 1]",
        ),
        _onnx(
            "simswap_256",
            "simswap_256.onnx",
            None,  # no published sha256 found for FaceFusion's file: checked by its contract only
            role="swapper",
            licence="SimSwap: CC BY-NC 4.0 (non-commercial)",
            source=FACEFUSION_ASSETS,
            commercial_use=False,
            kind="simswap",
            input_size=(256, 256),
            normalisation="x/255 then ImageNet mean/std",
            output="(1, 3, 256, 256) RGB in [0, 1]",
        ),
        _onnx(
            "crossface_simswap",
            "crossface_simswap.onnx",
            "6452a261ec30cc30afdbe4a426d82c3b10a476f2df794e3494071c02574e6829",
            role="converter",
            licence="FaceFusion model assets (converter trained for SimSwap): check its card",
            source=FACEFUSION_ASSETS,
            commercial_use=False,
            kind="embedding-converter",
            input_size=(1, 512),
            normalisation="raw w600k_r50 embedding",
            output="(1, 512) SimSwap identity latent (L2-normalised before use)",
        ),
        _onnx(
            "bisenet_resnet_34",
            "bisenet_resnet_34.onnx",
            "4a0b8c958a3c938913bd06a8365dbb3c8761afba6ecbf0d14b3b1f77eb230c96",
            role="parser",
            licence="MIT (FaceFusion's export of yakhyo/face-parsing); CelebAMask-HQ training "
            "data is non-commercial",
            source=FACEFUSION_ASSETS,
            commercial_use=False,
            kind="bisenet-parser",
            input_size=(512, 512),
            normalisation="x/255 then ImageNet mean/std",
            output="(1, 19, 512, 512) CelebAMask-HQ class logits",
        ),
        _onnx(
            "gfpgan_1.4",
            "gfpgan_1.4.onnx",
            "accc4757b26bdb89b32b4d3500d4f79c9dff97c1dd7c7104bf9dcb95e3311385",
            role="enhancer",
            licence="GFPGAN: Apache-2.0 code; check the weights' card before commercial use",
            source=FACEFUSION_ASSETS,
            commercial_use=False,
            kind="face-enhancer",
            input_size=(512, 512),
            normalisation="(x/255-0.5)/0.5",
            output="(1, 3, 512, 512) RGB in [-1, 1]",
        ),
        _onnx(
            "codeformer",
            "codeformer.onnx",
            "21710e7ab61c82683576c428e9c1b6fe1ed419586b7b39e394c3449c294b550f",
            role="enhancer",
            licence="CodeFormer: S-Lab License 1.0 (non-commercial)",
            source=FACEFUSION_ASSETS,
            commercial_use=False,
            kind="face-enhancer",
            input_size=(512, 512),
            normalisation="(x/255-0.5)/0.5, plus a fidelity weight",
            output="(1, 3, 512, 512) RGB in [-1, 1]",
        ),
        _onnx(
            "2dfan4",
            "2dfan4.onnx",
            "678c6fa539d52335a31c980feefdf4a6e02d781d83dce00af8a894f114557285",
            role="landmarker",
            licence="FAN (Adrian Bulat): BSD-3-Clause code; FaceFusion's export, check its card",
            source=FACEFUSION_ASSETS,
            commercial_use=False,
            kind="2dfan4-landmarker",
            input_size=(256, 256),
            normalisation="x/255",
            colour="bgr",
            output="(1, 68, 3) points in 64x64 heatmap space, and (1, 68, 64, 64) heatmaps",
            points=68,
        ),
    )


def models_directory(
    explicit: Path | None, environ: Mapping[str, str] | None = None
) -> Path | None:
    """The models directory: ``--models-dir`` if given, else ``$FARM_MODELS``, else none."""
    if explicit is not None:
        return explicit
    environ = os.environ if environ is None else environ
    value = environ.get(MODELS_ENV, "").strip()
    return Path(value).expanduser().resolve() if value else None


def neural_manifest(models_dir: Path | None) -> ModelManifest:
    """The catalogue rooted at ``models_dir``, with its ``manifest.json`` entries on top."""
    root = models_dir if models_dir is not None else Path("/nonexistent-farm-models")
    manifest = ModelManifest(root=root, models=tuple(m.entry for m in neural_catalogue()))
    if models_dir is not None and (models_dir / MANIFEST_NAME).is_file():
        manifest = manifest.merged(load_manifest(models_dir))
    return manifest


def full_face_manifest(models_dir: Path | None) -> ModelManifest:
    """The built-in face models (dlib, YuNet) and the neural catalogue with the models
    directory's own entries: everything a face stage may load, by name."""
    return builtin_face_manifest().merged(neural_manifest(models_dir))


Presence = Literal["present", "missing", "mismatch", "unpinned"]


@dataclass(frozen=True)
class ModelStatus:
    """What this machine knows about one model."""

    name: str
    role: str
    file: Path | None
    presence: Presence
    usable: bool
    """Present, matching its hash (or unpinned), and its runtime can run here."""
    providers: tuple[str, ...]
    licence: str
    source: str
    detail: str

    def line(self) -> str:
        return f"{self.name}: {self.detail}"


def _role_of(entry: ModelEntry) -> str:
    for model in neural_catalogue():
        if model.entry.name == entry.name:
            return model.role
    kind = entry.contract.kind
    for word, role in (
        ("detector", "detector"),
        ("predictor", "landmarker"),
        ("landmark", "landmarker"),
        ("descriptor", "recogniser"),
        ("recognis", "recogniser"),
        ("swap", "swapper"),
        ("pars", "parser"),
        ("enhanc", "enhancer"),
    ):
        if word in kind:
            return role
    return "custom"


def missing_message(entry: ModelEntry, path: Path) -> str:
    """One line naming the file, its hash, its licence and where to get it."""
    expected = entry.sha256 or "not pinned"
    return (
        f"model {entry.name!r} needs {path} (sha256 {expected}; licence: {entry.licence}); "
        f"get it from {entry.source} and put it in the models directory"
    )


def model_status(
    manifest: ModelManifest,
    name: str,
    providers: Sequence[str],
    *,
    check_hash: bool = True,
) -> ModelStatus:
    """Whether model ``name`` is present, verified and usable with these onnxruntime providers."""
    entry = manifest.entry(name)
    path = manifest.path(name) if entry.file is not None else None

    def status(presence: Presence, providers: tuple[str, ...], detail: str) -> ModelStatus:
        return ModelStatus(
            name=name,
            role=_role_of(entry),
            file=path,
            presence=presence,
            usable=presence in ("present", "unpinned") and bool(providers),
            providers=providers,
            licence=entry.licence,
            source=entry.source,
            detail=detail,
        )

    if path is None:
        return status("present", ("CPU",), f"built into {entry.contract.runtime}; runs on CPU")
    if not path.is_file():
        return status("missing", (), missing_message(entry, path))
    if check_hash and entry.sha256 is not None:
        found = sha256_file(path)
        if found != entry.sha256:
            return status(
                "mismatch",
                (),
                f"{path} has sha256 {found}, expected {entry.sha256}: a corrupt or different "
                f"file (licence: {entry.licence}; get it from {entry.source})",
            )
    runnable = tuple(providers) if entry.contract.runtime == "onnxruntime" else ("CPU",)
    where = ", ".join(p.removesuffix("ExecutionProvider") for p in runnable) or "nothing here"
    if entry.sha256 is not None:
        return status("present", runnable, f"verified; runs on {where}")
    return status("unpinned", runnable, f"present, no sha256 pinned to check; runs on {where}")


def model_statuses(
    manifest: ModelManifest, providers: Sequence[str], *, check_hash: bool = True
) -> list[ModelStatus]:
    """`model_status` of every model in the manifest, catalogue order first."""
    return [
        model_status(manifest, entry.name, providers, check_hash=check_hash)
        for entry in manifest.models
    ]


def require(manifest: ModelManifest, name: str) -> Path:
    """The verified file of ``name``: `ModelError` with the one-line fix when it is missing,
    `ChecksumMismatch` when it is another file."""
    entry = manifest.entry(name)
    path = manifest.path(name)
    if not path.is_file():
        raise ModelError(missing_message(entry, path))
    try:
        return manifest.verified_path(name)
    except ChecksumMismatch as exc:
        raise ChecksumMismatch(
            f"{exc.one_line()} (licence: {entry.licence}; get it from {entry.source})"
        ) from None
