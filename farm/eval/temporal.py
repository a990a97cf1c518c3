"""Temporal stability: face jitter (YuNet landmark acceleration) and flicker in the face region.

Jitter is ``|p[t+1] - 2 p[t] + p[t-1]|`` of the five YuNet points of the largest face, in pixels,
averaged where the face is found in three consecutive frames at about the same place; smooth
motion does not count, shaking does. Flicker is the mean absolute luma second difference inside
the input's face ellipse. Both are given for the input and the output; the ratios say whether
the output is as steady as what it came from.
"""

from __future__ import annotations

from collections import deque
from typing import ClassVar

import numpy as np

from farm.eval.base import EvalContext, Face, FramePair, JudgeModels, matched_face
from farm.eval.metrics import TemporalMetrics, TemporalPoint
from farm.eval.regions import face_mask, luma


def acceleration(points: list[np.ndarray]) -> float:
    """Mean point acceleration of three consecutive (5, 2) point sets, in pixels per frame²."""
    before, now, after = points
    return float(np.linalg.norm(after - 2 * now + before, axis=1).mean())


class TemporalJudge:
    name: ClassVar[str] = "temporal"

    def __init__(self, context: EvalContext, models: JudgeModels) -> None:
        del models
        self._context = context
        self._window: deque[FramePair] = deque(maxlen=3)
        self._jitter: tuple[list[float], list[float]] = ([], [])
        self._flicker: tuple[list[float], list[float]] = ([], [])
        self._series: list[TemporalPoint] = []

    def observe(self, pair: FramePair) -> None:
        self._window.append(pair)
        if len(self._window) < 3:
            return
        now = self._window[1]
        if not now.source_faces or len({p.shot for p in self._window}) > 1:
            return  # a cut is not jitter
        anchor = now.source_faces[0]
        jitter_in = self._track_jitter(anchor, [p.source_faces for p in self._window])
        jitter_out = self._track_jitter(anchor, [p.output_faces for p in self._window])
        mask = face_mask(now.source.shape[:2], (anchor,))
        flicker_in = flicker([luma(p.source) for p in self._window], mask)
        flicker_out = flicker([luma(p.output) for p in self._window], mask)
        if jitter_in is not None and jitter_out is not None:
            self._jitter[0].append(jitter_in)
            self._jitter[1].append(jitter_out)
        if flicker_in is not None and flicker_out is not None:
            self._flicker[0].append(flicker_in)
            self._flicker[1].append(flicker_out)
        if now.index in self._context.sampled:
            self._series.append(
                TemporalPoint(
                    frame=now.index,
                    jitter_input=_round(jitter_in),
                    jitter_output=_round(jitter_out),
                    flicker_input=_round(flicker_in),
                    flicker_output=_round(flicker_out),
                )
            )

    @staticmethod
    def _track_jitter(anchor: Face, faces: list[tuple[Face, ...]]) -> float | None:
        track = [matched_face(anchor, candidates) for candidates in faces]
        if any(face is None for face in track):
            return None
        return acceleration([face.points for face in track if face is not None])

    def finish(self) -> TemporalMetrics:
        jitter_in, jitter_out = (_mean(v) for v in self._jitter)
        flicker_in, flicker_out = (_mean(v) for v in self._flicker)
        return TemporalMetrics(
            jitter_input=jitter_in,
            jitter_output=jitter_out,
            jitter_ratio=_ratio(jitter_out, jitter_in),
            flicker_input=flicker_in,
            flicker_output=flicker_out,
            flicker_ratio=_ratio(flicker_out, flicker_in),
            series=self._series,
        )


def flicker(frames: list[np.ndarray], mask: np.ndarray) -> float | None:
    """Mean |luma second difference| of three consecutive luma frames inside ``mask``."""
    if not mask.any():
        return None
    second = np.abs(frames[2] - 2 * frames[1] + frames[0])
    return float(second[mask].mean())


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def _ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or baseline is None or baseline <= 1e-9:
        return None
    return round(value / baseline, 4)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
