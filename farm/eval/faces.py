"""Face-swap quality measures: identity transfer, untouched background and temporal jitter.

For each input/output frame pair, faces are found in the *input* (the ground truth of where faces
are); the output face is read at the same place. Per face:

- ``to_source``: descriptor distance of the output face to the source identity (lower: it carries
  the identity), ``to_original``: distance of the output face to the input face;
- SSIM between input and output, averaged inside and outside the face mask (the convex hull of the
  input landmarks, dilated): outside should stay ≈ 1.

`temporal_jitter` is the mean absolute second temporal difference of the face region,
``|x[t+1] - 2 x[t] + x[t-1]|``, which ignores smooth motion and counts frame-to-frame flicker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from farm.face.dlib_stack import DlibFaceStack, descriptor_distance
from farm.face.geometry import Box, Landmarks, box_of

MASK_DILATE = 0.12
"""The face mask is the landmark hull grown by this fraction of the face width."""


@dataclass(frozen=True)
class FaceScore:
    """One face in one frame."""

    frame: int
    box: Box
    to_source: float | None
    to_original: float | None
    ssim_inside: float
    ssim_outside: float

    @property
    def carries_identity(self) -> bool:
        """The output face is closer to the source identity than to the original face."""
        if self.to_source is None or self.to_original is None:
            raise ValueError(f"frame {self.frame} has no descriptors (skipped by descriptor_every)")
        return self.to_source < self.to_original


def face_mask(
    shape: tuple[int, int], landmarks: Landmarks, dilate: float = MASK_DILATE
) -> np.ndarray:
    """A uint8 mask (255 inside) of the landmark hull, grown by ``dilate`` × face width."""
    mask = np.zeros(shape, dtype=np.uint8)
    hull = cv2.convexHull(np.round(landmarks).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 255)
    box = box_of(landmarks)
    radius = round(dilate * (box[2] - box[0]))
    if radius > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        return np.asarray(cv2.dilate(mask, kernel), dtype=np.uint8)
    return mask


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM of two BGR frames, on their luma."""
    from skimage.metrics import structural_similarity

    ga = cv2.cvtColor(a, cv2.COLOR_BGR2GRAY)
    gb = cv2.cvtColor(b, cv2.COLOR_BGR2GRAY)
    _, full = structural_similarity(ga, gb, data_range=255, full=True)
    return np.asarray(full, dtype=np.float64)


def masked_ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Mean SSIM inside and outside a mask (1.0 for an empty side)."""
    full = ssim_map(a, b)
    inside = mask > 0
    ssim_in = float(full[inside].mean()) if inside.any() else 1.0
    ssim_out = float(full[~inside].mean()) if (~inside).any() else 1.0
    return ssim_in, ssim_out


def temporal_jitter(frames: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> float:
    """Mean |second temporal difference| of luma inside each frame's mask (grey levels)."""
    if len(frames) != len(masks):
        raise ValueError(f"{len(frames)} frames but {len(masks)} masks")
    if len(frames) < 3:
        raise ValueError("temporal jitter needs at least 3 frames")
    luma = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY).astype(np.float32) for f in frames]
    values = []
    for t in range(1, len(frames) - 1):
        inside = masks[t] > 0
        if inside.any():
            second = np.abs(luma[t + 1] - 2 * luma[t] + luma[t - 1])
            values.append(float(second[inside].mean()))
    if not values:
        raise ValueError("no mask covers any pixel: nothing to measure")
    return float(np.mean(values))


class FaceEvaluator:
    """Scores output frames against input frames and the source identity."""

    def __init__(self, stack: DlibFaceStack, source_descriptor: np.ndarray) -> None:
        self._stack = stack
        self._source = source_descriptor

    def faces(self, frame: np.ndarray) -> list[tuple[Box, Landmarks]]:
        """Faces (box, landmarks) found in a frame, largest first."""
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        return [(box, self._stack.landmarks(gray, box)) for box in self._stack.detect(gray)]

    def score(
        self, index: int, original: np.ndarray, output: np.ndarray, *, descriptors: bool = True
    ) -> list[FaceScore]:
        """Scores of every face found in ``original``, read at the same place in ``output``."""
        found = self.faces(original)
        if not found:
            return []
        shape = original.shape[:2]
        union = np.zeros(shape, dtype=np.uint8)
        for _, landmarks in found:
            union |= face_mask(shape, landmarks)
        full = ssim_map(original, output)
        outside = float(full[union == 0].mean()) if (union == 0).any() else 1.0
        out_gray = cv2.cvtColor(output, cv2.COLOR_BGR2GRAY)
        rgb_in = cv2.cvtColor(original, cv2.COLOR_BGR2RGB) if descriptors else None
        rgb_out = cv2.cvtColor(output, cv2.COLOR_BGR2RGB) if descriptors else None
        scores = []
        for box, landmarks in found:
            inside = face_mask(shape, landmarks) > 0
            to_source = to_original = None
            if rgb_in is not None and rgb_out is not None:
                out_landmarks = self._stack.landmarks(out_gray, box)
                d_out = self._stack.descriptor(rgb_out, out_landmarks)
                d_in = self._stack.descriptor(rgb_in, landmarks)
                to_source = descriptor_distance(d_out, self._source)
                to_original = descriptor_distance(d_out, d_in)
            scores.append(
                FaceScore(
                    frame=index,
                    box=box,
                    to_source=to_source,
                    to_original=to_original,
                    ssim_inside=float(full[inside].mean()),
                    ssim_outside=outside,
                )
            )
        return scores
