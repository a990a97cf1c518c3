"""Tiny ONNX graphs with the published models' signatures, computing designed functions.

Each builder writes a graph whose inputs, outputs and (for inswapper) initializer layout match the
real model's, but whose body is a few elementwise ops with known constants, so a test can compute
the expected output by hand and a wrong channel order, scale or latent gives a different number.

Signatures reproduced (faceswap.md §2.5-2.9):

    inswapper_128           target [1,3,128,128], source [1,512] → output [1,3,128,128];
                            the emap is the graph's LAST initializer, (512, 512). The published
                            model has a fixed batch of 1; ``batch="N"`` makes a dynamic variant.
    simswap_256 / _512      target [1,3,S,S], source [1,512] → output [1,3,S,S]
    crossface_simswap       input [1,512] → output [1,512]
    bisenet_resnet_*        input [1,3,512,512] → output [1,19,512,512]
    gfpgan_1.4              input [1,3,512,512] → output [1,3,512,512]
    codeformer              input [1,3,512,512], weight [1] double → output [1,3,512,512]

The batch dims of the published SimSwap, BiSeNet and enhancer exports are not verified here
(FaceFusion feeds them batch 1); the builders default to 1 and take ``batch="N"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
Dim = int | str


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _init(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _image(name: str, batch: Dim, size: int, channels: int = 3) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, channels, size, size])


def _swapper(
    path: Path,
    size: int,
    *,
    gains: Sequence[float],
    bias: Sequence[float],
    latent_index: Sequence[int],
    latent_gain: float,
    identity: bool,
    batch: Dim,
    extra_initializers: Sequence[onnx.TensorProto] = (),
) -> Path:
    """``output[c] = gains[c]·target[c] + bias[c] + latent_gain·source[latent_index[c]]``
    (or ``output = target`` when ``identity``)."""
    inputs = [
        _image("target", batch, size),
        helper.make_tensor_value_info("source", TensorProto.FLOAT, [batch, 512]),
    ]
    output = _image("output", batch, size)
    if identity:
        nodes = [helper.make_node("Identity", ["target"], ["output"])]
        initializers: list[onnx.TensorProto] = []
    else:
        pick = np.zeros((512, 3), dtype=np.float32)
        for channel, index in enumerate(latent_index):
            pick[index, channel] = latent_gain
        initializers = [
            _init("gains", np.asarray(gains, dtype=np.float32).reshape(1, 3, 1, 1)),
            _init("bias", np.asarray(bias, dtype=np.float32).reshape(1, 3, 1, 1)),
            _init("pick", pick),
            _init("offset_shape", np.array([-1, 3, 1, 1], dtype=np.int64)),
        ]
        nodes = [
            helper.make_node("Mul", ["target", "gains"], ["scaled"]),
            helper.make_node("Add", ["scaled", "bias"], ["shifted"]),
            helper.make_node("MatMul", ["source", "pick"], ["picked"]),
            helper.make_node("Reshape", ["picked", "offset_shape"], ["offset"]),
            helper.make_node("Add", ["shifted", "offset"], ["output"]),
        ]
    graph = helper.make_graph(
        nodes, "swapper", inputs, [output], initializer=[*initializers, *extra_initializers]
    )
    return _save(graph, path)


INSWAPPER_GAINS = (0.5, 0.75, 1.0)
INSWAPPER_BIAS = (0.1, 0.0, -0.2)
INSWAPPER_LATENT_INDEX = (0, 1, 2)
INSWAPPER_LATENT_GAIN = 2.0


def inswapper_128(
    path: Path,
    emap: np.ndarray,
    *,
    identity: bool = False,
    batch: Dim = 1,
    decoy: np.ndarray | None = None,
) -> Path:
    """inswapper_128's signature; ``emap`` goes in as the last initializer (unused by the body,
    as a constant the caller reads with onnx), ``decoy`` (another 512² matrix) before it, so a
    reader that takes the wrong initializer gets a different latent. Body, RGB in [0, 1]::

        output[c] = INSWAPPER_GAINS[c]·target[c] + INSWAPPER_BIAS[c] + 2·source[c]
    """
    extra = [] if decoy is None else [_init("decoy", decoy.astype(np.float32))]
    return _swapper(
        path,
        128,
        gains=INSWAPPER_GAINS,
        bias=INSWAPPER_BIAS,
        latent_index=INSWAPPER_LATENT_INDEX,
        latent_gain=INSWAPPER_LATENT_GAIN,
        identity=identity,
        batch=batch,
        extra_initializers=[*extra, _init("emap", emap.astype(np.float32))],
    )


SIMSWAP_GAINS = (0.15, 0.2, 0.25)
SIMSWAP_BIAS = (0.5, 0.45, 0.4)
SIMSWAP_LATENT_INDEX = (5, 6, 7)
SIMSWAP_LATENT_GAIN = 2.0


def simswap(path: Path, size: int, *, identity: bool = False, batch: Dim = 1) -> Path:
    """simswap_256 / simswap_unofficial_512's signature. Body::

    output[c] = SIMSWAP_GAINS[c]·target[c] + SIMSWAP_BIAS[c] + 2·source[5 + c]

    (small gains keep ImageNet-normalised inputs, about −2..2.6, inside the [0, 1] output).
    """
    return _swapper(
        path,
        size,
        gains=SIMSWAP_GAINS,
        bias=SIMSWAP_BIAS,
        latent_index=SIMSWAP_LATENT_INDEX,
        latent_gain=SIMSWAP_LATENT_GAIN,
        identity=identity,
        batch=batch,
    )


def converter(path: Path, matrix: np.ndarray, offset: np.ndarray) -> Path:
    """crossface_simswap's signature: ``output = input @ matrix + offset``."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "matrix"], ["product"]),
            helper.make_node("Add", ["product", "offset"], ["output"]),
        ],
        "converter",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 512])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 512])],
        initializer=[
            _init("matrix", matrix.astype(np.float32)),
            _init("offset", offset.astype(np.float32).reshape(1, 512)),
        ],
    )
    return _save(graph, path)


def bisenet_by_position(path: Path, grid: np.ndarray, *, batch: Dim = 1) -> Path:
    """BiSeNet's signature; the argmax class at each pixel is ``grid`` (an (h, w) array of class
    ids, h and w dividing 512) scaled up to 512² with nearest neighbours, whatever the input
    (the input enters as ``0·mean(input)`` so the batch follows it)."""
    h, w = grid.shape
    one_hot = np.eye(19, dtype=np.float32)[grid].transpose(2, 0, 1)[None] * 10.0
    graph = helper.make_graph(
        [
            helper.make_node("Resize", ["cells", "", "scales"], ["logits"], mode="nearest"),
            helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1, 2, 3], keepdims=1),
            helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
            helper.make_node("Add", ["logits", "nothing"], ["output"]),
        ],
        "bisenet_by_position",
        [_image("input", batch, 512)],
        [_image("output", batch, 512, channels=19)],
        initializer=[
            _init("cells", one_hot),
            _init("scales", np.array([1, 1, 512 / h, 512 / w], dtype=np.float32)),
            _init("zero", np.zeros((1, 1, 1, 1), dtype=np.float32)),
        ],
    )
    return _save(graph, path)


def bisenet_channel_threshold(
    path: Path, channel: int, threshold: float, *, batch: Dim = 1
) -> Path:
    """BiSeNet's signature; a pixel is skin (class 1) where the *normalised* input channel
    ``channel`` exceeds ``threshold``, else background (0); every other class scores −1000."""
    graph = helper.make_graph(
        [
            helper.make_node("Slice", ["input", "start", "end", "axis"], ["picked"]),
            helper.make_node("Mul", ["picked", "zero"], ["zeros"]),
            helper.make_node("Add", ["zeros", "threshold"], ["background"]),
            helper.make_node("Add", ["zeros", "low"], ["low_map"]),
            helper.make_node("Tile", ["low_map", "repeats"], ["others"]),
            helper.make_node("Concat", ["background", "picked", "others"], ["output"], axis=1),
        ],
        "bisenet_channel_threshold",
        [_image("input", batch, 512)],
        [_image("output", batch, 512, channels=19)],
        initializer=[
            _init("start", np.array([channel], dtype=np.int64)),
            _init("end", np.array([channel + 1], dtype=np.int64)),
            _init("axis", np.array([1], dtype=np.int64)),
            _init("zero", np.zeros((1,), dtype=np.float32)),
            _init("threshold", np.array([threshold], dtype=np.float32)),
            _init("low", np.array([-1000.0], dtype=np.float32)),
            _init("repeats", np.array([1, 17, 1, 1], dtype=np.int64)),
        ],
    )
    return _save(graph, path)


GFPGAN_GAINS = (1.0, -1.0, 0.5)


def gfpgan(path: Path, *, batch: Dim = 1) -> Path:
    """GFPGAN 1.4's signature; ``output[c] = GFPGAN_GAINS[c]·input[c]`` (in [−1, 1] space)."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["input", "gains"], ["output"])],
        "gfpgan",
        [_image("input", batch, 512)],
        [_image("output", batch, 512)],
        initializer=[_init("gains", np.asarray(GFPGAN_GAINS, np.float32).reshape(1, 3, 1, 1))],
    )
    return _save(graph, path)


def codeformer(path: Path, *, batch: Dim = 1) -> Path:
    """CodeFormer's signature (``weight`` (1,) double, FaceFusion's feed);
    ``output = weight·input + 2·weight − 1`` so the weight shows in every pixel."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["weight"], ["w"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["input", "w"], ["scaled"]),
            helper.make_node("Mul", ["w", "two"], ["w2"]),
            helper.make_node("Sub", ["w2", "one"], ["shift"]),
            helper.make_node("Add", ["scaled", "shift"], ["output"]),
        ],
        "codeformer",
        [
            _image("input", batch, 512),
            helper.make_tensor_value_info("weight", TensorProto.DOUBLE, [1]),
        ],
        [_image("output", batch, 512)],
        initializer=[
            _init("two", np.array([2.0], dtype=np.float32)),
            _init("one", np.array([1.0], dtype=np.float32)),
        ],
    )
    return _save(graph, path)
