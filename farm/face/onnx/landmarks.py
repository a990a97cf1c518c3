"""Neural face landmarks on onnxruntime: 2DFAN4 (68 points, iBUG order) and insightface 2d106.

**2DFAN4** (FaceFusion's ``2dfan4.onnx``, faceswap.md §2.3) gives the iBUG 300-W 68 points
the tracker and `farm.face.geometry` use, so it can replace dlib's shape predictor:

- crop: scale ``195 / max(box w, box h)`` and translate so the box centre lands at the centre
  of a 256² crop (no rotation here);
- if the crop is dark (mean Lab L < 30) its L channel gets CLAHE (clip 2), as FaceFusion does;
  FaceFusion converts with ``COLOR_RGB2Lab`` on a BGR crop, we use ``COLOR_BGR2Lab`` and leave
  bright crops untouched (no lossy Lab round trip);
- input ``(1, 3, 256, 256)`` float32, BGR as is, ``/ 255``;
- outputs ``landmarks (1, 68, 3)`` in 64² heatmap coordinates (x, y, confidence) and
  ``heatmaps (1, 68, 64, 64)``; points are ``xy * 256 / 64`` then the inverse crop;
- score: mean over points of each heatmap's peak, mapped ``[0, 0.9] -> [0, 1]`` (clipped).

Outputs are told apart by rank (3 = landmarks, 4 = heatmaps), not by name: FaceFusion runs the
graph with ``output_names=None`` and nothing pins its names.

**2d106** (insightface ``2d106det``, buffalo_l) goes through insightface's ``Landmark`` class:
input ``data (1, 3, 192, 192)``, output ``fc1 (1, 212)`` in [-1, 1]; insightface crops at
``192 / (1.5 * max(w, h))`` around the box centre and maps back. Its 106-point markup is only
published as an image, so no 106->68 or 106->5 index map is given here: callers get the 106
points as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from farm.errors import ModelError
from farm.face.geometry import Box
from farm.face.onnx.align import apply, insightface_module, inverse
from farm.face.onnx.runtime import SessionFactory, run_bound


@dataclass(frozen=True)
class LandmarkResult:
    """Landmarks of one face in frame pixels, ``(N, 2) float32``, and the model's confidence
    in ``[0, 1]`` (``None`` when the model gives none)."""

    points: np.ndarray
    score: float | None


def fan_crop_matrix(box: Box, size: int = 256) -> np.ndarray:
    """The 2x3 matrix from frame pixels into 2DFAN4's ``size``² crop for ``box``: the box's
    long side becomes 195/256 of the crop, its centre the crop's centre."""
    width, height = box[2] - box[0], box[3] - box[1]
    scale = 195.0 / max(width, height, 1.0)
    tx = (size - (box[0] + box[2]) * scale) * 0.5
    ty = (size - (box[1] + box[3]) * scale) * 0.5
    return np.array([[scale, 0.0, tx], [0.0, scale, ty]], dtype=np.float64)


def fan_score(heatmaps: np.ndarray) -> float:
    """FaceFusion's 2DFAN4 score: the mean heatmap peak, ``[0, 0.9]`` stretched to ``[0, 1]``."""
    peaks = np.asarray(heatmaps, dtype=np.float64).reshape(heatmaps.shape[-3], -1).max(axis=1)
    return float(np.interp(float(peaks.mean()), [0.0, 0.9], [0.0, 1.0]))


def brighten_if_dark(crop: np.ndarray) -> np.ndarray:
    """CLAHE (clip 2) on the Lab L channel when its mean is under 30, else ``crop`` itself."""
    lab = cv2.cvtColor(crop, cv2.COLOR_BGR2Lab)
    if float(lab[:, :, 0].mean()) >= 30.0:
        return crop
    lab[:, :, 0] = cv2.createCLAHE(clipLimit=2.0).apply(np.ascontiguousarray(lab[:, :, 0]))
    return np.asarray(cv2.cvtColor(lab, cv2.COLOR_Lab2BGR))


class Fan68Landmarker:
    """2DFAN4: 68 iBUG points of the face in a detector box."""

    name: ClassVar[str] = "2dfan4"
    size: ClassVar[int] = 256
    heatmap_size: ClassVar[int] = 64

    def __init__(self, model_path: Path, sessions: SessionFactory) -> None:
        model_path = Path(model_path)
        if not model_path.is_file():
            raise ModelError(
                f"2DFAN4 model {model_path} does not exist; put FaceFusion's 2dfan4.onnx there"
            )
        session = sessions.open(model_path)
        inputs, outputs = session.get_inputs(), session.get_outputs()
        by_rank = {len(o.shape): o.name for o in outputs if o.shape is not None}
        shape = list(inputs[0].shape) if len(inputs) == 1 else []
        if len(outputs) != 2 or set(by_rank) != {3, 4} or shape[1:] != [3, 256, 256]:
            raise ModelError(
                f"{model_path} is not 2DFAN4: expected input (1, 3, 256, 256) and outputs "
                "landmarks (1, 68, 3) + heatmaps (1, 68, 64, 64), found inputs "
                f"{[(i.name, i.shape) for i in inputs]}, outputs "
                f"{[(o.name, o.shape) for o in outputs]}"
            )
        self.session: Any = session
        self._input = inputs[0].name
        self._landmarks = by_rank[3]
        self._heatmaps = by_rank[4]

    def detect(self, frame: np.ndarray, box: Box) -> LandmarkResult:
        """The 68 points of the face in ``box`` (frame pixels) and FaceFusion's score."""
        matrix = fan_crop_matrix(box, self.size)
        crop = cv2.warpAffine(frame, matrix, (self.size, self.size), flags=cv2.INTER_LINEAR)
        crop = brighten_if_dark(crop)
        blob = crop.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        landmarks, heatmaps = run_bound(
            self.session, {self._input: blob}, [self._landmarks, self._heatmaps]
        )
        in_crop = np.asarray(landmarks)[0, :, :2] * (self.size / self.heatmap_size)
        points = apply(inverse(matrix), in_crop).astype(np.float32)
        return LandmarkResult(points=points, score=fan_score(np.asarray(heatmaps)[0]))


class Insight106Landmarker:
    """insightface 2d106det: 106 points of the face in a detector box (no score)."""

    name: ClassVar[str] = "2d106det"

    def __init__(self, model_path: Path, sessions: SessionFactory) -> None:
        model_path = Path(model_path)
        if not model_path.is_file():
            raise ModelError(
                f"2d106 model {model_path} does not exist; put 2d106det.onnx (buffalo_l) there"
            )
        session = sessions.open(model_path)
        outputs = session.get_outputs()
        if len(outputs) != 1 or list(outputs[0].shape)[-1:] != [212]:
            raise ModelError(
                f"{model_path} is not 2d106det: expected one output (1, 212), found "
                f"{[(o.name, o.shape) for o in outputs]}"
            )
        landmark = insightface_module("model_zoo.landmark")
        self._face_type: Any = insightface_module("app.common").Face
        self._model: Any = landmark.Landmark(model_file=str(model_path), session=session)
        self.input_mean: float = float(self._model.input_mean)
        self.input_std: float = float(self._model.input_std)
        self.session = session

    def detect(self, frame: np.ndarray, box: Box) -> LandmarkResult:
        """The 106 points of the face in ``box``, frame pixels."""
        face = self._face_type(bbox=np.asarray(box, dtype=np.float32))
        points = self._model.get(frame, face)
        return LandmarkResult(points=np.asarray(points, dtype=np.float32), score=None)
