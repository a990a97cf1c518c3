"""What every synthetic ONNX test graph needs: saving a checked model, and constant nodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

OPSET = 13


def save_graph(graph: onnx.GraphProto, path: Path, metadata: dict[str, str] | None = None) -> Path:
    """``graph`` as a checked opset-13 model at ``path``, with ``metadata`` as its properties."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def const(name: str, value: np.ndarray) -> onnx.NodeProto:
    """A Constant node whose output is called ``name``."""
    return helper.make_node(
        "Constant", [], [name], name=f"const_{name}", value=numpy_helper.from_array(value, name)
    )
