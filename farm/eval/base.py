"""The judge protocol and what judges see.

An evaluation decodes the input and the output once, in lockstep, and runs YuNet on both frames
of every pair; each judge gets those `FramePair`s in order (`observe`), then the audio and the
job's facts through its `EvalContext`, and returns its section of the report (`finish`).
Judges are small classes over explicit inputs: nothing here knows about jobs, Ray or files other
than the two media paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
from pydantic import BaseModel

from farm.models import ModelManifest

EVAL_SAMPLE_RATE = 16000
"""Audio judges get mono float32 at this rate."""


@dataclass(frozen=True)
class Face:
    """One YuNet detection: its raw row (box, 5 points, score), as SFace's alignCrop wants it."""

    row: np.ndarray
    """(15,) float32: x, y, w, h, then (x, y) of right eye, left eye, nose, mouth corners; score."""

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) in pixels, exclusive end."""
        x, y, w, h = (float(v) for v in self.row[:4])
        return round(x), round(y), round(x + w), round(y + h)

    @property
    def points(self) -> np.ndarray:
        """(5, 2) float32: right eye, left eye, nose tip, right and left mouth corner."""
        return np.asarray(self.row[4:14], dtype=np.float32).reshape(5, 2)

    @property
    def score(self) -> float:
        return float(self.row[14])

    @property
    def centre(self) -> np.ndarray:
        x0, y0, x1, y1 = self.box
        return np.array([(x0 + x1) / 2, (y0 + y1) / 2], dtype=np.float32)

    @property
    def width(self) -> float:
        return float(self.row[2])


@dataclass(frozen=True, eq=False)
class FramePair:
    """Frame ``index`` of the input and of the output (BGR uint8, same size) with their faces."""

    index: int
    time_s: float
    shot: int
    source: np.ndarray
    output: np.ndarray
    source_faces: tuple[Face, ...]
    output_faces: tuple[Face, ...]


@dataclass(frozen=True)
class SentenceSpan:
    """One spoken sentence of the timeline (from the job's voice report, or found by silence)."""

    index: int
    start_s: float
    end_s: float
    text: str | None = None
    stretch_ratio: float | None = None
    """The voice stage's time-stretch for it (None when the output did not come from a job)."""


@dataclass(frozen=True, eq=False)
class EvalAudio:
    """Mono float32 at `EVAL_SAMPLE_RATE`; None where a file has no audio."""

    source: np.ndarray | None
    output: np.ndarray | None
    reference_voices: tuple[np.ndarray, ...] = ()
    """The identity's consented voice clips (empty without an identity)."""
    sample_rate: int = EVAL_SAMPLE_RATE


@dataclass(frozen=True, eq=False)
class EvalContext:
    """The facts of one evaluation that every judge may read."""

    source: Path
    output: Path
    frames: int
    fps: float
    width: int
    height: int
    shots: tuple[tuple[int, int], ...]
    """Frame ranges [start, end) of the input's shots."""
    sampled: frozenset[int]
    """Frames where the expensive per-frame measures (SFace, SSIM series) are taken."""
    pairs: tuple[int, ...]
    """The random frame pairs of the paper's table and the contact sheet (seeded)."""
    identity_faces: tuple[np.ndarray, ...]
    """BGR images of the identity's faces (the pack's crops); empty without an identity."""
    audio: EvalAudio
    sentences: tuple[SentenceSpan, ...]
    transcript: str | None


class JudgeModels:
    """The judges' models, loaded on first use and shared by every judge of one evaluation."""

    def __init__(self, manifest: ModelManifest) -> None:
        self.manifest = manifest

    @cached_property
    def yunet(self) -> Any:
        from farm.eval.models import load_yunet

        return load_yunet(self.manifest)

    @cached_property
    def sface(self) -> Any:
        from farm.eval.models import load_sface

        return load_sface(self.manifest)

    @cached_property
    def dvector(self) -> Any:
        """The d-vector speaker encoder (`farm.eval.speaker.DVectorEncoder`)."""
        from farm.eval.speaker import DVectorEncoder

        return DVectorEncoder.from_manifest(self.manifest)

    @cached_property
    def whisper(self) -> Any:
        """Whisper tiny.en (`farm.eval.words.WhisperAsr`), loaded from its local folder."""
        from farm.eval.words import WhisperAsr

        return WhisperAsr.from_manifest(self.manifest)

    def detect(self, image: np.ndarray) -> tuple[Face, ...]:
        """YuNet faces in a BGR image, largest first."""
        height, width = image.shape[:2]
        self.yunet.setInputSize((width, height))
        _, found = self.yunet.detect(image)
        if found is None:
            return ()
        faces = [Face(np.asarray(row, dtype=np.float32)) for row in found]
        return tuple(sorted(faces, key=lambda f: -f.width))

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        """SFace's L2-normalised 128-D feature of one face."""
        crop = self.sface.alignCrop(image, face.row)
        feature = np.asarray(self.sface.feature(crop), dtype=np.float32).reshape(-1)
        return feature / max(float(np.linalg.norm(feature)), 1e-12)

    def aligned_crop(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The 112 x 112 BGR crop SFace reads (the paper's face crop for SSIM)."""
        return np.asarray(self.sface.alignCrop(image, face.row), dtype=np.uint8)


class Judge(Protocol):
    """One independent measure. ``observe`` gets every frame pair in order (ignore what you do not
    need); ``finish`` returns its section of `EvalReport` (the registry, `JUDGES`, says which)."""

    name: ClassVar[str]

    def observe(self, pair: FramePair) -> None: ...

    def finish(self) -> BaseModel: ...


def matched_face(face: Face, candidates: tuple[Face, ...]) -> Face | None:
    """The candidate at the same place as ``face`` (centre within half its width), else None."""
    best: Face | None = None
    best_distance = 0.5 * face.width
    for candidate in candidates:
        distance = float(np.linalg.norm(candidate.centre - face.centre))
        if distance <= best_distance:
            best, best_distance = candidate, distance
    return best


@dataclass(frozen=True, eq=False)
class ContactPair:
    """One of the random frame pairs, kept for the report's contact sheet (BGR uint8)."""

    frame: int
    time_s: float
    source: np.ndarray
    output: np.ndarray


@dataclass(frozen=True, eq=False)
class EvalArtifacts:
    """What the report page shows besides the numbers (never written to metrics.json)."""

    contact: tuple[ContactPair, ...]
    identity_faces: tuple[np.ndarray, ...]
    audio: EvalAudio
    sentences: tuple[SentenceSpan, ...]
