"""The paper's table (§5): SSIM over N random frame pairs, source against output, and the identity
image against the output face; plus SSIM inside and outside the face, and PSNR.

SSIM is Wang et al.'s, on luma with a Gaussian window (`farm.eval.regions.ssim_map`). The face
mask is the union of the input's YuNet face ellipses; outside it a good swap leaves SSIM near 1.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from farm.eval.base import EvalContext, FramePair, JudgeModels, matched_face
from farm.eval.metrics import FidelityMetrics, FramePairScore
from farm.eval.regions import face_mask, luma, masked_mean, psnr_db, ssim_map


class FidelityJudge:
    name: ClassVar[str] = "fidelity"

    def __init__(self, context: EvalContext, models: JudgeModels) -> None:
        self._context = context
        self._models = models
        self._pairs = frozenset(context.pairs)
        self._identity_crops = self._aligned_identity_crops()
        self._scores: list[FramePairScore] = []

    def _aligned_identity_crops(self) -> list[np.ndarray]:
        crops = []
        for image in self._context.identity_faces:
            faces = self._models.detect(image)
            if faces:
                crops.append(luma(self._models.aligned_crop(image, faces[0])))
        return crops

    def observe(self, pair: FramePair) -> None:
        if pair.index not in self._pairs:
            return
        full = ssim_map(luma(pair.source), luma(pair.output))
        mask = face_mask(pair.source.shape[:2], pair.source_faces)
        identity_ssim = None
        if self._identity_crops and pair.source_faces:
            face = pair.source_faces[0]
            out_face = matched_face(face, pair.output_faces) or face
            crop = luma(self._models.aligned_crop(pair.output, out_face))
            identity_ssim = float(np.mean([ssim_map(c, crop).mean() for c in self._identity_crops]))
        self._scores.append(
            FramePairScore(
                frame=pair.index,
                ssim=round(float(full.mean()), 4),
                ssim_face=_round(masked_mean(full, mask)),
                ssim_outside_face=_round(masked_mean(full, ~mask)),
                psnr_db=round(psnr_db(pair.source, pair.output), 3),
                identity_ssim=_round(identity_ssim),
            )
        )

    def finish(self) -> FidelityMetrics:
        if not self._scores:
            raise ValueError("the fidelity judge saw none of its frame pairs")

        def mean(values: list[float | None]) -> float | None:
            present = [v for v in values if v is not None]
            return round(float(np.mean(present)), 4) if present else None

        return FidelityMetrics(
            pairs=self._scores,
            ssim_source_output=round(float(np.mean([s.ssim for s in self._scores])), 4),
            ssim_identity_output=mean([s.identity_ssim for s in self._scores]),
            ssim_outside_face=mean([s.ssim_outside_face for s in self._scores]),
            ssim_face=mean([s.ssim_face for s in self._scores]),
            psnr_db=round(float(np.mean([s.psnr_db for s in self._scores])), 3),
        )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
