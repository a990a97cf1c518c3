"""BiSeNet face parsing: a soft mask of the inner face (skin, brows, eyes, nose, mouth, lips).

The swappers repaint their whole crop, hair and hands included; parsing the *swapped* crop
(FaceFusion computes region masks after the swap, §2.8) and keeping only the inner-face classes
stops a fringe, a hand over the mouth or the background from being replaced::

    crop ─resize 512²─► RGB /255, ImageNet mean/std, NCHW ─► BiSeNet (1,19,512,512) ─► argmax
         ─► class ∈ {1, 2, 3, 4, 5, 10, 11, 12, 13} ─► resize back ─► feather

CelebAMask-HQ classes: 0 background, 1 skin, 2/3 brows, 4/5 eyes, 6 glasses, 7/8 ears,
9 earring, 10 nose, 11 mouth, 12/13 lips, 14 neck, 15 necklace, 16 cloth, 17 hair, 18 hat.
Glasses are never part of the mask (FaceFusion's default region set includes them): a swapper
does not reproduce the target's frames, so glasses stay the target's. Hair, hat, ears, neck,
cloth and background are never part of it either.

The feather is FaceFusion's ``(GaussianBlur(σ=5).clip(0.5, 1) − 0.5)·2`` (`paste.feather`),
applied at crop size: the mask shrinks by about half the blur and its edge falls inside the face.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from farm.errors import ModelError
from farm.face.onnx.paste import feather
from farm.face.onnx.runtime import SessionFactory
from farm.face.onnx.swappers import IMAGENET_MEAN, IMAGENET_STD, ImageGraph, crops_to_blob

PARSER_SIZE = 512
NUM_CLASSES = 19
FACE_CLASSES: tuple[int, ...] = (1, 2, 3, 4, 5, 10, 11, 12, 13)
"""Skin, brows, eyes, nose, mouth, lips: the only classes a region mask may keep."""
FEATHER_SIGMA = 5.0


class BiSeNetParser:
    """FaceFusion's ``bisenet_resnet_18/34`` face parsers (input ``input``, output (1,19,512,512)).

    ``classes`` narrows the kept classes (e.g. without the mouth, to show the target's own); it
    can only be a subset of `FACE_CLASSES`.
    """

    def __init__(
        self,
        model: Path,
        sessions: SessionFactory,
        *,
        classes: Sequence[int] = FACE_CLASSES,
        sigma: float = FEATHER_SIGMA,
    ) -> None:
        refused = sorted(set(classes) - set(FACE_CLASSES))
        if refused or not classes:
            raise ValueError(
                f"region mask classes must be a non-empty subset of {FACE_CLASSES}; "
                f"refused {refused or 'an empty set'}"
            )
        self._graph = ImageGraph(sessions.open(model), model, image="input", size=PARSER_SIZE)
        self._classes = np.array(sorted(set(classes)))
        self._sigma = sigma

    def region_mask(self, crop_bgr: np.ndarray) -> np.ndarray:
        """``float32`` (S, S) in [0, 1]: 1 on the kept classes, feathered at their edge."""
        return self.region_masks([crop_bgr])[0]

    def region_masks(self, crops_bgr: Sequence[np.ndarray]) -> list[np.ndarray]:
        """`region_mask` for several crops (one session call when the graph's batch is dynamic;
        crops may differ in size)."""
        if not crops_bgr:
            return []
        resized = [
            crop
            if crop.shape[:2] == (PARSER_SIZE, PARSER_SIZE)
            else cv2.resize(crop, (PARSER_SIZE, PARSER_SIZE), interpolation=cv2.INTER_LINEAR)
            for crop in crops_bgr
        ]
        blob = crops_to_blob(resized, PARSER_SIZE, IMAGENET_MEAN, IMAGENET_STD)
        logits = self._graph.run(blob)
        if logits.ndim != 4 or logits.shape[1] != NUM_CLASSES:
            raise ModelError(
                f"face parser output has shape {list(logits.shape)}; expected [N, 19, 512, 512]"
            )
        labels = logits.argmax(axis=1)
        masks = []
        for crop, label in zip(crops_bgr, labels, strict=True):
            hard = np.isin(label, self._classes).astype(np.float32)
            height, width = crop.shape[:2]
            if (height, width) != hard.shape:
                hard = np.asarray(
                    cv2.resize(hard, (width, height), interpolation=cv2.INTER_LINEAR),
                    dtype=np.float32,
                )
            masks.append(feather(hard, self._sigma))
        return masks
