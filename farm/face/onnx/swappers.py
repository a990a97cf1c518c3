"""The neural face swappers: inswapper_128, SimSwap 256 and SimSwap 512 (unofficial) on onnxruntime.

Each swapper takes aligned crops of the target faces plus one identity latent and returns the
swapped crops; aligning (`farm.face.onnx.align`), masking and pasting back
(`farm.face.onnx.paste`) are the frame processor's job, so every model here is a pure
``crops → crops`` function with its contract written down once (faceswap.md §2.5-2.6)::

    model                   template        crop  target input                source latent
    inswapper_128           arcface_128     128   RGB /255                    ArcFace/|.|·emap, L2
    simswap_256             arcface_112_v1  256   RGB /255, ImageNet mean/std converter(ArcFace), L2
    simswap_unofficial_512  arcface_112_v1  512   RGB /255                    converter(ArcFace), L2

All three output RGB in [0, 1]; ×255, rounded, back to BGR. The latent depends only on the
identity, so `identity_latent` runs once per job and `swap_crops` once per frame. When a graph
declares a dynamic batch dimension every crop of a frame goes through one session call; the
published inswapper_128 declares a fixed batch of 1 (``target`` (1,3,128,128), ``source``
(1,512)), so it gets one call per crop.

The ArcFace embedding fed in is the *raw* (un-normalised) 512-d output of buffalo_l's
w600k_r50, the one recogniser the rest of the stack uses; per-swapper identity spaces are reached
through the emap (inswapper) or FaceFusion's tiny converter graph ``crossface_simswap.onnx``
(SimSwap), never through a second recogniser.

`ImageGraph` (the input contract check and the batching rule) is shared with the parser and the
enhancer in this package.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from farm.errors import ModelError
from farm.face.onnx.align import TemplateName, insightface_module
from farm.face.onnx.runtime import SessionFactory, run_bound

EMBEDDING_SIZE = 512
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""RGB, for pixels in [0, 1]."""


def _numpy_dtype(ort_type: str) -> Any:
    """The numpy type to feed an onnxruntime input of ``ort_type``; None if not a float."""
    return {
        "tensor(float)": np.float32,
        "tensor(float16)": np.float16,
        "tensor(double)": np.float64,
    }.get(ort_type)


@dataclass(frozen=True)
class TensorSpec:
    """One declared graph input: its name, shape (ints, or names/None for dynamic dims), dtype."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: Any

    @property
    def dynamic_batch(self) -> bool:
        return bool(self.shape) and not isinstance(self.shape[0], int)


def input_specs(session: Any, path: Path) -> dict[str, TensorSpec]:
    """The session's inputs by name; `ModelError` for an element type we cannot feed."""
    specs = {}
    for item in session.get_inputs():
        dtype = _numpy_dtype(item.type)
        if dtype is None:
            raise ModelError(f"{path}: input {item.name!r} has type {item.type}; expected float")
        shape = tuple(d if isinstance(d, int) and d > 0 else None for d in item.shape)
        specs[item.name] = TensorSpec(item.name, shape, dtype)
    return specs


class ImageGraph:
    """A session that takes NCHW face crops, checked against the contract its wrapper expects.

    ``image`` is the crop input (``(N, 3, size, size)``), ``per_crop`` are inputs with one row per
    crop (the swappers' ``source`` latent, given as one row and repeated), ``shared`` are inputs
    fed once per call whatever the batch (CodeFormer's ``weight``). A graph is *batched* when the
    image input and every per-crop input declare a dynamic first dimension: then all crops go in
    one call; otherwise one call per crop, which is what a fixed batch of 1 demands.
    """

    def __init__(
        self,
        session: Any,
        path: Path,
        *,
        image: str,
        size: int,
        per_crop: Sequence[str] = (),
        shared: Sequence[str] = (),
        output: str | None = None,
    ) -> None:
        self.session = session
        self.path = path
        self.size = size
        specs = input_specs(session, path)
        wanted = (image, *per_crop, *shared)
        missing = [name for name in wanted if name not in specs]
        if missing or len(specs) != len(wanted):
            raise ModelError(
                f"{path}: expected inputs {', '.join(wanted)}, found {', '.join(specs) or 'none'} "
                "(is this the right model file?)"
            )
        shape = specs[image].shape
        if (
            len(shape) != 4
            or shape[1] not in (3, None)
            or any(d not in (size, None) for d in shape[2:])
        ):
            raise ModelError(
                f"{path}: input {image!r} has shape {list(shape)}; expected [N, 3, {size}, {size}]"
            )
        self.specs = specs
        self.image = image
        self.per_crop = tuple(per_crop)
        self.shared = tuple(shared)
        outputs = [o.name for o in session.get_outputs()]
        if output is not None and output not in outputs:
            raise ModelError(f"{path}: expected output {output!r}, found {', '.join(outputs)}")
        self.output = output if output is not None else outputs[0]
        self.batched = all(specs[name].dynamic_batch for name in (image, *per_crop))

    def run(
        self,
        blob: np.ndarray,
        per_crop: Mapping[str, np.ndarray] | None = None,
        shared: Mapping[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """The output for ``blob`` ``(N, 3, S, S)``: one call when batched, else one per crop."""
        per_crop = dict(per_crop or {})
        shared = {name: self._cast(name, value) for name, value in (shared or {}).items()}
        count = len(blob)
        if count == 0:
            return np.zeros((0,), dtype=np.float32)
        if self.batched:
            feeds = {self.image: self._cast(self.image, blob), **shared}
            for name, row in per_crop.items():
                feeds[name] = self._cast(name, np.repeat(row, count, axis=0))
            return np.asarray(run_bound(self.session, feeds, [self.output])[0])
        results = []
        for i in range(count):
            feeds = {self.image: self._cast(self.image, blob[i : i + 1]), **shared}
            for name, row in per_crop.items():
                feeds[name] = self._cast(name, row)
            results.append(np.asarray(run_bound(self.session, feeds, [self.output])[0]))
        return np.concatenate(results, axis=0)

    def _cast(self, name: str, value: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(value, dtype=self.specs[name].dtype)


def crops_to_blob(
    crops: Sequence[np.ndarray],
    size: int,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """BGR ``uint8`` crops → ``float32`` NCHW RGB, ``(x/255 − mean)/std`` per RGB channel."""
    for crop in crops:
        if crop.shape != (size, size, 3) or crop.dtype != np.uint8:
            raise ValueError(
                f"expected {size}x{size}x3 uint8 BGR crops, got {crop.shape} {crop.dtype}"
            )
    rgb = np.stack(crops)[..., ::-1].astype(np.float32) / np.float32(255.0)
    normalised = (rgb - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(normalised.transpose(0, 3, 1, 2), dtype=np.float32)


def unit_rgb_to_crops(output: np.ndarray) -> list[np.ndarray]:
    """``(N, 3, S, S)`` RGB in [0, 1] → BGR ``uint8`` crops, rounded.

    Rounded rather than truncated as insightface does (``astype(uint8)``): truncation darkens
    every pixel by half a level on average and makes an identity graph lose a level wherever
    ``x/255·255`` lands a hair below ``x`` in float32.
    """
    if output.ndim != 4 or output.shape[1] != 3:
        raise ModelError(f"model output has shape {list(output.shape)}; expected [N, 3, S, S]")
    pixels = np.rint(np.clip(output.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
    return [np.ascontiguousarray(p.transpose(1, 2, 0)[:, :, ::-1]) for p in pixels]


def check_embedding(embedding: np.ndarray) -> np.ndarray:
    """The raw ArcFace embedding as ``float64`` (512,); `ModelError` when it cannot be one."""
    vector = np.asarray(embedding, dtype=np.float64).reshape(-1)
    if vector.size != EMBEDDING_SIZE or not np.all(np.isfinite(vector)):
        raise ModelError(
            f"identity embedding has {vector.size} values "
            f"(all finite: {bool(np.isfinite(vector).all())}); expected {EMBEDDING_SIZE} "
            "finite values from the ArcFace w600k_r50 recogniser"
        )
    if float(np.linalg.norm(vector)) < 1e-12:
        raise ModelError("identity embedding is all zeros; re-create the identity pack")
    return vector


def _unit_row(vector: np.ndarray, what: str) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm < 1e-12:
        raise ModelError(f"{what} has norm {norm}; cannot normalise the identity latent")
    return (vector / norm).reshape(1, -1).astype(np.float32)


@runtime_checkable
class FaceSwapModel(Protocol):
    """A neural swapper: aligned target crops plus an identity latent in, swapped crops out.

    ``template`` and ``crop_size`` say how the processor aligns the target faces
    (``align.alignment_matrix(points5, template, crop_size)``, then ``align.warp_crop`` with
    ``border="replicate"``).
    """

    name: str
    template: TemplateName
    crop_size: int

    def identity_latent(self, embedding_raw: np.ndarray) -> np.ndarray:
        """``(1, 512) float32`` from the identity's raw ArcFace embedding (once per job)."""
        ...

    def swap_crops(self, crops: Sequence[np.ndarray], latent: np.ndarray) -> list[np.ndarray]:
        """BGR ``uint8`` ``crop_size``² crops → swapped BGR ``uint8`` crops, same order."""
        ...


class InSwapper128:
    """insightface's inswapper_128, with the session from our `SessionFactory`.

    insightface's own ``INSwapper`` is constructed around that session: it reads the emap (the
    graph's last initializer, 512×512) and the input names and scaling the way insightface does.
    Its ``get`` is not used: it aligns with its own crop, and with ``paste_back`` it blends the
    full frame; here the processor aligns and `farm.face.onnx.paste.paste_back` writes the ROI.
    """

    name = "inswapper_128"
    template: TemplateName = "arcface_128"
    crop_size = 128

    def __init__(self, model: Path, sessions: SessionFactory) -> None:
        inswapper = insightface_module("model_zoo.inswapper")
        session = sessions.open(model)
        try:
            # INSwapper.__init__ prints "inswapper-shape: ..." to stdout; keep worker logs clean.
            with contextlib.redirect_stdout(io.StringIO()):
                self._inswapper = inswapper.INSwapper(model_file=str(model), session=session)
        except Exception as exc:  # insightface asserts and onnx raise untyped errors
            first = (str(exc).strip().splitlines() or [""])[0]
            raise ModelError(
                f"{model}: not an inswapper_128 graph ({type(exc).__name__}: {first})"
            ) from None
        emap = np.asarray(self._inswapper.emap, dtype=np.float32)
        if emap.shape != (EMBEDDING_SIZE, EMBEDDING_SIZE):
            raise ModelError(
                f"{model}: the last initializer (the emap) has shape {list(emap.shape)}; "
                f"expected [{EMBEDDING_SIZE}, {EMBEDDING_SIZE}]"
            )
        self.emap = emap
        names = list(self._inswapper.input_names)
        if len(names) != 2:
            raise ModelError(f"{model}: expected inputs target, source; found {', '.join(names)}")
        self._graph = ImageGraph(
            session, model, image=names[0], size=self.crop_size, per_crop=(names[1],)
        )
        self._source = names[1]
        # insightface feeds (x − input_mean)/input_std on 0..255 pixels: 0 and 255, i.e. [0, 1].
        self._mean = float(self._inswapper.input_mean) / 255.0
        self._std = float(self._inswapper.input_std) / 255.0

    def identity_latent(self, embedding_raw: np.ndarray) -> np.ndarray:
        """insightface's latent: ``normed_embedding @ emap``, L2-normalised (FaceFusion skips
        the second normalisation; insightface, the model's publisher, does it)."""
        vector = check_embedding(embedding_raw)
        normed = vector / np.linalg.norm(vector)
        return _unit_row(normed @ self.emap.astype(np.float64), "embedding · emap")

    def swap_crops(self, crops: Sequence[np.ndarray], latent: np.ndarray) -> list[np.ndarray]:
        if not crops:
            return []
        blob = crops_to_blob(crops, self.crop_size, (self._mean,) * 3, (self._std,) * 3)
        output = self._graph.run(blob, {self._source: _latent_row(latent)})
        return unit_rgb_to_crops(output)


class SimSwap:
    """FaceFusion's SimSwap ONNX exports (§2.6): ``target`` and ``source`` in, RGB [0, 1] out.

    The source is the raw w600k embedding through the converter graph (``input`` (1,512) →
    one output), L2-normalised: FaceFusion ≥3.0's route, which keeps one recogniser for all.
    """

    name = "simswap"
    template: TemplateName = "arcface_112_v1"
    crop_size = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __init__(self, model: Path, converter: Path, sessions: SessionFactory) -> None:
        self._graph = ImageGraph(
            sessions.open(model), model, image="target", size=self.crop_size, per_crop=("source",)
        )
        session = sessions.open(converter)
        specs = input_specs(session, converter)
        spec = specs.get("input")
        if spec is None or len(specs) != 1 or spec.shape[-1:] != (EMBEDDING_SIZE,):
            found = ", ".join(f"{s.name} {list(s.shape)}" for s in specs.values())
            raise ModelError(
                f"{converter}: expected one input 'input' [1, {EMBEDDING_SIZE}] (the "
                f"crossface_simswap converter), found {found}"
            )
        self._converter = session
        self._converter_dtype = spec.dtype
        self._converter_output = session.get_outputs()[0].name

    def identity_latent(self, embedding_raw: np.ndarray) -> np.ndarray:
        vector = check_embedding(embedding_raw).reshape(1, -1).astype(self._converter_dtype)
        (converted,) = run_bound(self._converter, {"input": vector}, [self._converter_output])
        converted = np.asarray(converted, dtype=np.float64).reshape(-1)
        if converted.size != EMBEDDING_SIZE:
            raise ModelError(
                f"the SimSwap converter returned {converted.size} values; expected {EMBEDDING_SIZE}"
            )
        return _unit_row(converted, "the converted embedding")

    def swap_crops(self, crops: Sequence[np.ndarray], latent: np.ndarray) -> list[np.ndarray]:
        if not crops:
            return []
        blob = crops_to_blob(crops, self.crop_size, self.mean, self.std)
        return unit_rgb_to_crops(self._graph.run(blob, {"source": _latent_row(latent)}))


class SimSwap256(SimSwap):
    """simswap_256: 256² crops, ImageNet-normalised target."""

    name = "simswap_256"
    crop_size = 256
    mean = IMAGENET_MEAN
    std = IMAGENET_STD


class SimSwap512(SimSwap):
    """simswap_unofficial_512: 512² crops, target in [0, 1] (mean 0, std 1)."""

    name = "simswap_512"
    crop_size = 512
    mean = (0.0, 0.0, 0.0)
    std = (1.0, 1.0, 1.0)


def _latent_row(latent: np.ndarray) -> np.ndarray:
    row = np.asarray(latent, dtype=np.float32)
    if row.shape != (1, EMBEDDING_SIZE):
        raise ValueError(f"latent must have shape (1, {EMBEDDING_SIZE}), got {row.shape}")
    return row


def open_swapper(
    name: str, model: Path, sessions: SessionFactory, *, converter: Path | None = None
) -> FaceSwapModel:
    """The swapper called ``name`` (`farm.face.settings.SwapperName`) on verified model files;
    SimSwap also needs the ``crossface_simswap.onnx`` converter."""
    if name == "inswapper_128":
        return InSwapper128(model, sessions)
    if name in ("simswap_256", "simswap_512"):
        if converter is None:
            raise ModelError(f"{name} needs the embedding converter crossface_simswap.onnx")
        cls = SimSwap256 if name == "simswap_256" else SimSwap512
        return cls(model, converter, sessions)
    raise ModelError(f"unknown swapper {name!r}; known: inswapper_128, simswap_256, simswap_512")
