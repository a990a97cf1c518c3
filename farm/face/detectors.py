"""The face detector protocol the whole face stack uses (SCRFD, YuNet, dlib tracking behind it).

A detector takes a BGR ``uint8`` frame and returns `Detection`\\ s in that frame's pixels, the
largest face first. ``max_side`` lets a caller trade recall on small faces for speed: detection
runs on a copy whose long side is at most ``max_side`` and the results are scaled back, so callers
never see the detector's working resolution. `downscaled` and `scale_detections` are the shared
implementation of that rule, so every backend maps back the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import cv2
import numpy as np

from farm.face.geometry import Box, box_area


@dataclass(frozen=True)
class Detection:
    """One face in a frame.

    ``box`` is ``(x0, y0, x1, y1)`` in float pixels of the frame given to ``detect``,
    end-exclusive. ``points5`` is ``(5, 2) float32``: left eye, right eye, nose tip, left mouth
    corner, right mouth corner, "left" meaning image-left (the subject's right eye), the order
    insightface and the alignment templates use; ``None`` when the detector has no landmarks.
    """

    box: Box
    score: float
    points5: np.ndarray | None = None


@runtime_checkable
class FaceDetector(Protocol):
    """Finds faces in a BGR ``uint8`` HxWx3 frame.

    ``max_side > 0``: detect on a copy downscaled so its long side is at most ``max_side`` (never
    upscaled), results mapped back to the given frame's pixels. Results are sorted largest box
    first.
    """

    name: ClassVar[str]

    def detect(self, frame: np.ndarray, *, max_side: int = 0) -> list[Detection]: ...


def downscaled(frame: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """``frame`` shrunk so its long side is at most ``max_side`` (INTER_AREA), and the factor
    ``frame_pixels / small_pixels`` that maps results back (1.0 when nothing was done)."""
    height, width = frame.shape[:2]
    long_side = max(height, width)
    if max_side <= 0 or long_side <= max_side:
        return frame, 1.0
    factor = max_side / long_side
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    # The exact per-axis factors differ by rounding; use the long side's, which is exact.
    return small, long_side / max(small.shape[:2])


def scale_detections(detections: list[Detection], factor: float) -> list[Detection]:
    """Detections found on a downscaled copy, in the original frame's pixels."""
    if factor == 1.0:
        return list(detections)
    return [
        Detection(
            box=(
                d.box[0] * factor,
                d.box[1] * factor,
                d.box[2] * factor,
                d.box[3] * factor,
            ),
            score=d.score,
            points5=None if d.points5 is None else (d.points5 * factor).astype(np.float32),
        )
        for d in detections
    ]


def largest_first(detections: list[Detection]) -> list[Detection]:
    """The protocol's order: by box area, largest first (ties keep the higher score first)."""
    return sorted(detections, key=lambda d: (-box_area(d.box), -d.score))
