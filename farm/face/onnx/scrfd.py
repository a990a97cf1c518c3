"""SCRFD face detection (insightface ``det_10g`` / ``det_2.5g`` / ``det_500m``) on onnxruntime.

The decoding is insightface's own ``model_zoo.scrfd.SCRFD`` (anchor centres, distance heads,
its NMS), fed a session opened by our `SessionFactory`; this class adapts it to the
`FaceDetector` protocol. What insightface 2.1 does with our inputs, checked by the tests:

- it takes the BGR frame and swaps to RGB itself (``blobFromImage(swapRB=True)``), normalising
  ``(x - 127.5) / 128``: the SCRFD training config (``to_rgb=True``);
- it letterboxes: resizes to fit ``input_size`` keeping the aspect (``int`` truncation), pastes
  top-left into a black canvas and divides boxes by the resize factor;
- with a dynamic-size graph and no size given it detects at *two* sizes, (128, 128) and
  (640, 640), and merges them; we always pass our one size;
- with a fixed-size graph it ignores the requested size and uses the graph's (we report that
  size in `input_size`);
- by default (``static_shape_sessions=True``) it opens a second onnxruntime session per size,
  with the input pinned, outside our `SessionFactory` (its own ``InferenceSession``, copying
  providers). We pass ``static_shape_sessions=False`` so every run goes through the one
  session we opened; TensorRT would prefer pinned shapes, which needs a `SessionFactory` way
  to open a rewritten graph (not there yet);
- its NMS uses the legacy ``+1`` pixel areas, keeping boxes whose IoU ``<= nms_threshold``;
- it calls ``session.run`` directly (no IO binding).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from farm.errors import ModelError
from farm.face.detectors import Detection, downscaled, largest_first, scale_detections
from farm.face.onnx.align import insightface_module
from farm.face.onnx.runtime import SessionFactory

SCRFD_OUTPUT_COUNTS = (6, 9, 10, 15)
"""insightface's SCRFD layouts: 3 strides x 2 anchors (6 outputs, 9 with keypoints) or
5 strides x 1 anchor (10, 15 with keypoints)."""


def check_bgr_frame(frame: np.ndarray) -> None:
    """`ValueError` unless ``frame`` is an HxWx3 ``uint8`` image (a caller bug, not a model's)."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(
            f"a detector takes a BGR uint8 HxWx3 frame, got {frame.dtype} {frame.shape}"
        )
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"empty frame {frame.shape}")


class ScrfdDetector:
    """SCRFD boxes, scores and 5 keypoints in frame pixels, largest face first.

    ``input_size`` is the square the frame is letterboxed into (multiples of 32; 640 is what
    the models were tuned at, 320 is about 4x faster and misses faces under ~20 px).
    """

    name: ClassVar[str] = "scrfd"

    def __init__(
        self,
        model_path: Path,
        sessions: SessionFactory,
        *,
        input_size: int = 640,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.4,
    ) -> None:
        if input_size <= 0 or input_size % 32 != 0:
            raise ValueError(
                f"SCRFD input size must be a positive multiple of 32, got {input_size}"
            )
        model_path = Path(model_path)
        if not model_path.is_file():
            raise ModelError(
                f"SCRFD model {model_path} does not exist; put det_10g.onnx (buffalo_l) there"
            )
        session = sessions.open(model_path)
        outputs = session.get_outputs()
        if len(outputs) not in SCRFD_OUTPUT_COUNTS:
            raise ModelError(
                f"{model_path} has {len(outputs)} outputs; an SCRFD detector has 6, 9, 10 or "
                "15 (score/bbox/kps per stride): is this the right file?"
            )
        scrfd = insightface_module("model_zoo.scrfd")
        self._model: Any = scrfd.SCRFD(
            model_file=str(model_path), session=session, static_shape_sessions=False
        )
        requested = (input_size, input_size)
        self._model.prepare(
            0, input_size=requested, det_thresh=score_threshold, nms_thresh=nms_threshold
        )
        fixed = self._model.static_input_size
        self.input_size: tuple[int, int] = tuple(fixed) if fixed is not None else requested
        """(width, height) the graph runs at: the requested square, or a fixed graph's own."""
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.has_keypoints: bool = bool(self._model.use_kps)
        self.session = session

    def detect(self, frame: np.ndarray, *, max_side: int = 0) -> list[Detection]:
        """Faces in a BGR ``uint8`` frame; see `FaceDetector`."""
        check_bgr_frame(frame)
        small, factor = downscaled(frame, max_side)
        boxes, points = self._model.detect(
            np.ascontiguousarray(small),
            input_size=self.input_size,
            max_num=0,
            det_thresh=self.score_threshold,
        )
        found = [
            Detection(
                box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                score=float(b[4]),
                points5=None if points is None else np.asarray(points[i], dtype=np.float32),
            )
            for i, b in enumerate(boxes)
        ]
        return largest_first(scale_detections(found, factor))
