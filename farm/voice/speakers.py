"""Who says each sentence: re-voice only the person who was swapped.

With ``--faces reference`` one person of several is swapped; their voice should change and
nobody else's. Each sentence is given to the face whose mouth moves while it is spoken (the
active speaker): the swap's own tracker and selection follow the faces over the sentence's
frames, so "the swapped person" here is exactly who the swap changes, and each track's mouth
opening (inner-lip gap over the eye distance, from its 68 landmarks) is measured frame by frame.
The track whose opening varies most speaks. A sentence nobody visibly says (the swapped person
off screen, a narrator, no face at all) is ``unseen`` and keeps its original audio: the dub
changes only speech it can attribute to the swapped person.

What this does not do: tell apart two voices of one face, or an off-screen line of the swapped
person (that needs diarisation by voice).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from farm.voice.model import Sentence, SentenceSpeaker, SpeakerLabel

MIN_MOUTH_MOTION = 0.015
"""Standard deviation of the mouth opening (in eye distances) below which a face is not talking:
a still or frozen face measures about 0.000-0.005 (landmark jitter), speech 0.03-0.10."""

MIN_FRAMES = 4
"""A track seen in fewer of a sentence's frames than this says nothing about it."""


@dataclass(frozen=True)
class ObservedFace:
    """One face in one frame: its track, whether the swap selects it, and its 68 landmarks."""

    track_id: int
    selected: bool
    landmarks: np.ndarray


class FaceObserver(Protocol):
    """Follows faces over consecutive frames the way the swap does (tracker and selection)."""

    def observe(
        self, frames: Sequence[np.ndarray], indices: Sequence[int]
    ) -> list[list[ObservedFace]]: ...

    def start_range(self, start: int, stop: int, fps: float) -> None:
        """Forget earlier tracks: frames [start, stop) of one scene follow."""
        ...


class ReadFrames(Protocol):
    """BGR frames [start, stop) of the video, with their indices."""

    def __call__(self, start: int, stop: int) -> Iterable[tuple[int, np.ndarray]]: ...


def mouth_opening(landmarks: np.ndarray) -> float:
    """Inner-lip gap (points 61-63 to 67-65) over the distance between the eye centres."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"mouth_opening needs 68 landmarks, got shape {points.shape}")
    gap = float(np.mean(np.linalg.norm(points[[61, 62, 63]] - points[[67, 66, 65]], axis=1)))
    eyes = float(np.linalg.norm(points[36:42].mean(axis=0) - points[42:48].mean(axis=0)))
    return gap / eyes if eyes > 1e-6 else 0.0


def attribute(
    index: int, observed: Iterable[list[ObservedFace]], *, frames: int
) -> SentenceSpeaker:
    """The active speaker of one sentence from its frames' observed faces."""
    openings: dict[int, list[float]] = defaultdict(list)
    selected: dict[int, bool] = {}
    for faces in observed:
        for face in faces:
            openings[face.track_id].append(mouth_opening(face.landmarks))
            # A track selected in any frame is the swapped person's (selection can start late,
            # once the track's descriptor is in).
            selected[face.track_id] = selected.get(face.track_id, False) or face.selected
    swapped = other = 0.0
    for track_id, values in openings.items():
        if len(values) < MIN_FRAMES:
            continue
        motion = float(np.std(values))
        if selected[track_id]:
            swapped = max(swapped, motion)
        else:
            other = max(other, motion)
    label: SpeakerLabel = "unseen"
    if max(swapped, other) >= MIN_MOUTH_MOTION:
        label = "swapped" if swapped >= other else "other"
    return SentenceSpeaker(index, label, round(swapped, 4), round(other, 4), frames)


def sentence_frames(
    sentence: Sentence, sample_rate: int, fps: float, frame_count: int
) -> tuple[int, int]:
    """The frames shown while the sentence's speech plays: [first, stop)."""
    first = math.floor(sentence.speech_start_sample / sample_rate * fps)
    stop = math.ceil(sentence.speech_stop_sample / sample_rate * fps)
    return max(0, min(first, frame_count)), max(0, min(stop, frame_count))


def sentence_speakers(
    sentences: Sequence[Sentence],
    sample_rate: int,
    fps: float,
    frame_count: int,
    observer: FaceObserver,
    read_frames: ReadFrames,
    *,
    batch: int = 16,
) -> list[SentenceSpeaker]:
    """Each sentence's active speaker, following faces over the frames it is spoken in."""
    speakers = []
    for sentence in sentences:
        first, stop = sentence_frames(sentence, sample_rate, fps, frame_count)
        if stop <= first:
            speakers.append(SentenceSpeaker(sentence.index, "unseen", 0.0, 0.0, 0))
            continue
        observer.start_range(first, stop, fps)
        observed: list[list[ObservedFace]] = []
        frames: list[np.ndarray] = []
        indices: list[int] = []
        for index, frame in read_frames(first, stop):
            frames.append(frame)
            indices.append(index)
            if len(frames) == batch:
                observed.extend(observer.observe(frames, indices))
                frames, indices = [], []
        if frames:
            observed.extend(observer.observe(frames, indices))
        speakers.append(attribute(sentence.index, observed, frames=stop - first))
    return speakers
