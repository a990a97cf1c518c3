"""The classic swap: warp the source face onto a target's landmark geometry and blend it in.

Per target face, inside its region of interest only (never the full frame)::

    landmarks ─► ROI (face box + margin)
             ├─► morph: brows, eyes, nose and lips take the source's rest shape, keeping the
             │          target's motion (its deviation from its own track mean); the jaw stays
             ├─► + ten forehead points (`dense_points`): the swap reaches above the brows
             ├─► piecewise-affine map (Delaunay over the 78 points) ─► remap source crop
             ├─► mask: outline pulled in from jaw and forehead, eroded + feathered
             ├─► the target's own inner mouth, moved to where the morphed lips open
             ├─► LAB mean/std colour match of the warped source to the target skin
             └─► alpha blend (or Poisson clone, then alpha) ─► written back into the ROI

Why these carry more of the identity than a warp bounded by the 68 points: a face is recognised
by its brows, eyes, nose and mouth and by where they sit relative to each other. A mask that stops
at the brows blends them at half strength with the target's (the feather straddles them) and
leaves the target's forehead; lips left at the target's rest shape keep its mouth width and
position. The jaw keeps the target's outline because that is where the paste meets the target's
own neck and background: moving it leaves a second contour.

The source side (dense points, triangulation, colour statistics) is prepared once per source face.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from farm.face.geometry import (
    BROWS,
    FOREHEAD,
    INNER_LIPS,
    JAW,
    Landmarks,
    alignment_matrix,
    box_of,
    dense_points,
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
"""Points moved toward the source's proportions always (brows, nose, eyes); the jaw stays."""
LIP_PARTS = np.arange(48, 68)
"""Lips: moved to the source's rest shape only when the target's track mean is known, since only
then is the target's speech (its deviation from that mean) kept; without it an open mouth would
take the source's photo, closed."""
MIN_SWAP_PX = 12
"""Faces (or visible parts of faces) smaller than this are left alone."""
WARP_MAP_PX = 128
"""Faces wider than this get their warp maps built at a coarser step and upsampled."""
COLOUR_CACHE_SIZE = 16
"""Colour-matched source crops kept per swapper."""
LIPS_MOVED_PX = 0.1
"""Lips moved less than this (round-off of the morph's frame change) are taken as unmoved."""
MOUTH_OPEN_START = 0.08
MOUTH_OPEN_FULL = 0.20
"""Inner-lip gap/width at which the target's own mouth starts to show, and fully shows."""


def face_polygon(landmarks: Landmarks) -> np.ndarray:
    """The face outline (jaw, then brows or forehead right to left), pulled in from the jaw and
    hair edges. Given `dense_points` the top edge is the forehead row, else the brows."""
    centre = landmarks[[30, 33, 27, 28, 29]].mean(axis=0)
    jaw = centre + (landmarks[JAW] - centre) * (1.0 - JAW_PULL)
    top = FOREHEAD if len(landmarks) > FOREHEAD[-1] else BROWS
    brows = centre + (landmarks[top][::-1] - centre) * (1.0 - BROW_PULL)
    return np.concatenate([jaw, brows]).astype(np.float32)


def canonical_shape(landmarks: Landmarks) -> np.ndarray:
    """Landmarks in the unit FFHQ frame: comparable across faces of any size and position."""
    return transform_points(landmarks, alignment_matrix(landmarks, 1))


@dataclass(frozen=True)
class PreparedSource:
    face: SourceFace
    points: np.ndarray
    """`dense_points` of the source crop: the correspondence the warp maps from."""
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
        points = dense_points(face.landmarks)
        return PreparedSource(
            face=face,
            points=points,
            triangles=face_triangles(points),
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
        """Move brows, eyes, nose (and lips) toward the source's proportions, keeping the
        target's motion.

        ``mean_shape`` is the target's canonical shape averaged over its track; each frame keeps its
        own deviation from that mean (blinks, raised brows, speech), plus the source-minus-target
        offset. Without it the lips stay the target's (`LIP_PARTS`).
        """
        if self._shape_transfer <= 0:
            return landmarks
        matrix = alignment_matrix(landmarks, 1)
        canonical = transform_points(landmarks, matrix)
        reference = canonical if mean_shape is None else mean_shape
        parts = SHAPE_PARTS if mean_shape is None else np.concatenate([SHAPE_PARTS, LIP_PARTS])
        moved = canonical.copy()
        moved[parts] += self._shape_transfer * (source.shape[parts] - reference[parts])
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
            dense = dense_points(geometry)
            warped = self._warp(image, source, dense, shape, face_w)
            hard = _fill(shape, face_polygon(dense))
            alpha = self._feather(hard, face_w)
            if self._keep_mouth:
                warped = self._keep_target_mouth(warped, roi, local, geometry, face_w)
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
        """The source face warped onto ``geometry`` (`dense_points`; piecewise affine, maps built
        at <=160 px).

        Sampled from the level of the source's image pyramid nearest above the target's scale:
        bilinear sampling of the 384 px crop straight onto a 100 px face reads 4 of every 15
        source pixels, so the skin, brow and eye detail that carries the identity comes out as
        aliasing noise that also shimmers from frame to frame. `cv2.pyrDown` low-passes first.
        """
        step = max(1, int(np.ceil(face_w / WARP_MAP_PX)))
        if step == 1:
            map_x, map_y, _ = piecewise_affine_maps(
                geometry, source.points, source.triangles, shape
            )
        else:
            small = (int(np.ceil(shape[0] / step)), int(np.ceil(shape[1] / step)))
            map_x, map_y, _ = piecewise_affine_maps(
                geometry / step, source.points, source.triangles, small
            )
            # Maps are piecewise linear: bilinear upsampling is exact inside each triangle.
            size = (small[1] * step, small[0] * step)
            map_x = cv2.resize(map_x, size, interpolation=cv2.INTER_LINEAR)[: shape[0], : shape[1]]
            map_y = cv2.resize(map_y, size, interpolation=cv2.INTER_LINEAR)[: shape[0], : shape[1]]
        source_w = float(np.ptp(source.face.landmarks[:, 0])) or 1.0
        levels = 0
        while source_w / 2 ** (levels + 1) >= face_w and min(image.shape[:2]) >= 2 * MIN_SWAP_PX:
            image = cv2.pyrDown(image)
            levels += 1
        if levels:
            # pyrDown maps pixel centre x to (x + 0.5) / 2 - 0.5, once per level.
            factor = np.float32(2.0**-levels)
            offset = np.float32(0.5 * (1.0 - 2.0**-levels))
            map_x = map_x * factor - offset
            map_y = map_y * factor - offset
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

    def _keep_target_mouth(
        self,
        warped: np.ndarray,
        roi: np.ndarray,
        local: Landmarks,
        geometry: Landmarks,
        face_w: float,
    ) -> np.ndarray:
        """Let the target's own inner mouth show through as it opens (speech stays readable).

        The target's mouth (teeth, tongue) is put where the *morphed* lips open: the ROI moved by
        the affine map that carries the target's lips onto the morphed ones (the identity when
        the lips were not moved), and painted into the pasted face inside the morphed inner lips.
        """
        openness = mouth_openness(local)
        weight = float(
            np.clip((openness - MOUTH_OPEN_START) / (MOUTH_OPEN_FULL - MOUTH_OPEN_START), 0, 1)
        )
        if weight <= 0:
            return warped
        lips = geometry[INNER_LIPS]
        centre = lips.mean(axis=0)
        polygon = centre + (lips - centre) * 1.12
        mouth = _fill(warped.shape[:2], polygon).astype(np.float32) / 255.0
        sigma = max(1.0, 0.015 * face_w)
        mouth = weight * np.asarray(cv2.GaussianBlur(mouth, (0, 0), sigmaX=sigma), np.float32)
        own = roi
        if np.abs(geometry[LIP_PARTS] - local[LIP_PARTS]).max() > LIPS_MOVED_PX:
            matrix, _ = cv2.estimateAffine2D(local[LIP_PARTS], geometry[LIP_PARTS])
            if matrix is not None:
                own = cv2.warpAffine(
                    roi, matrix, (roi.shape[1], roi.shape[0]), borderMode=cv2.BORDER_REPLICATE
                )
        return cv2.blendLinear(own, warped, mouth, 1.0 - mouth)


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
