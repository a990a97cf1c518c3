"""Face restoration after the swap: GFPGAN 1.4 or CodeFormer on 512² FFHQ-aligned crops.

inswapper works at 128² and SimSwap at 256²; pasted onto a 1080p face that is visibly soft. The
enhancers re-synthesise skin detail at 512² (faceswap.md §2.9, FaceFusion's contract)::

    crop (ffhq_512, 512²) ─► RGB, (x/255 − 0.5)/0.5, NCHW ─► model ─► clip [−1, 1] ─► [0, 255]
         ─► BGR, rounded ─► blended with the input crop at ``strength``

Inputs: GFPGAN ``input`` (1,3,512,512); CodeFormer ``input`` plus ``weight``, its fidelity
(0 = the most restoration, 1 = closest to the input). FaceFusion feeds the weight as
``numpy.array([w]).astype(numpy.double)``, shape (1,) float64; this wrapper casts it to whatever
type and rank the graph declares, so a float32 export loads too.

FaceFusion blends the *pasted frame* with the unenhanced frame (``blend_frame``); blending the
crops before the paste is the same inside the paste mask (the input crop is the frame resampled),
and keeps the work inside the face's ROI.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from farm.errors import ModelError
from farm.face.onnx.align import TemplateName
from farm.face.onnx.runtime import SessionFactory
from farm.face.onnx.swappers import ImageGraph, crops_to_blob

EnhancerName = Literal["gfpgan_1.4", "codeformer"]
ENHANCER_SIZE = 512
DEFAULT_FIDELITY = 0.5
"""FaceFusion's default ``face_enhancer_weight``."""


class FaceEnhancer:
    """GFPGAN 1.4 or CodeFormer on aligned 512² crops, blended in at ``strength`` in [0, 1]."""

    template: TemplateName = "ffhq_512"
    crop_size = ENHANCER_SIZE

    def __init__(
        self,
        name: EnhancerName,
        model: Path,
        sessions: SessionFactory,
        *,
        strength: float = 0.8,
        fidelity: float = DEFAULT_FIDELITY,
    ) -> None:
        if name not in ("gfpgan_1.4", "codeformer"):
            raise ModelError(f"unknown face enhancer {name!r}; known: gfpgan_1.4, codeformer")
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"enhancer strength must be in [0, 1], got {strength}")
        if not 0.0 <= fidelity <= 1.0:
            raise ValueError(f"CodeFormer fidelity must be in [0, 1], got {fidelity}")
        self.name = name
        self.strength = strength
        shared = ("weight",) if name == "codeformer" else ()
        self._graph = ImageGraph(
            sessions.open(model), model, image="input", size=ENHANCER_SIZE, shared=shared
        )
        self._shared: dict[str, np.ndarray] = {}
        if name == "codeformer":
            spec = self._graph.specs["weight"]
            shape = tuple(d if isinstance(d, int) else 1 for d in spec.shape)
            self._shared["weight"] = np.full(shape, fidelity, dtype=spec.dtype)

    def enhance_crops(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        """BGR ``uint8`` 512² crops → enhanced and blended BGR ``uint8`` crops, same order."""
        if not crops:
            return []
        if self.strength == 0.0:
            return [crop.copy() for crop in crops]
        blob = crops_to_blob(crops, ENHANCER_SIZE, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        output = self._graph.run(blob, shared=self._shared)
        if output.ndim != 4 or output.shape[1] != 3 or output.shape[0] != len(crops):
            raise ModelError(
                f"{self.name} output has shape {list(output.shape)}; expected "
                f"[{len(crops)}, 3, {ENHANCER_SIZE}, {ENHANCER_SIZE}]"
            )
        enhanced = (np.clip(output.astype(np.float32), -1.0, 1.0) + 1.0) * np.float32(127.5)
        enhanced = enhanced.transpose(0, 2, 3, 1)[..., ::-1]
        strength = np.float32(self.strength)
        results = []
        for crop, restored in zip(crops, enhanced, strict=True):
            blended = crop.astype(np.float32) * (np.float32(1.0) - strength) + restored * strength
            results.append(np.clip(np.rint(blended), 0, 255).astype(np.uint8))
        return results
