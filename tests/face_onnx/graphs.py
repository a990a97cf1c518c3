"""Tiny synthetic ONNX graphs with the real face models' signatures, and designed outputs.

Each builder writes a graph (a few KB, opset 13, no weights) whose input and output names,
ranks, shapes and dtypes are those of the real file, so insightface's classes and our wrappers
read them exactly as they read the real model, while the outputs are chosen so decoding can be
checked by hand:

=============  ==========================================  =====================================
real file      input                                       outputs
=============  ==========================================  =====================================
det_10g        ``input.1`` float32 [1, 3, '?', '?']        score 448/471/494 [N_s, 1], bbox
                                                           451/474/497 [N_s, 4], kps 454/477/500
                                                           [N_s, 10] for strides 8/16/32
det_2.5g       same                                        446/466/486, 449/469/489, 452/472/492
w600k_r50      ``input.1`` float32 ['None', 3, 112, 112]   ``683`` float32 [1, 512]
2dfan4         ``input`` float32 [1, 3, 256, 256]          landmarks [1, 68, 3], heatmaps
                                                           [1, 68, 64, 64]
2d106det       ``data`` float32 [1, 3, 192, 192]           ``fc1`` float32 [1, 212]
=============  ==========================================  =====================================

``N_s = (H / s) * (W / s) * 2``; rows are cell-major with 2 anchors per cell (row = 2 * (y * W/s
+ x) + anchor). The SCRFD and ArcFace names come from published dumps of buffalo_l's files; the
2DFAN4 output names are not pinned anywhere (FaceFusion runs it with ``output_names=None``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from tests.onnx_graphs import const as _const
from tests.onnx_graphs import save_graph as _save

DET_10G_OUTPUTS = ("448", "471", "494", "451", "474", "497", "454", "477", "500")
DET_2_5G_OUTPUTS = ("446", "466", "486", "449", "469", "489", "452", "472", "492")
STRIDES = (8, 16, 32)


def _channel_mean(source: str, channel: int, out: str) -> list[onnx.NodeProto]:
    """Nodes computing the scalar mean of one input channel (NCHW) into ``out``."""
    return [
        _const(f"{out}_starts", np.array([channel], dtype=np.int64)),
        _const(f"{out}_ends", np.array([channel + 1], dtype=np.int64)),
        _const(f"{out}_axes", np.array([1], dtype=np.int64)),
        helper.make_node(
            "Slice",
            [source, f"{out}_starts", f"{out}_ends", f"{out}_axes"],
            [f"{out}_slice"],
            name=f"slice_{out}",
        ),
        helper.make_node("ReduceMean", [f"{out}_slice"], [out], name=f"pool_{out}", keepdims=0),
    ]


@dataclass(frozen=True)
class HotAnchor:
    """One designed SCRFD anchor: its stride, cell (x, y), anchor index and raw head values
    (distances and keypoint offsets in units of the stride, as the network emits them)."""

    stride: int
    cell: tuple[int, int]
    score: float
    distances: tuple[float, float, float, float]
    kps: tuple[float, ...] = (0.0,) * 10
    anchor: int = 0
    red_weight: float = 0.0
    """Added to the score times the mean of the blob's channel 0 (R after insightface's swap):
    lets a test see which colour reaches the network's first channel."""

    def row(self, input_width: int) -> int:
        columns = input_width // self.stride
        return 2 * (self.cell[1] * columns + self.cell[0]) + self.anchor


@dataclass(frozen=True)
class ScrfdDesign:
    """The size the graph's outputs are laid out for, and its hot anchors (all else 0)."""

    width: int
    height: int
    hot: Sequence[HotAnchor] = field(default_factory=tuple)

    def count(self, stride: int) -> int:
        return (self.height // stride) * (self.width // stride) * 2


def scrfd_graph(
    path: Path,
    design: ScrfdDesign,
    *,
    output_names: Sequence[str] = DET_10G_OUTPUTS,
    dynamic: bool = True,
) -> Path:
    """An SCRFD det_10g-signature graph: constant heads laid out for ``design`` (plus the hot
    anchors' ``red_weight`` terms). ``dynamic``: input [1, 3, '?', '?'] like det_10g, else
    fixed at the design size."""
    spatial: list[int | str] = ["?", "?"] if dynamic else [design.height, design.width]
    graph_input = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, *spatial])
    nodes = _channel_mean("input.1", 0, "red_mean")
    outputs = []
    for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
        for level, stride in enumerate(STRIDES):
            name = output_names[{"score": 0, "bbox": 3, "kps": 6}[kind] + level]
            count = design.count(stride)
            hot = [h for h in design.hot if h.stride == stride]
            rows = np.array([[h.row(design.width)] for h in hot], dtype=np.int64).reshape(-1, 1)
            if kind == "score":
                values = np.array([[h.score] for h in hot], dtype=np.float32).reshape(-1, 1)
            elif kind == "bbox":
                values = np.array([h.distances for h in hot], dtype=np.float32).reshape(-1, 4)
            else:
                values = np.array([h.kps for h in hot], dtype=np.float32).reshape(-1, 10)
            # Zeros everywhere but the hot rows (ScatterND), so the file stays a few KB even
            # at 640² (16 800 anchors).
            zeros = helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])
            nodes += [
                _const(f"{name}_shape", np.array([count, width], dtype=np.int64)),
                helper.make_node(
                    "ConstantOfShape",
                    [f"{name}_shape"],
                    [f"{name}_zeros"],
                    name=f"zeros_{name}",
                    value=zeros,
                ),
            ]
            base = f"{name}_zeros"
            if len(hot):
                nodes += [
                    _const(f"{name}_rows", rows),
                    _const(f"{name}_values", values),
                    helper.make_node(
                        "ScatterND",
                        [base, f"{name}_rows", f"{name}_values"],
                        [f"{name}_hot"],
                        name=f"hot_{name}",
                    ),
                ]
                base = f"{name}_hot"
            if kind == "score":
                weights = np.array([h.red_weight for h in hot], dtype=np.float32).reshape(-1, 1)
                if len(hot):
                    nodes += [
                        _const(f"{name}_w", weights),
                        helper.make_node(
                            "ScatterND",
                            [f"{name}_zeros", f"{name}_rows", f"{name}_w"],
                            [f"{name}_wzero"],
                            name=f"weights_{name}",
                        ),
                    ]
                else:
                    nodes.append(_const(f"{name}_wzero", np.zeros((count, 1), dtype=np.float32)))
                nodes += [
                    helper.make_node(
                        "Mul",
                        [f"{name}_wzero", "red_mean"],
                        [f"{name}_probe"],
                        name=f"probe_{name}",
                    ),
                    helper.make_node("Add", [base, f"{name}_probe"], [name], name=f"score_{name}"),
                ]
            else:
                nodes.append(helper.make_node("Identity", [base], [name], name=f"out_{name}"))
            dim: int | str = count if not dynamic else f"anchors_{stride}"
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [dim, width]))
    by_name = {o.name: o for o in outputs}
    ordered = [by_name[n] for n in output_names]
    return _save(helper.make_graph(nodes, "scrfd_synthetic", [graph_input], ordered), path)


def arcface_projection(dimensions: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic recogniser's weights ``(3, dimensions)`` and bias: embedding =
    mean-pooled blob channels @ weights + bias. Columns 0-2 pick R, G, B of the blob alone."""
    k = np.arange(dimensions, dtype=np.float64)
    weights = np.stack([np.cos(k * (c + 1) * 0.1) for c in range(3)]).astype(np.float32)
    weights[:, :3] = np.eye(3, dtype=np.float32)
    bias = (0.01 * np.sin(k)).astype(np.float32)
    bias[:3] = 0.0
    return weights, bias


def arcface_graph(path: Path, *, batch: int | str = "None", dimensions: int = 512) -> Path:
    """A w600k_r50-signature graph: input ``input.1`` [batch, 3, 112, 112] (w600k_r50's batch
    dim is the symbol ``'None'``), output ``683`` [1, 512] = pooled channels @ W + b. No node
    name starts with Sub/Mul, so insightface treats it as a PyTorch export (mean/std 127.5)."""
    weights, bias = arcface_projection(dimensions)
    graph_input = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [batch, 3, 112, 112])
    graph_output = helper.make_tensor_value_info("683", TensorProto.FLOAT, [1, dimensions])
    nodes = [
        helper.make_node(
            "ReduceMean", ["input.1"], ["pooled"], name="pool", axes=[2, 3], keepdims=0
        ),
        _const("projection", weights),
        _const("offset", bias),
        helper.make_node("MatMul", ["pooled", "projection"], ["projected"], name="project"),
        helper.make_node("Add", ["projected", "offset"], ["683"], name="shift"),
    ]
    return _save(helper.make_graph(nodes, "arcface_synthetic", [graph_input], [graph_output]), path)


def fan_graph(path: Path, landmarks: np.ndarray, *, peak_per_blue: float = 0.9) -> Path:
    """A 2DFAN4-signature graph: ``landmarks`` (68, 3) constant, in 64² heatmap coordinates;
    every heatmap is flat at ``peak_per_blue * mean(input channel 0)``, channel 0 being blue
    (BGR fed as is) scaled to [0, 1], so the score reads back the blob's first channel."""
    graph_input = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 256, 256])
    outputs = [
        helper.make_tensor_value_info("landmarks", TensorProto.FLOAT, [1, 68, 3]),
        helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, [1, 68, 64, 64]),
    ]
    nodes = [
        _const("landmarks", np.asarray(landmarks, dtype=np.float32).reshape(1, 68, 3)),
        *_channel_mean("input", 0, "blue_mean"),
        _const("peak", np.full((1, 68, 1, 1), peak_per_blue, dtype=np.float32)),
        helper.make_node("Mul", ["peak", "blue_mean"], ["peaks"], name="peaks"),
        _const("heat_shape", np.array([1, 68, 64, 64], dtype=np.int64)),
        helper.make_node("Expand", ["peaks", "heat_shape"], ["heatmaps"], name="spread"),
    ]
    return _save(helper.make_graph(nodes, "fan_synthetic", [graph_input], outputs), path)


def landmark106_graph(path: Path, predictions: np.ndarray) -> Path:
    """A 2d106det-signature graph: input ``data`` [1, 3, 192, 192], output ``fc1`` [1, 212] =
    ``predictions`` (106, 2) in [-1, 1] crop units. Its first node is named ``bn_data``, as in
    the MXNet-converted 2d106det, which makes insightface feed raw 0-255 pixels."""
    graph_input = helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 192, 192])
    graph_output = helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, 212])
    nodes = [
        helper.make_node("Identity", ["data"], ["normalised"], name="bn_data"),
        helper.make_node(
            "ReduceMean", ["normalised"], ["level"], name="pool", axes=[1, 2, 3], keepdims=0
        ),
        _const("zero", np.zeros((1,), dtype=np.float32)),
        helper.make_node("Mul", ["level", "zero"], ["nothing"], name="ignore"),
        _const("points", np.asarray(predictions, dtype=np.float32).reshape(1, 212)),
        helper.make_node("Add", ["points", "nothing"], ["fc1"], name="emit"),
    ]
    return _save(helper.make_graph(nodes, "lmk106_synthetic", [graph_input], [graph_output]), path)
