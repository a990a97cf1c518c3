"""The default face stack: dlib HOG detection, 68-point landmarks and 128-D descriptors.

All weights come from PyPI packages (dlib-bin, face-recognition-models) through the model manifest,
checked against their sha256 when the stack is built. Costs on this 2-core machine (feasibility §6):
HOG about 6 ms on a 360x288 frame and 22 ms at 640x512, landmarks about 1 ms, a descriptor about
100 ms. Descriptors are therefore computed once per track, never per frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import cv2
import numpy as np

from farm.errors import ModelError
from farm.face.detectors import Detection, downscaled, largest_first, scale_detections
from farm.face.geometry import Box, Landmarks, expand_box, five_points
from farm.models import DLIB_DESCRIPTOR, DLIB_HOG, DLIB_LANDMARKS_68, ModelManifest

HOG_MIN_FACE_PX = 80
"""The HOG window: faces smaller than this (at upsample 0) are not found."""


@dataclass(frozen=True)
class HogBoxRelation:
    """Where dlib's HOG box sits relative to another detector's box, as fractions of it.

    The 68-point shape predictor starts from its mean shape placed in the box it is given, and it
    was trained on HOG's boxes (square, brows to chin). Given another detector's box it starts off
    the face and fits the wrong thing, so that box is first mapped to the HOG box it stands for.
    """

    centre_x: float
    """HOG box centre x, as a fraction of the detector box's width from its left edge."""
    centre_y: float
    """HOG box centre y, as a fraction of its height from its top edge."""
    side: float
    """HOG box side, as a fraction of the detector box's *height* (turning a face changes the
    width of its box, hardly its height)."""

    def map(self, box: Box) -> Box:
        """The HOG-like square box for ``box``."""
        width, height = box[2] - box[0], box[3] - box[1]
        cx, cy = box[0] + self.centre_x * width, box[1] + self.centre_y * height
        half = self.side * height / 2
        return cx - half, cy - half, cx + half, cy + half


HOG_ITSELF = HogBoxRelation(0.5, 0.5, 1.0)
"""A HOG box needs no mapping."""


LANDMARK_WINDOW = 0.5
"""The shape predictor sees the box grown by this fraction on each side (it samples pixels
around its current estimate, which stays within a fraction of the box)."""
REFINE_STEPS = 2
"""Times the shape predictor's box is re-placed from the detector's five points (see `fit_68`)."""
REFINE_ABOVE = 0.1
"""Re-place only a fit whose five points are further than this (mean, in detector box heights)
from the detector's. The detector's points jitter by a few hundredths from frame to frame;
chasing them on every frontal face (fits 0.03-0.05 off) tripled the swap's flicker on GRID,
while fits that went wrong on turned faces are 0.2 and more off."""
REFINE_MAX_SCALE = 2.0
"""A re-placement that would grow or shrink the box by more than this is a failed fit: kept."""


class BoxLandmarker(Protocol):
    """The shape predictor's call: 68 points of the face in a box (`DlibFaceStack.landmarks`)."""

    def landmarks(self, gray: np.ndarray, box: Box) -> Landmarks: ...


def landmarker_box(detection: Detection, relation: HogBoxRelation) -> Box:
    """The box to give the shape predictor for ``detection`` (see `HogBoxRelation`)."""
    return detection.box if relation == HOG_ITSELF else relation.map(detection.box)


def fit_68(
    landmarker: BoxLandmarker,
    gray: np.ndarray,
    detection: Detection,
    relation: HogBoxRelation,
    *,
    steps: int = REFINE_STEPS,
) -> Landmarks:
    """dlib's 68 points for a detected face, their start placed from the detector's five points.

    The shape predictor only refines a mean face placed in its box; on a turned face the mapped
    box is off-centre (the visible face is not where a frontal face would be in the box) and the
    fit locks onto the wrong features (mirrored eyes on the three-quarter view). The detector's
    five points are reliable even there, so after each fit the box is moved and scaled by the
    similarity that carries the fit's own five points (`five_points`) onto the detector's, and the
    face is fitted again. On shared/media/faces two steps bring the fit's eyes, nose and mouth
    corners from 0.13-0.39 box heights off the detector's points to 0.01-0.14 on the profile and
    the three-quarter view. A fit already within `REFINE_ABOVE` of the points is kept as it is.
    """
    box = landmarker_box(detection, relation)
    landmarks = landmarker.landmarks(gray, box)
    points = detection.points5
    if points is None:
        return landmarks
    height = max(detection.box[3] - detection.box[1], 1.0)
    for _ in range(steps):
        fitted = five_points(landmarks)
        if np.linalg.norm(fitted - points, axis=1).mean() <= REFINE_ABOVE * height:
            break
        matrix, _ = cv2.estimateAffinePartial2D(fitted, points.astype(np.float32), method=cv2.LMEDS)
        if matrix is None:
            break
        scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
        if not 1 / REFINE_MAX_SCALE <= scale <= REFINE_MAX_SCALE:
            break
        cx, cy = matrix[:, :2] @ np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
        cx, cy = cx + matrix[0, 2], cy + matrix[1, 2]
        half = (box[2] - box[0]) / 2 * scale
        box = (float(cx - half), float(cy - half), float(cx + half), float(cy + half))
        landmarks = landmarker.landmarks(gray, box)
    return landmarks


class DlibFaceStack:
    """Detector, landmarker and descriptor, loaded once per instance."""

    def __init__(self, manifest: ModelManifest, *, with_descriptor: bool = True) -> None:
        import dlib

        manifest.entry(DLIB_HOG)
        try:
            self._dlib: Any = dlib
            self._detector: Any = dlib.get_frontal_face_detector()
            self._predictor: Any = dlib.shape_predictor(
                str(manifest.verified_path(DLIB_LANDMARKS_68))
            )
            self._recogniser: Any = (
                dlib.face_recognition_model_v1(str(manifest.verified_path(DLIB_DESCRIPTOR)))
                if with_descriptor
                else None
            )
        except RuntimeError as exc:
            raise ModelError(f"dlib could not load a face model: {exc}") from None

    def detect(self, gray: np.ndarray, *, max_side: int = 0, upsample: int = 0) -> list[Box]:
        """Faces in a grayscale image, as boxes in its pixels, largest first.

        Arguments:
            gray: 2-D uint8 image.
            max_side: when positive, detect on a copy downscaled so its longer side is at most this.
            upsample: dlib pyramid upsampling (each level halves the smallest face found).
        """
        height, width = gray.shape[:2]
        scale = 1.0
        image = gray
        if max_side > 0 and max(height, width) > max_side:
            scale = max_side / max(height, width)
            image = cv2.resize(
                gray, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA
            )
        rects = self._detector(np.ascontiguousarray(image), upsample)
        boxes = [
            (r.left() / scale, r.top() / scale, (r.right() + 1) / scale, (r.bottom() + 1) / scale)
            for r in rects
        ]
        return sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))

    def scored(self, gray: np.ndarray, upsample: int = 0) -> list[tuple[Box, float]]:
        """HOG boxes with their SVM scores (the `DlibHogDetector` protocol adapter needs them)."""
        rects, scores, _ = self._detector.run(np.ascontiguousarray(gray), upsample, 0.0)
        return [
            ((r.left(), r.top(), r.right() + 1, r.bottom() + 1), float(score))
            for r, score in zip(rects, scores, strict=True)
        ]

    def detect_near(self, gray: np.ndarray, box: Box, *, margin: float = 0.4) -> Box | None:
        """Re-find one face close to ``box`` by detecting inside a small window around it.

        The window is scaled so the face is about 100 px wide: a few milliseconds at any resolution.
        Returns the detection nearest to the box centre, or None when the face is gone.
        """
        height, width = gray.shape[:2]
        x0, y0, x1, y1 = expand_box(box, margin, width, height)
        if x1 - x0 < 16 or y1 - y0 < 16:
            return None
        # dlib reads a 2-D uint8 array as one contiguous block: a window *view* of the frame
        # would be read with the frame's rows running on, past its end (found nothing, or found
        # faces at random). Copy it, as the resized window is already.
        crop = np.ascontiguousarray(gray[y0:y1, x0:x1])
        face_w = max(box[2] - box[0], 1.0)
        scale = min(1.0, 100.0 / face_w) if face_w > 100 else max(1.0, 90.0 / face_w)
        if scale != 1.0:
            crop = cv2.resize(
                crop,
                (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
                interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
            )
        rects = self._detector(crop, 0)
        if not rects:
            return None
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        found = [
            (
                x0 + r.left() / scale,
                y0 + r.top() / scale,
                x0 + (r.right() + 1) / scale,
                y0 + (r.bottom() + 1) / scale,
            )
            for r in rects
        ]
        return min(
            found, key=lambda b: ((b[0] + b[2]) / 2 - cx) ** 2 + ((b[1] + b[3]) / 2 - cy) ** 2
        )

    def landmarks(self, gray: np.ndarray, box: Box) -> Landmarks:
        """The 68 landmarks of the face in ``box``.

        The predictor is given a window of the frame (the box grown by `LANDMARK_WINDOW` on each
        side), not the frame: dlib converts the whole image it is handed on every call, which cost
        more than the fit itself on a 640x360 frame (13 ms against 6 ms for the window).
        """
        height, width = gray.shape[:2]
        wx0, wy0, wx1, wy1 = expand_box(box, LANDMARK_WINDOW, width, height)
        if wx1 - wx0 < 2 or wy1 - wy0 < 2:
            wx0, wy0, wx1, wy1 = 0, 0, width, height
        window = np.ascontiguousarray(gray[wy0:wy1, wx0:wx1])
        rect = self._dlib.rectangle(
            round(box[0]) - wx0,
            round(box[1]) - wy0,
            round(box[2]) - 1 - wx0,
            round(box[3]) - 1 - wy0,
        )
        shape = self._predictor(window, rect)
        return np.array([(p.x + wx0, p.y + wy0) for p in shape.parts()], dtype=np.float32)

    def descriptor(self, rgb: np.ndarray, landmarks: Landmarks) -> np.ndarray:
        """The 128-D identity descriptor of a face (about 100 ms; compute it once per track)."""
        if self._recogniser is None:
            raise ModelError("this face stack was built without the descriptor model")
        dlib = self._dlib
        points = dlib.points([dlib.point(round(float(x)), round(float(y))) for x, y in landmarks])
        x0, y0 = landmarks.min(axis=0)
        x1, y1 = landmarks.max(axis=0)
        rect = dlib.rectangle(
            round(float(x0)), round(float(y0)), round(float(x1)), round(float(y1))
        )
        shape = dlib.full_object_detection(rect, points)
        chip = dlib.get_face_chip(np.ascontiguousarray(rgb), shape, size=150, padding=0.25)
        return np.asarray(self._recogniser.compute_face_descriptor(chip), dtype=np.float32)


class DlibHogDetector:
    """dlib's frontal HOG behind the `FaceDetector` protocol: the last resort (``dlib-hog``).

    It finds frontal faces of about 80 px and up only (no profiles, no three-quarter views) and
    gives no points: `landmarker_box` then passes its box straight to the shape predictor, which
    was trained on exactly these boxes.
    """

    name: ClassVar[str] = "dlib-hog"

    def __init__(self, stack: DlibFaceStack, *, upsample: int = 0) -> None:
        self._stack = stack
        self._upsample = upsample

    def detect(self, frame: np.ndarray, *, max_side: int = 0) -> list[Detection]:
        """Faces in a BGR (or already grey) uint8 frame, largest first, in its pixels."""
        gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        small, factor = downscaled(gray, max_side)
        found = [
            Detection(box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])), score=score)
            for b, score in self._stack.scored(small, self._upsample)
        ]
        return largest_first(scale_detections(found, factor))


def descriptor_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between descriptors (dlib: under 0.6 means the same person)."""
    return float(np.linalg.norm(a - b))
