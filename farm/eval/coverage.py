"""Did the swap reach every face: faces YuNet finds in the input against faces the output changed.

A face counts as changed when the SSIM of its box, input against output, falls below
`CHANGED_SSIM`: a re-encode alone keeps it near 0.95-0.99, a swapped face drops well below.
"""

from __future__ import annotations

from typing import ClassVar

from farm.eval.base import EvalContext, FramePair, JudgeModels
from farm.eval.metrics import CoverageMetrics, CoveragePoint, ShotCoverage
from farm.eval.regions import face_changed_ssim

CHANGED_SSIM = 0.85


class CoverageJudge:
    name: ClassVar[str] = "coverage"

    def __init__(self, context: EvalContext, models: JudgeModels) -> None:
        del models  # the frame pass has already found the faces
        self._context = context
        self._faces = [0] * len(context.shots)
        self._changed = [0] * len(context.shots)
        self._series: list[CoveragePoint] = []
        self._frames = 0

    def observe(self, pair: FramePair) -> None:
        self._frames += 1
        changed = sum(
            face_changed_ssim(pair.source, pair.output, face) < CHANGED_SSIM
            for face in pair.source_faces
        )
        self._faces[pair.shot] += len(pair.source_faces)
        self._changed[pair.shot] += changed
        if pair.index in self._context.sampled:
            self._series.append(
                CoveragePoint(frame=pair.index, faces=len(pair.source_faces), changed=changed)
            )

    def finish(self) -> CoverageMetrics:
        shots = [
            ShotCoverage(
                shot=i,
                start_frame=start,
                end_frame=end,
                faces_in_input=self._faces[i],
                faces_changed=self._changed[i],
                share_changed=_share(self._changed[i], self._faces[i]),
            )
            for i, (start, end) in enumerate(self._context.shots)
        ]
        faces, changed = sum(self._faces), sum(self._changed)
        return CoverageMetrics(
            frames_sampled=self._frames,
            faces_in_input=faces,
            faces_changed=changed,
            share_changed=_share(changed, faces),
            changed_threshold=CHANGED_SSIM,
            shots=shots,
            series=self._series,
        )


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
