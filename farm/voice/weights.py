"""User-supplied voice model files: found by path or in a models directory, verified, opened once.

No voice weights ship on PyPI and nothing is downloaded: the user brings each file (an RVC
generator they trained, a content encoder, RMVPE, an MDX-Net separator). A setting names it by
absolute path, or by a file name or manifest name inside the models directory (the setting's own
``models_dir``, else ``$FARM_MODELS``). Its sha256 comes from the setting, else from the models
directory's ``manifest.json`` entry, else from the published hashes known here; a file with no
known hash is refused, so a job never runs weights nobody pinned.

Verification hashes the file once per worker (keyed by path, size and mtime in the worker's
`ModelCache`); sessions are cached there by sha256, so every sentence of every job reuses them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from farm.devices import WorkerResources
from farm.errors import ChecksumMismatch, ModelError, SpecError
from farm.face.catalogue import MODELS_ENV, missing_message, models_directory
from farm.face.onnx.runtime import SessionFactory, provider_preference
from farm.fsutil import sha256_file
from farm.models import MANIFEST_NAME, InputContract, ModelEntry, load_manifest


@dataclass(frozen=True)
class VoiceModel:
    """One model file a voice backend needs, as its settings name it."""

    name: str
    """What the model is (in messages), e.g. ``rvc-content-encoder``."""
    file: str
    """The setting's value: an absolute path, or a file or manifest name in the models dir."""
    sha256: str | None
    setting: str
    """The setting that names the file, e.g. ``voice.rvc.encoder`` (in messages)."""
    sha256_setting: str
    """The setting that pins its hash, e.g. ``voice.rvc.encoder_sha256``."""
    licence: str
    source: str
    kind: str
    output: str = "as its model card says"
    known: Mapping[str, str] = field(default_factory=dict)
    """Published file name → sha256, used when neither the setting nor the manifest pins one."""


def _manifest_entry(model: VoiceModel, root: Path | None) -> tuple[Path, str | None] | None:
    """The models directory's manifest entry for this file (by name or file), if any."""
    if root is None or not (root / MANIFEST_NAME).is_file():
        return None
    manifest = load_manifest(root)
    for entry in manifest.models:
        if entry.file is not None and model.file in (entry.name, entry.file):
            return manifest.path(entry.name), entry.sha256
    return None


def locate(model: VoiceModel, models_dir: Path | None) -> tuple[Path, str | None]:
    """Where the file is and the sha256 it must have (None: nobody pinned one)."""
    root = models_directory(models_dir)
    found = _manifest_entry(model, root)
    if found is not None:
        path, pinned = found
        return path, model.sha256 or pinned or model.known.get(path.name)
    file = Path(model.file).expanduser()
    if file.is_absolute():
        path = file
    elif root is None:
        raise ModelError(
            f"{model.setting} is {model.file!r}, a name, but no models directory is set: give "
            f"--models-dir or ${MODELS_ENV}, or an absolute path"
        )
    else:
        path = root / file
    return path, model.sha256 or model.known.get(path.name)


def verified_file(
    model: VoiceModel, models_dir: Path | None, resources: WorkerResources
) -> tuple[Path, str]:
    """The model's file and sha256 after checking it exists and matches the pinned hash.

    `ModelError` names the missing file and where to get it; `SpecError` asks for a hash when
    none is pinned; `ChecksumMismatch` gives expected versus found.
    """
    path, sha256 = locate(model, models_dir)
    entry = ModelEntry(
        name=model.name,
        file=str(path),
        sha256=sha256,
        licence=model.licence,
        source=model.source,
        contract=InputContract(runtime="onnxruntime", kind=model.kind, output=model.output),
    )
    if not path.is_file():
        raise ModelError(f"{missing_message(entry, path)} (or point {model.setting} at it)")
    if sha256 is None:
        raise SpecError(
            f"{path} ({model.name}) has no pinned sha256: set {model.sha256_setting} to the "
            f"value of `sha256sum {path}` or register the file in the models directory's "
            f"{MANIFEST_NAME}"
        )
    stat = path.stat()
    key = ("voice-verified", str(path.resolve()), stat.st_size, stat.st_mtime_ns, sha256)

    def check() -> str:
        found = sha256_file(path)
        if found != sha256:
            raise ChecksumMismatch(
                f"model file {path} ({model.setting}) has sha256 {found}, expected {sha256}: a "
                f"corrupt or different file (licence: {model.licence}; get it from "
                f"{model.source})"
            )
        return found

    resources.models.get(key, check)
    return path, sha256


def cached_session(
    path: Path, sha256: str, sessions: SessionFactory, resources: WorkerResources
) -> Any:
    """An onnxruntime session for the verified file, opened once per worker and device plan."""
    names = sessions.plan().names
    return resources.models.get(("onnx-session", sha256, names), lambda: sessions.open(path))


def session_factory(
    device: str, resources: WorkerResources, sessions: SessionFactory | None
) -> SessionFactory:
    """``sessions`` when a caller (a test) gives one, else one for the worker's device."""
    if sessions is not None:
        return sessions
    return SessionFactory(provider_preference(device), resources)
