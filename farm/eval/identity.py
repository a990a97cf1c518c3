"""Whose face is in the output: SFace similarity to the identity and to the original person.

Faces are found by YuNet in the *input* (where faces are); the output face at the same place is
the one YuNet finds there, or, when it finds none, the crop aligned by the input face's points.
Nothing here shares a model with the swap (dlib), so the swap is not graded by its own descriptor.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from farm.eval.base import EvalContext, FramePair, JudgeModels, matched_face
from farm.eval.metrics import IdentityMetrics, IdentityPoint
from farm.eval.models import SFACE_SAME_PERSON
from farm.eval.regions import cosine


def identity_embedding(models: JudgeModels, images: tuple[np.ndarray, ...]) -> np.ndarray | None:
    """The mean SFace feature of the largest face in each identity image (None: no face found)."""
    features = []
    for image in images:
        faces = models.detect(image)
        if faces:
            features.append(models.embed(image, faces[0]))
    if not features:
        return None
    mean = np.mean(features, axis=0)
    return np.asarray(mean / max(float(np.linalg.norm(mean)), 1e-12), dtype=np.float32)


class IdentityJudge:
    name: ClassVar[str] = "identity"

    def __init__(self, context: EvalContext, models: JudgeModels) -> None:
        self._context = context
        self._models = models
        self._identity = identity_embedding(models, context.identity_faces)
        self._points: list[IdentityPoint] = []
        self._closer: list[bool] = []
        self._frames = 0

    def observe(self, pair: FramePair) -> None:
        if pair.index not in self._context.sampled or not pair.source_faces:
            return
        self._frames += 1
        for face in pair.source_faces:
            original = self._models.embed(pair.source, face)
            out_face = matched_face(face, pair.output_faces) or face
            swapped = self._models.embed(pair.output, out_face)
            to_identity = cosine(swapped, self._identity) if self._identity is not None else None
            to_original = cosine(swapped, original)
            if to_identity is not None:
                self._closer.append(to_identity > to_original)
            self._points.append(
                IdentityPoint(
                    frame=pair.index,
                    time_s=round(pair.time_s, 4),
                    to_identity=None if to_identity is None else round(to_identity, 4),
                    to_original=round(to_original, 4),
                )
            )

    def finish(self) -> IdentityMetrics:
        to_identity = [p.to_identity for p in self._points if p.to_identity is not None]
        to_original = [p.to_original for p in self._points]
        return IdentityMetrics(
            frames_sampled=self._frames,
            faces=len(self._points),
            mean_to_identity=_mean(to_identity),
            mean_to_original=_mean(to_original),
            closer_to_identity=_mean([float(c) for c in self._closer]),
            same_person_threshold=SFACE_SAME_PERSON,
            series=self._points,
        )


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None
