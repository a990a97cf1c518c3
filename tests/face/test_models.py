"""The model manifest: built-in dlib entries, sha256 checks, models-directory manifests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from farm.errors import ChecksumMismatch, ModelError
from farm.models import (
    DLIB_DESCRIPTOR,
    DLIB_HOG,
    DLIB_LANDMARKS_68,
    ModelManifest,
    face_manifest,
    load_manifest,
    sha256_file,
)


def test_builtin_manifest_finds_dlib_weights_without_importing_the_package() -> None:
    code = (
        "import sys\n"
        "from farm.models import builtin_face_manifest, DLIB_LANDMARKS_68, DLIB_DESCRIPTOR\n"
        "m = builtin_face_manifest()\n"
        "assert m.path(DLIB_LANDMARKS_68).is_file() and m.path(DLIB_DESCRIPTOR).is_file()\n"
        "assert m.root.name == 'models'\n"
        "assert 'face_recognition_models' not in sys.modules\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_builtin_entries_carry_hash_licence_and_contract(manifest: ModelManifest) -> None:
    for name in (DLIB_LANDMARKS_68, DLIB_DESCRIPTOR):
        entry = manifest.entry(name)
        assert entry.sha256 is not None and len(entry.sha256) == 64
        assert entry.licence and entry.contract.output
    assert manifest.entry(DLIB_LANDMARKS_68).contract.points == 68
    assert manifest.entry(DLIB_DESCRIPTOR).contract.input_size == (150, 150)
    assert manifest.entry(DLIB_HOG).file is None
    assert manifest.verified_path(DLIB_DESCRIPTOR).is_file()


def _write_models_dir(root: Path, sha256: str) -> Path:
    (root / "tiny.onnx").write_bytes(b"not really a model")
    entry = {
        "name": "tiny",
        "file": "tiny.onnx",
        "sha256": sha256,
        "licence": "MIT",
        "source": "test",
        "contract": {"runtime": "onnxruntime", "kind": "detector", "output": "boxes"},
    }
    (root / "manifest.json").write_text(json.dumps({"models": [entry]}))
    return root


def test_models_dir_entries_extend_the_builtin_manifest(tmp_path: Path) -> None:
    digest = sha256_file(_write_models_dir(tmp_path, "0" * 64) / "tiny.onnx")
    _write_models_dir(tmp_path, digest)
    merged = face_manifest(tmp_path)
    assert merged.verified_path("tiny") == (tmp_path / "tiny.onnx").resolve()
    assert merged.entry(DLIB_LANDMARKS_68).sha256 is not None


def test_wrong_sha256_raises_checksum_mismatch(tmp_path: Path) -> None:
    manifest = load_manifest(_write_models_dir(tmp_path, "0" * 64))
    with pytest.raises(ChecksumMismatch, match="expected 0000"):
        manifest.verified_path("tiny")


def test_missing_and_unknown_models_are_model_errors(tmp_path: Path) -> None:
    manifest = load_manifest(_write_models_dir(tmp_path, "0" * 64))
    (tmp_path / "tiny.onnx").unlink()
    with pytest.raises(ModelError, match="missing"):
        manifest.verified_path("tiny")
    with pytest.raises(ModelError, match="known: tiny"):
        manifest.entry("nope")


def test_bad_manifest_json_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"models": [{"name": "x"}]}')
    with pytest.raises(ModelError, match=r"manifest\.json: invalid entry"):
        load_manifest(tmp_path)
    with pytest.raises(ModelError, match="is missing"):
        load_manifest(tmp_path / "nowhere")
