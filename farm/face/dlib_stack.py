"""The default face stack: dlib HOG detection, 68-point landmarks and 128-D descriptors.

All weights come from PyPI packages (dlib-bin, face-recognition-models) through the model manifest,
checked against their sha256 when the stack is built. Costs on this 2-core machine (feasibility §6):
HOG about 6 ms on a 360x288 frame and 22 ms at 640x512, landmarks about 1 ms, a descriptor about
100 ms. Descriptors are therefore computed once per track, never per frame.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from farm.errors import ModelError
from farm.face.geometry import Box, Landmarks, expand_box
from farm.models import DLIB_DESCRIPTOR, DLIB_HOG, DLIB_LANDMARKS_68, ModelManifest

HOG_MIN_FACE_PX = 80
"""The HOG window: faces smaller than this (at upsample 0) are not found."""


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
        """The 68 landmarks of the face in ``box``."""
        rect = self._dlib.rectangle(
            round(box[0]), round(box[1]), round(box[2]) - 1, round(box[3]) - 1
        )
        shape = self._predictor(np.ascontiguousarray(gray), rect)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)

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


def descriptor_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between descriptors (dlib: under 0.6 means the same person)."""
    return float(np.linalg.norm(a - b))
