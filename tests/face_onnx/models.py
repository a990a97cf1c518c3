"""Models directories of synthetic graphs with the real models' signatures, for tests anywhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from farm.models import file_entry, write_manifest
from tests.face_onnx import graphs, graphs_swap


def register(root: Path, models: list[tuple[str, str, str]]) -> Path:
    """Write ``root/manifest.json`` naming (model name, file, contract kind) with their hashes."""
    write_manifest(
        root,
        [
            file_entry(root, name, file, kind=kind, licence="test graph", source="tests/face_onnx")
            for name, file, kind in models
        ],
    )
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
