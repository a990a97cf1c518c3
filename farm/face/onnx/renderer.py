"""Rendering tracked faces with a neural swapper: align, swap, mask, colour, enhance, paste back.

Per batch of frames, for every chosen face (its five points from the tracker's smoothed
landmarks, so the crop is as steady as the track)::

    5 points ─► similarity onto the swapper's template ─► crop (BORDER_REPLICATE)
    all crops of the batch ─► one swapper call (per crop where the graph's batch is fixed)
    swapped crop ─► mask = min(box mask, BiSeNet regions of the swapped crop)
                ─► LAB colour match toward the target crop inside the mask
                ─► paste back through the inverse affine, into the face's ROI only
    enhancer (optional) ─► FFHQ-512 crop of the pasted frame ─► restored, blended at strength
                       ─► pasted back with its own box mask

A frame whose faces are all skipped comes back as the same object; pixels outside every
warped mask stay bit-identical (`farm.face.onnx.paste.paste_back`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from farm.face.onnx.align import alignment_matrix, warp_crop
from farm.face.onnx.enhancer import FaceEnhancer
from farm.face.onnx.parser import BiSeNetParser
from farm.face.onnx.paste import box_mask, colour_match, combine_masks, paste_back
from farm.face.onnx.swappers import FaceSwapModel
from farm.face.timing import StageTimer

MIN_FACE_PX = 12
"""Faces whose eye-to-mouth span is smaller than this are left alone (nothing to swap)."""
BOX_MASK_BLUR = 0.3
"""FaceFusion's default face mask blur (a fraction of the crop)."""


@dataclass(frozen=True)
class FaceCrop:
    """One face of one frame, aligned for the swapper."""

    frame: int
    """Index into the batch."""
    matrix: np.ndarray
    """Frame → crop (2x3)."""
    crop: np.ndarray
    points5: np.ndarray


def face_span(points5: np.ndarray) -> float:
    """Eye-centre to mouth-centre distance in pixels: the face's scale."""
    eyes = (points5[0] + points5[1]) / 2
    mouth = (points5[3] + points5[4]) / 2
    return float(np.linalg.norm(mouth - eyes))


class NeuralFaceRenderer:
    """Swaps faces given by five points, with one identity latent for the whole job."""

    def __init__(
        self,
        swapper: FaceSwapModel,
        latent: np.ndarray,
        *,
        parser: BiSeNetParser | None = None,
        enhancer: FaceEnhancer | None = None,
        colour_transfer: float = 1.0,
        mask_blur: float = BOX_MASK_BLUR,
        timer: StageTimer | None = None,
    ) -> None:
        self.swapper = swapper
        self.latent = latent
        self.parser = parser
        self.enhancer = enhancer
        self.colour_transfer = colour_transfer
        self.timer = timer or StageTimer()
        self._box = box_mask(swapper.crop_size, mask_blur)
        self._enhancer_box = (
            box_mask(enhancer.crop_size, mask_blur) if enhancer is not None else None
        )

    def render_batch(
        self, frames: Sequence[np.ndarray], faces: Sequence[Sequence[np.ndarray]]
    ) -> list[np.ndarray]:
        """``frames`` with the faces at ``faces[i]`` (each a (5, 2) point set) swapped."""
        if len(frames) != len(faces):
            raise ValueError(f"{len(frames)} frames but {len(faces)} face lists")
        size, template = self.swapper.crop_size, self.swapper.template
        crops: list[FaceCrop] = []
        with self.timer("align"):
            for i, points in enumerate(faces):
                for pts in points:
                    if face_span(pts) < MIN_FACE_PX:
                        continue
                    matrix = alignment_matrix(pts, template, size)
                    crop = warp_crop(frames[i], matrix, size, border="replicate")
                    crops.append(FaceCrop(i, matrix, crop, pts))
        out = list(frames)
        if not crops:
            return out
        with self.timer("swap"):
            swapped = self.swapper.swap_crops([c.crop for c in crops], self.latent)
        with self.timer("mask"):
            masks = [self._box] * len(crops)
            if self.parser is not None:
                regions = self.parser.region_masks(swapped)
                masks = [combine_masks(self._box, region) for region in regions]
        with self.timer("blend"):
            for face, result, mask in zip(crops, swapped, masks, strict=True):
                if self.colour_transfer > 0:
                    result = colour_match(result, face.crop, mask, self.colour_transfer)
                if out[face.frame] is frames[face.frame]:
                    out[face.frame] = frames[face.frame].copy()
                paste_back(out[face.frame], result, mask, face.matrix)
        if self.enhancer is not None:
            self._enhance(out, crops)
        return out

    def _enhance(self, out: list[np.ndarray], faces: Sequence[FaceCrop]) -> None:
        enhancer, box = self.enhancer, self._enhancer_box
        assert enhancer is not None and box is not None
        with self.timer("enhance"):
            size = enhancer.crop_size
            matrices = [alignment_matrix(f.points5, enhancer.template, size) for f in faces]
            crops = [
                warp_crop(out[f.frame], m, size, border="replicate")
                for f, m in zip(faces, matrices, strict=True)
            ]
            for face, matrix, restored in zip(
                faces, matrices, enhancer.enhance_crops(crops), strict=True
            ):
                paste_back(out[face.frame], restored, box, matrix)
