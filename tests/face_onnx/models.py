"""Models directories of synthetic graphs with the real models' signatures, for tests anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from farm.fsutil import sha256_file
from tests.face_onnx import graphs, graphs_swap


def register(root: Path, models: list[tuple[str, str, str]]) -> Path:
    """Write ``root/manifest.json`` naming (model name, file, contract kind) with their hashes."""
    entries = [
        {
            "name": name,
            "file": file,
            "sha256": sha256_file(root / file),
            "licence": "test graph",
            "source": "tests/face_onnx",
            "contract": {"runtime": "onnxruntime", "kind": kind, "output": "test"},
        }
        for name, file, kind in models
    ]
    (root / "manifest.json").write_text(json.dumps({"models": entries}), encoding="utf-8")
    return root


def identity_models_dir(root: Path) -> Path:
    """Identity inswapper_128 and simswap_512 (their output is their input crop), SimSwap's
    converter and a synthetic w600k_r50, registered under the real names."""
    graphs_swap.inswapper_128(root / "inswapper_identity.onnx", np.eye(512), identity=True)
    graphs_swap.simswap(root / "simswap512_identity.onnx", 512, identity=True)
    graphs_swap.converter(root / "converter.onnx", np.eye(512), np.zeros(512))
    graphs.arcface_graph(root / "arcface.onnx")
    return register(
        root,
        [
            ("inswapper_128", "inswapper_identity.onnx", "inswapper"),
            ("simswap_512", "simswap512_identity.onnx", "simswap"),
            ("crossface_simswap", "converter.onnx", "embedding-converter"),
            ("arcface_w600k_r50", "arcface.onnx", "arcface-recogniser"),
        ],
    )
