"""The classic swap: warp the source face onto a target's landmark geometry and blend it in.

Per target face, inside its region of interest only (never the full frame)::

    landmarks ─► ROI (face box + margin)
             ├─► piecewise-affine map (Delaunay over 68 points) ─► remap source crop
             ├─► mask: landmark hull pulled in from jaw and brows, eroded + feathered,
             │         minus the target's inner mouth when it opens
             ├─► LAB mean/std colour match of the warped source to the target skin
             └─► alpha blend (or Poisson clone, then alpha) ─► written back into the ROI

The source side (triangulation, colour statistics) is prepared once per source face.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from farm.face.geometry import (
    BROWS,
    INNER_LIPS,
    JAW,
    Landmarks,
    alignment_matrix,
    box_of,
    expand_box,
    face_triangles,
    mouth_openness,
    piecewise_affine_maps,
    transform_points,
)
from farm.face.identity import SourceFace
from farm.face.timing import StageTimer

ColourStats = tuple[np.ndarray, np.ndarray]
"""LAB (uint8 scale) per-channel mean and standard deviation, each shape (3,)."""

JAW_PULL = 0.03
"""How far jaw points move toward the face centre (fraction of their distance): off the jawline."""
BROW_PULL = 0.05
"""How far brow points move toward the face centre: away from hair and forehead."""
SHAPE_PARTS = np.concatenate([BROWS, np.arange(27, 48)])
"""Points moved toward the source's proportions (brows, nose, eyes); jaw and lips stay."""
MIN_SWAP_PX = 12
"""Faces (or visible parts of faces) smaller than this are left alone."""
WARP_MAP_PX = 128
"""Faces wider than this get their warp maps built at a coarser step and upsampled."""
COLOUR_CACHE_SIZE = 16
"""Colour-matched source crops kept per swapper."""
MOUTH_OPEN_START = 0.08
MOUTH_OPEN_FULL = 0.20
"""Inner-lip gap/width at which the target's own mouth starts to show, and fully shows."""


def face_polygon(landmarks: Landmarks) -> np.ndarray:
    """The face outline (jaw, then brows right to left), pulled in from the jaw and hair edges."""
    centre = landmarks[[30, 33, 27, 28, 29]].mean(axis=0)
    jaw = centre + (landmarks[JAW] - centre) * (1.0 - JAW_PULL)
    brows = centre + (landmarks[BROWS][::-1] - centre) * (1.0 - BROW_PULL)
    return np.concatenate([jaw, brows]).astype(np.float32)


def canonical_shape(landmarks: Landmarks) -> np.ndarray:
    """Landmarks in the unit FFHQ frame: comparable across faces of any size and position."""
    return transform_points(landmarks, alignment_matrix(landmarks, 1))


@dataclass(frozen=True)
class PreparedSource:
    face: SourceFace
    triangles: np.ndarray
    shape: np.ndarray
    colour: ColourStats


def _fill(shape: tuple[int, int], polygon: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    cv2.fillPoly(mask, [np.round(polygon * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    return mask


def _lab_stats(image: np.ndarray, mask: np.ndarray) -> ColourStats:
    lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
    mean, std = cv2.meanStdDev(lab, mask=mask)
    return mean.reshape(3), np.maximum(std.reshape(3), 1.0)


def _stats_mask(shape: tuple[int, int], landmarks: Landmarks) -> np.ndarray:
    """Skin statistics region: the pulled-in hull without the mouth and eyes."""
    mask = _fill(shape, face_polygon(landmarks))
    for part in (INNER_LIPS, np.arange(36, 42), np.arange(42, 48)):
        hull = cv2.convexHull(np.round(landmarks[part]).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 0)
    return mask


class ClassicSwapper:
    """Pastes an identity's face onto target landmark geometries, one ROI at a time."""

    def __init__(
        self,
        sources: Sequence[SourceFace],
        *,
        colour_transfer: float = 1.0,
        poisson: bool = False,
        keep_mouth: bool = True,
        mask_blur: float = 0.06,
        shape_transfer: float = 1.0,
        timer: StageTimer | None = None,
    ) -> None:
        if not sources:
            raise ValueError("the classic swapper needs at least one source face")
        self._sources = [self._prepare(face) for face in sources]
        self._colour_transfer = colour_transfer
        self._poisson = poisson
        self._keep_mouth = keep_mouth
        self._mask_blur = mask_blur
        self._shape_transfer = shape_transfer
        self.timer = timer or StageTimer()
        self._colour_cache: dict[tuple[int, ...], np.ndarray] = {}

    @staticmethod
    def _prepare(face: SourceFace) -> PreparedSource:
        shape = face.image.shape[:2]
        return PreparedSource(
            face=face,
            triangles=face_triangles(face.landmarks),
            shape=canonical_shape(face.landmarks),
            colour=_lab_stats(face.image, _stats_mask((shape[0], shape[1]), face.landmarks)),
        )

    def choose_source(self, landmarks: Landmarks) -> PreparedSource:
        """The source face whose pose is closest to the target's."""
        if len(self._sources) == 1:
            return self._sources[0]
        target = canonical_shape(landmarks)
        return min(self._sources, key=lambda s: float(np.abs(s.shape - target).mean()))

    def morph(
        self, landmarks: Landmarks, source: PreparedSource, mean_shape: np.ndarray | None
    ) -> Landmarks:
        """Move brows, eyes and nose toward the source's proportions, keeping the target's motion.

        ``mean_shape`` is the target's canonical shape averaged over its track; each frame keeps its
        own deviation from that mean (blinks, raised brows), plus the source-minus-target offset.
        """
        if self._shape_transfer <= 0:
            return landmarks
        matrix = alignment_matrix(landmarks, 1)
        canonical = transform_points(landmarks, matrix)
        reference = canonical if mean_shape is None else mean_shape
        moved = canonical.copy()
        moved[SHAPE_PARTS] += self._shape_transfer * (
            source.shape[SHAPE_PARTS] - reference[SHAPE_PARTS]
        )
        inverse = cv2.invertAffineTransform(matrix)
        return transform_points(moved, inverse)

    def swap(
        self,
        frame: np.ndarray,
        landmarks: Landmarks,
        *,
        mean_shape: np.ndarray | None = None,
        smooth_colour: Callable[[ColourStats], ColourStats] | None = None,
    ) -> bool:
        """Swap one face in place, touching only its region of interest of ``frame``.

        Returns False (and leaves ``frame`` alone) when the face is too small or off-frame.

        Arguments:
            frame: the BGR frame to modify (only the face's ROI is read and written).
            landmarks: the target's (smoothed) 68 points.
            mean_shape: the target's mean `canonical_shape` over its track, if known.
            smooth_colour: maps this frame's measured target colour statistics to the ones to use
                (a per-track temporal filter).
        """
        height, width = frame.shape[:2]
        box = box_of(landmarks)
        face_w = max(box[2] - box[0], box[3] - box[1])
        if face_w < MIN_SWAP_PX:
            return False
        x0, y0, x1, y1 = expand_box(box, 0.12, width, height)
        if x1 - x0 < MIN_SWAP_PX or y1 - y0 < MIN_SWAP_PX:
            return False
        with self.timer("swap"):
            roi = frame[y0:y1, x0:x1]
            shape = (y1 - y0, x1 - x0)
            local = (landmarks - (x0, y0)).astype(np.float32)
            source = self.choose_source(landmarks)
            geometry = self.morph(local, source, mean_shape)
            image = source.face.image
            if self._colour_transfer > 0:
                target = self._target_colour(roi, local, face_w)
                if smooth_colour is not None:
                    target = smooth_colour(target)
                image = self._recoloured(source, target)
            warped = self._warp(image, source, geometry, shape, face_w)
            hard = _fill(shape, face_polygon(geometry))
            alpha = self._feather(hard, face_w)
            if self._keep_mouth:
                alpha = self._remove_mouth(alpha, local, face_w)
        with self.timer("blend"):
            if self._poisson:
                warped = _poisson(warped, roi, alpha)
            roi[:] = cv2.blendLinear(warped, roi, alpha, 1.0 - alpha)
        return True

    @staticmethod
    def _target_colour(roi: np.ndarray, local: Landmarks, face_w: float) -> ColourStats:
        """The target's skin statistics, measured on a copy of the ROI about 64 px wide."""
        step = max(1.0, face_w / 64.0)
        small = roi
        if step > 1:
            size = (max(1, round(roi.shape[1] / step)), max(1, round(roi.shape[0] / step)))
            small = cv2.resize(roi, size, interpolation=cv2.INTER_AREA)
        scaled = local * (small.shape[1] / roi.shape[1])
        return _lab_stats(small, _stats_mask(small.shape[:2], scaled))

    def _recoloured(self, source: PreparedSource, target: ColourStats) -> np.ndarray:
        """The source crop colour-matched to ``target``; recomputed only when the match moves.

        Statistics are rounded to whole levels and the match is made from the *rounded* values,
        so a slowly drifting (smoothed) target reuses the last few results instead of converting
        the crop to LAB and back every frame, and a cached crop is exactly what a fresh
        computation gives: the output never depends on which frames (or shards) came before.
        """
        levels = np.round(np.concatenate(target))
        key = (id(source), *levels.astype(int).tolist())
        image = self._colour_cache.get(key)
        if image is None:
            rounded = (levels[: target[0].size], levels[target[0].size :])
            image = self._match_colour(source.face.image, source.colour, rounded)
            if len(self._colour_cache) >= COLOUR_CACHE_SIZE:
                self._colour_cache.pop(next(iter(self._colour_cache)))
            self._colour_cache[key] = image
        return image

    @staticmethod
    def _warp(
        image: np.ndarray,
        source: PreparedSource,
        geometry: Landmarks,
        shape: tuple[int, int],
        face_w: float,
    ) -> np.ndarray:
        """The source face warped onto ``geometry`` (piecewise affine, maps built at <=160 px)."""
        step = max(1, int(np.ceil(face_w / WARP_MAP_PX)))
        if step == 1:
            map_x, map_y, _ = piecewise_affine_maps(
                geometry, source.face.landmarks, source.triangles, shape
            )
        else:
            small = (int(np.ceil(shape[0] / step)), int(np.ceil(shape[1] / step)))
            map_x, map_y, _ = piecewise_affine_maps(
                geometry / step, source.face.landmarks, source.triangles, small
            )
            # Maps are piecewise linear: bilinear upsampling is exact inside each triangle.
            size = (small[1] * step, small[0] * step)
            map_x = cv2.resize(map_x, size, interpolation=cv2.INTER_LINEAR)[: shape[0], : shape[1]]
            map_y = cv2.resize(map_y, size, interpolation=cv2.INTER_LINEAR)[: shape[0], : shape[1]]
        return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def _match_colour(
        self, image: np.ndarray, source: ColourStats, target: ColourStats
    ) -> np.ndarray:
        strength = self._colour_transfer
        mean = source[0] + strength * (target[0] - source[0])
        std = source[1] + strength * (target[1] - source[1])
        levels = np.arange(256, dtype=np.float64)[:, None]
        lut = np.clip((levels - source[0]) * (std / source[1]) + mean, 0, 255)
        lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
        lab = cv2.LUT(lab, np.round(lut).astype(np.uint8).reshape(256, 1, 3))
        return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)

    def _feather(self, hard: np.ndarray, face_w: float) -> np.ndarray:
        """Erode and blur the hard mask so the transition stays inside the face (low-res)."""
        radius = max(1.0, self._mask_blur * face_w)
        factor = max(1, int(radius // 3))
        small = hard
        if factor > 1:
            small = cv2.resize(
                hard,
                (max(1, hard.shape[1] // factor), max(1, hard.shape[0] // factor)),
                interpolation=cv2.INTER_AREA,
            )
        r = max(1, round(radius / factor / 2))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        small = cv2.erode(small, kernel)
        small = cv2.GaussianBlur(small.astype(np.float32) / 255.0, (0, 0), sigmaX=r)
        if factor > 1:
            small = cv2.resize(
                small, (hard.shape[1], hard.shape[0]), interpolation=cv2.INTER_LINEAR
            )
        return np.clip(small, 0.0, 1.0).astype(np.float32)

    def _remove_mouth(self, alpha: np.ndarray, local: Landmarks, face_w: float) -> np.ndarray:
        """Let the target's own inner mouth show through as it opens (speech stays readable)."""
        openness = mouth_openness(local)
        weight = float(
            np.clip((openness - MOUTH_OPEN_START) / (MOUTH_OPEN_FULL - MOUTH_OPEN_START), 0, 1)
        )
        if weight <= 0:
            return alpha
        lips = local[INNER_LIPS]
        centre = lips.mean(axis=0)
        polygon = centre + (lips - centre) * 1.12
        mouth = _fill(alpha.shape[:2], polygon).astype(np.float32) / 255.0
        sigma = max(1.0, 0.015 * face_w)
        mouth = np.asarray(cv2.GaussianBlur(mouth, (0, 0), sigmaX=sigma), dtype=np.float32)
        return (alpha * (1.0 - weight * mouth)).astype(np.float32)


def _poisson(warped: np.ndarray, roi: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Poisson-clone the warped face into the ROI (face gradients, ROI boundary)."""
    binary = np.where(alpha > 0.05, 255, 0).astype(np.uint8)
    ys, xs = np.nonzero(binary)
    if not len(xs):
        return warped
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
    if x0 < 1 or y0 < 1 or x1 >= roi.shape[1] - 1 or y1 >= roi.shape[0] - 1:
        return warped  # seamlessClone needs a border of ROI pixels around the mask
    centre = ((x0 + x1 + 1) // 2, (y0 + y1 + 1) // 2)
    return cv2.seamlessClone(warped, roi, binary, centre, cv2.NORMAL_CLONE)
