"""Tiny synthetic ONNX graphs with the input/output names and shapes of the real voice models.

===================  ==========================================  ===================================
real file            inputs                                      outputs
===================  ==========================================  ===================================
vec-768-layer-12     ``source`` float32 [1, 1, T] (or [1, T])    [1, N, 768] (or [1, 768, N]);
(content encoder)                                                here N = (T − 400) // 320 + 1
RVC generator        ``phone`` [1, N2, 768], ``phone_lengths``   ``audio`` float32 [1, 1, N2 · hop]
(export.py)          [1], ``pitch`` int64 [1, N2], ``pitchf``
                     [1, N2], ``ds`` [1], ``rnd`` [1, 192, N2]
rmvpe                ``input`` float32 [1, 128, F]               ``output`` float32 [1, F, 360]
UVR MDX-Net          ``input`` float32 [batch, 4, dim_f, dim_t]  ``output``, the same shape
===================  ==========================================  ===================================

The outputs are designed so a test can check them by hand: the encoder is a strided box filter
(400 taps, stride 320, like HuBERT's conv front end) scaled per channel; the generator sings a
sine at ``pitchf`` on voiced frames (plus 0.01 × the channel mean of ``rnd``), and adds its
``phone`` and ``pitch`` tracks with weight 0, so frames that disagree fail to broadcast; RMVPE
puts a fixed salience peak on frames whose loudest mel band is above a threshold, and refuses
(Reshape) a frame count that is not a multiple of 32; MDX multiplies by a per-bin mask.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from tests.onnx_graphs import const as _const
from tests.onnx_graphs import save_graph as _save

ENCODER_KERNEL = 400
ENCODER_STRIDE = 320


def _node(op: str, inputs: list[str], output: str, **attrs: Any) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], name=f"{op.lower()}_{output}", **attrs)


def encoder_graph(
    path: Path, *, channels: int = 768, rank: int = 3, channels_last: bool = True
) -> Path:
    """A content encoder: ``source`` [1, 1, 'T'] (rank 3) or [1, 'T'] (rank 2) → features
    [1, 'N', C] (channels_last) or [1, C, 'N']; feature c of frame n = scale_c · the mean of
    samples 320·n .. 320·n + 399."""
    shape: list[int | str] = [1, 1, "T"] if rank == 3 else [1, "T"]
    source = helper.make_tensor_value_info("source", TensorProto.FLOAT, shape)
    nodes = []
    wave = "source"
    if rank == 2:
        nodes += [
            _const("axis1", np.array([1], dtype=np.int64)),
            _node("Unsqueeze", ["source", "axis1"], "wave"),
        ]
        wave = "wave"
    kernel = np.full((1, 1, ENCODER_KERNEL), 1.0 / ENCODER_KERNEL, dtype=np.float32)
    scale = np.linspace(0.5, 1.5, channels, dtype=np.float32).reshape(1, channels, 1)
    nodes += [
        _const("kernel", kernel),
        _const("scale", scale),
        _node("Conv", [wave, "kernel"], "framed", strides=[ENCODER_STRIDE]),
        _node("Mul", ["framed", "scale"], "features" if channels_last else "output"),
    ]
    if channels_last:
        nodes.append(_node("Transpose", ["features"], "output", perm=[0, 2, 1]))
    out_shape: list[int | str] = [1, "N", channels] if channels_last else [1, channels, "N"]
    output = helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)
    return _save(helper.make_graph(nodes, "content_encoder", [source], [output]), path)


def _upsample(name: str, track: str, hop: int) -> list[onnx.NodeProto]:
    """[1, N2] → [1, N2 · hop], each frame repeated ``hop`` times."""
    return [
        _node("Unsqueeze", [track, "axis2"], f"{name}_col"),
        _node("Expand", [f"{name}_col", "hop_shape"], f"{name}_rep"),
        _node("Reshape", [f"{name}_rep", "flat_shape"], name),
    ]


def generator_graph(
    path: Path,
    *,
    sample_rate: int = 40000,
    channels: int = 768,
    noise_channels: int = 192,
    metadata: dict[str, str] | None = None,
) -> Path:
    """An RVC generator export's signature: audio = 0.3 · sin(2π ∫ pitchf) on voiced frames
    + 0.01 · mean_c(rnd), at ``sample_rate`` (rate / 100 samples per frame)."""
    hop = sample_rate // 100
    inputs = [
        helper.make_tensor_value_info("phone", TensorProto.FLOAT, [1, "N2", channels]),
        helper.make_tensor_value_info("phone_lengths", TensorProto.INT64, [1]),
        helper.make_tensor_value_info("pitch", TensorProto.INT64, [1, "N2"]),
        helper.make_tensor_value_info("pitchf", TensorProto.FLOAT, [1, "N2"]),
        helper.make_tensor_value_info("ds", TensorProto.INT64, [1]),
        helper.make_tensor_value_info("rnd", TensorProto.FLOAT, [1, noise_channels, "N2"]),
    ]
    nodes = [
        _const("axis2", np.array([2], dtype=np.int64)),
        _const("axis1", np.array([1], dtype=np.int64)),
        _const("hop_shape", np.array([1, 1, hop], dtype=np.int64)),
        _const("flat_shape", np.array([1, -1], dtype=np.int64)),
        _const("step", np.array(2 * math.pi / sample_rate, dtype=np.float32)),
        _const("zero", np.array(0.0, dtype=np.float32)),
        _const("amp", np.array(0.3, dtype=np.float32)),
        _const("noise_amp", np.array(0.01, dtype=np.float32)),
        _const("cumaxis", np.array(1, dtype=np.int64)),
        *_upsample("f_up", "pitchf", hop),
        _node("Mul", ["f_up", "step"], "dphase"),
        _node("CumSum", ["dphase", "cumaxis"], "phase"),
        _node("Sin", ["phase"], "sine"),
        _node("Greater", ["f_up", "zero"], "voiced_bool"),
        _node("Cast", ["voiced_bool"], "voiced", to=TensorProto.FLOAT),
        _node("Mul", ["sine", "voiced"], "sung"),
        _node("Mul", ["sung", "amp"], "tone"),
        _node("ReduceMean", ["rnd"], "noise_frames", axes=[1], keepdims=0),
        *_upsample("noise_up", "noise_frames", hop),
        _node("Mul", ["noise_up", "noise_amp"], "noise"),
        _node("ReduceMean", ["phone"], "phone_frames", axes=[2], keepdims=0),
        *_upsample("phone_up", "phone_frames", hop),
        _node("Cast", ["pitch"], "pitch_float", to=TensorProto.FLOAT),
        *_upsample("pitch_up", "pitch_float", hop),
        _node("Mul", ["phone_up", "zero"], "phone_term"),
        _node("Mul", ["pitch_up", "zero"], "pitch_term"),
        _node("Add", ["tone", "noise"], "mix1"),
        _node("Add", ["mix1", "phone_term"], "mix2"),
        _node("Add", ["mix2", "pitch_term"], "mix3"),
        _node("Unsqueeze", ["mix3", "axis1"], "audio"),
    ]
    output = helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, 1, "M"])
    graph = helper.make_graph(nodes, "rvc_generator", inputs, [output])
    return _save(graph, path, metadata)


def rmvpe_peak(bin_index: float, bins: int = 360, width: float = 1.5) -> np.ndarray:
    """The synthetic RMVPE's salience row: a Gaussian peak (0.9) at ``bin_index``."""
    k = np.arange(bins, dtype=np.float64)
    return (0.9 * np.exp(-0.5 * ((k - bin_index) / width) ** 2)).astype(np.float32)


def rmvpe_graph(path: Path, *, peak_bin: float = 100.0, loud_log_mel: float = -2.0) -> Path:
    """RMVPE's signature: ``input`` [1, 128, 'F'] log-mel → ``output`` [1, 'F', 360]; frames
    whose loudest band exceeds ``loud_log_mel`` get the `rmvpe_peak` row, the others zeros."""
    mel = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 128, "F"])
    row = rmvpe_peak(peak_bin).reshape(1, 1, 360)
    nodes = [
        _const("blocks", np.array([1, 128, -1, 32], dtype=np.int64)),
        _const("unblock", np.array([1, 128, -1], dtype=np.int64)),
        _const("row", row),
        _const("threshold", np.array(loud_log_mel, dtype=np.float32)),
        _const("sharp", np.array(50.0, dtype=np.float32)),
        _node("Reshape", ["input", "blocks"], "blocked"),  # fails unless F % 32 == 0
        _node("Reshape", ["blocked", "unblock"], "mel"),
        _node("ReduceMax", ["mel"], "loudest", axes=[1], keepdims=1),
        _node("Sub", ["loudest", "threshold"], "above"),
        _node("Mul", ["above", "sharp"], "logit"),
        _node("Sigmoid", ["logit"], "voiced"),
        _node("Transpose", ["voiced"], "voiced_t", perm=[0, 2, 1]),
        _node("Mul", ["voiced_t", "row"], "output"),
    ]
    output = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, "F", 360])
    return _save(helper.make_graph(nodes, "rmvpe", [mel], [output]), path)


def mdx_graph(
    path: Path,
    *,
    dim_f: int,
    dim_t: int,
    mask: np.ndarray | None = None,
    batch: int | str = "batch_size",
) -> Path:
    """UVR MDX-Net's signature: ``input`` [batch, 4, dim_f, dim_t] → ``output`` = input × a
    per-bin mask (all ones: the identity)."""
    gains = np.ones(dim_f, dtype=np.float32) if mask is None else mask.astype(np.float32)
    spec = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 4, dim_f, dim_t])
    nodes = [
        _const("mask", gains.reshape(1, 1, dim_f, 1)),
        _node("Mul", ["input", "mask"], "output"),
    ]
    output = helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 4, dim_f, dim_t])
    return _save(helper.make_graph(nodes, "mdx_net", [spec], [output]), path)


class RecordingSessions:
    """A `SessionFactory.create` opening real CPU sessions that keep every run's feeds and
    outputs, per model file name (``runs["gen.onnx"][-1]["pitchf"]``)."""

    def __init__(self) -> None:
        self.opened: list[str] = []
        self.runs: dict[str, list[dict[str, np.ndarray]]] = {}

    def __call__(self, path: str, **kwargs: object) -> object:
        import onnxruntime as ort

        real = ort.InferenceSession(path, **kwargs)
        name = Path(path).name
        self.opened.append(name)
        runs = self.runs.setdefault(name, [])

        class Recorded:
            def __getattr__(self, attr: str) -> object:
                return getattr(real, attr)

            def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
                result = real.run(outputs, feeds)
                runs.append(
                    {**{k: np.array(v) for k, v in feeds.items()}, "@out": np.array(result[0])}
                )
                return list(result)

        return Recorded()

    def last(self, name: str) -> dict[str, np.ndarray]:
        return self.runs[name][-1]
