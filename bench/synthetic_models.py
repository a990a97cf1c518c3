"""Synthetic stand-ins for the neural face models, for benchmarks: real signatures, real cost.

No inswapper_128 weights ship on PyPI, so `bench.faces --synthetic-inswapper` measures the
neural path with a graph that has inswapper_128's contract (inputs ``target`` (1,3,128,128) and
``source`` (1,512), output ``output`` (1,3,128,128), the ``emap`` (512x512) as the last
initializer) and about its cost: insightface publishes 174.7 GFLOPs for inswapper_128
(deepinsight/inswapper-512-live README), taken here as 87 G multiply-accumulates (2 FLOPs each;
if insightface counted MACs the real model is twice as expensive as this graph). The work is a
stack of 3x3 convolutions at 32x32x512, like the style blocks of the real generator, modulated by
the identity latent; the output is the input crop plus a small learned-looking residual, so the
paste-back does the same work as with a real swap. The convolutions share one weight tensor so
the file stays small (about 10 MB) while the arithmetic stays the same.

The ArcFace stand-in has w600k_r50's signature (``input.1`` [N,3,112,112] → ``683`` [1,512])
and negligible cost: the benchmark measures the swap, the identity embedding is taken once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from farm.models import file_entry, write_manifest

INSWAPPER_MACS = 87.35e9
"""Half of the 174.7 GFLOPs insightface states for inswapper_128."""
STYLE_CHANNELS = 512
STYLE_SIDE = 32


def conv_macs(c_in: int, c_out: int, kernel: int, side: int) -> float:
    return float(c_in * c_out * kernel * kernel * side * side)


def style_blocks_for(macs: float) -> int:
    """How many 32x32x512 3x3 blocks bring the graph to ``macs``."""
    fixed = conv_macs(3, 64, 4, 64) + conv_macs(64, STYLE_CHANNELS, 4, STYLE_SIDE)
    fixed += conv_macs(STYLE_CHANNELS, 3, 1, STYLE_SIDE)
    per_block = conv_macs(STYLE_CHANNELS, STYLE_CHANNELS, 3, STYLE_SIDE)
    return max(1, round((macs - fixed) / per_block))


def inswapper_cost_graph(path: Path, *, macs: float = INSWAPPER_MACS, seed: int = 0) -> float:
    """Write the cost-matched inswapper stand-in to ``path``; returns its multiply-accumulates."""
    rng = np.random.default_rng(seed)
    blocks = style_blocks_for(macs)
    c = STYLE_CHANNELS

    def weight(name: str, shape: tuple[int, ...], scale: float) -> onnx.TensorProto:
        values = (rng.standard_normal(shape) * scale).astype(np.float32)
        return numpy_helper.from_array(values, name)

    inits = [
        weight("down1", (64, 3, 4, 4), 0.1),
        weight("down2", (c, 64, 4, 4), 0.02),
        # He scale and a positive modulation keep activations at a steady size through the stack
        # (a vanishing signal would hit the CPU's slow denormal path and misstate the cost).
        weight("style", (c, c, 3, 3), np.sqrt(2.0 / (9 * c))),
        weight("to_rgb", (3, c, 1, 1), 0.01),
        numpy_helper.from_array(np.array([1, c, 1, 1], dtype=np.int64), "style_shape"),
        numpy_helper.from_array(np.array([1.0, 1.0, 4.0, 4.0], dtype=np.float32), "up"),
        numpy_helper.from_array(np.array(0.01, dtype=np.float32), "residual_gain"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
    ]
    # insightface reads the emap as the graph's LAST initializer.
    inits.append(weight("emap", (512, 512), 1.0 / np.sqrt(512)))
    nodes = [
        helper.make_node("Conv", ["target", "down1"], ["d1"], strides=[2, 2], pads=[1] * 4),
        helper.make_node("Relu", ["d1"], ["r1"]),
        helper.make_node("Conv", ["r1", "down2"], ["h0"], strides=[2, 2], pads=[1] * 4),
        helper.make_node("MatMul", ["source", "emap"], ["latent"]),
        helper.make_node("Sigmoid", ["latent"], ["gate"]),
        helper.make_node("Add", ["gate", "gate"], ["positive"]),
        helper.make_node("Reshape", ["positive", "style_shape"], ["modulation"]),
    ]
    current = "h0"
    for k in range(blocks):
        nodes += [
            helper.make_node("Conv", [current, "style"], [f"c{k}"], pads=[1] * 4),
            helper.make_node("Mul", [f"c{k}", "modulation"], [f"m{k}"]),
            helper.make_node("Relu", [f"m{k}"], [f"h{k + 1}"]),
        ]
        current = f"h{k + 1}"
    nodes += [
        helper.make_node("Conv", [current, "to_rgb"], ["rgb32"]),
        helper.make_node("Resize", ["rgb32", "", "up"], ["rgb128"], mode="linear"),
        helper.make_node("Tanh", ["rgb128"], ["bounded"]),
        helper.make_node("Mul", ["bounded", "residual_gain"], ["residual"]),
        helper.make_node("Add", ["target", "residual"], ["sum"]),
        helper.make_node("Clip", ["sum", "zero", "one"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "inswapper_128_cost",
        [
            helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, 3, 128, 128]),
            helper.make_tensor_value_info("source", TensorProto.FLOAT, [1, 512]),
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 128, 128])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    fixed = conv_macs(3, 64, 4, 64) + conv_macs(64, c, 4, STYLE_SIDE)
    fixed += conv_macs(c, 3, 1, STYLE_SIDE)
    return fixed + blocks * conv_macs(c, c, 3, STYLE_SIDE)


def arcface_signature_graph(path: Path, *, seed: int = 1) -> None:
    """w600k_r50's signature at negligible cost: mean-pooled channels through a fixed matrix."""
    rng = np.random.default_rng(seed)
    projection = rng.standard_normal((3, 512)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input.1"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "projection"], ["683"]),
        ],
        "w600k_r50_signature",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, [1, 512])],
        [numpy_helper.from_array(projection, "projection")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def synthetic_models_dir(root: Path) -> tuple[Path, float]:
    """A models directory with the two stand-ins registered under the real names; returns it
    and the swapper's multiply-accumulates per face."""
    root.mkdir(parents=True, exist_ok=True)
    macs = inswapper_cost_graph(root / "inswapper_128_cost.onnx")
    arcface_signature_graph(root / "w600k_r50_signature.onnx")
    write_manifest(
        root,
        [
            file_entry(
                root,
                name,
                file,
                kind=kind,
                licence="synthetic benchmark graph",
                source="bench.synthetic_models",
            )
            for name, file, kind in (
                ("inswapper_128", "inswapper_128_cost.onnx", "inswapper"),
                ("arcface_w600k_r50", "w600k_r50_signature.onnx", "arcface-recogniser"),
            )
        ],
    )
    return root, macs
