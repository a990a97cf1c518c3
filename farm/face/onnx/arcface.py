"""ArcFace identity embeddings (insightface ``w600k_r50``, buffalo_l's recogniser) on onnxruntime.

The pre-processing is insightface's ``ArcFaceONNX.get_feat``: BGR crops in, swapped to RGB,
``(x - 127.5) / 127.5``, NCHW. insightface decides the normalisation from the graph: a model
converted from MXNet (``Sub``/``_minus`` and ``Mul``/``_mul`` among its first 8 node names)
normalises inside, so it is fed raw 0-255 (mean 0, std 1); w600k_r50 (a PyTorch export) is
not. `input_mean` / `input_std` say which was chosen.

The crop is ours (`farm.face.onnx.align`): the least-squares similarity onto ``arcface_112_v2``
at 112² with a black border, which is what insightface's ``norm_crop`` produces.

w600k_r50's batch dimension is symbolic (``'None'``), so `embed_batch` runs N faces in one
session call; a graph with a fixed batch of 1 is run once per face.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from farm.errors import ModelError
from farm.face.geometry import five_points
from farm.face.onnx.align import alignment_matrix, insightface_module, warp_crop
from farm.face.onnx.runtime import SessionFactory

TEMPLATE = "arcface_112_v2"


def normalise(embedding: np.ndarray) -> np.ndarray:
    """``embedding`` scaled to unit L2 norm along its last axis (``float32``); cosine
    similarity is then a dot product. A zero vector stays zero."""
    vectors = np.asarray(embedding, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


class ArcFaceRecogniser:
    """512-d ArcFace embeddings of faces given by their 5 keypoints."""

    name: ClassVar[str] = "arcface"

    def __init__(self, model_path: Path, sessions: SessionFactory) -> None:
        model_path = Path(model_path)
        if not model_path.is_file():
            raise ModelError(
                f"ArcFace model {model_path} does not exist; put w600k_r50.onnx (buffalo_l) there"
            )
        session = sessions.open(model_path)
        inputs, outputs = session.get_inputs(), session.get_outputs()
        shape = list(inputs[0].shape) if inputs else []
        if (
            len(inputs) != 1
            or len(outputs) != 1
            or len(shape) != 4
            or shape[1] != 3
            or not isinstance(shape[2], int)
            or shape[2] != shape[3]
        ):
            raise ModelError(
                f"{model_path} is not an ArcFace recogniser: expected one input (N, 3, S, S) and "
                f"one output, found inputs {[(i.name, i.shape) for i in inputs]}, "
                f"outputs {[(o.name, o.shape) for o in outputs]}"
            )
        arcface = insightface_module("model_zoo.arcface_onnx")
        self._model: Any = arcface.ArcFaceONNX(str(model_path), session)
        self.size: int = int(shape[2])
        """The crop side the graph takes (112 for w600k_r50)."""
        self.batch_dynamic: bool = not isinstance(shape[0], int)
        """Whether one session call can take several faces (a symbolic batch dimension)."""
        last = outputs[0].shape[-1] if outputs[0].shape else None
        self.dimensions: int | None = last if isinstance(last, int) else None
        self.input_mean: float = float(self._model.input_mean)
        self.input_std: float = float(self._model.input_std)
        self.session = session

    def crop(self, frame: np.ndarray, points5: np.ndarray) -> np.ndarray:
        """The aligned ``size``² BGR crop the recogniser sees."""
        matrix = alignment_matrix(points5, TEMPLATE, self.size)
        return warp_crop(frame, matrix, self.size, border="constant")

    def embed(self, frame: np.ndarray, points5: np.ndarray) -> np.ndarray:
        """The raw (un-normalised) ``(512,) float32`` embedding of the face at ``points5``."""
        return self.embed_batch([self.crop(frame, points5)])[0]

    def embed_normalised(self, frame: np.ndarray, points5: np.ndarray) -> np.ndarray:
        """`embed`, scaled to unit length."""
        return normalise(self.embed(frame, points5))

    def embed_batch(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Raw embeddings ``(N, 512) float32`` of aligned crops (from `crop`): one session
        call when the batch dimension is dynamic, else one per crop."""
        if not crops:
            return np.zeros((0, self.dimensions or 512), dtype=np.float32)
        for crop in crops:
            if crop.shape != (self.size, self.size, 3) or crop.dtype != np.uint8:
                # insightface would silently resize a wrong-sized crop; refuse instead.
                raise ValueError(
                    f"ArcFace crops are {self.size}x{self.size}x3 uint8 BGR (use crop()), "
                    f"got {crop.dtype} {crop.shape}"
                )
        if self.batch_dynamic:
            features = self._model.get_feat(list(crops))
        else:
            features = np.concatenate([self._model.get_feat(c) for c in crops], axis=0)
        return np.asarray(features, dtype=np.float32).reshape(len(crops), -1)


@dataclass(frozen=True)
class PackEmbedder:
    """ArcFace as `farm.face.identity.FaceEmbedder`: embeddings stored in identity packs."""

    recogniser: ArcFaceRecogniser
    sha256: str
    """Of the w600k_r50 file that makes them (the pack records it)."""
    model: str = "arcface_w600k_r50"

    def embed_crop(self, crop: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return self.recogniser.embed(crop, five_points(landmarks))
