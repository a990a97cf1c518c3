"""Face tracks inside one shard: association, gap filling and One-Euro landmark smoothing.

Per batch of consecutive frames::

    every frame     re-find each live track with the detector on a small window around its last
                    box (YuNet on a crop scaled so the face is at most 100 px wide: ~6 ms)
    every k frames  full-frame detection; detections that match no live track (IoU) revive a
                    recently lost track with the same descriptor, or start a new track, which is
                    then extended *backwards* through the batch's earlier frames
    after the batch gaps of up to ``max_gap`` frames between two sightings are interpolated
                    linearly; landmarks then pass through a per-track One-Euro filter in frame order

A track that is not seen for more than ``max_gap`` frames is lost (a face that comes back later
gets a new track, or its old id back when descriptors are on). `FaceTracker.reset` forgets
everything: call it at scene cuts. Gaps are filled only where both ends fall in frames not yet
emitted, since a processor cannot hold frames back across batches.

Detection goes through the `FaceDetector` protocol (YuNet by default, dlib HOG as the last
resort); landmarks stay dlib's 68 points, fitted inside the detection's box mapped to the box the
shape predictor was trained on (`HogBoxRelation`). Why a window and not the detector on every
full frame: on the 2-core build machine YuNet costs about 22 ms on a 640x360 frame, four times
the swap of one face, while the window around a known face costs about 6 ms and finds the same
face (it is the same detector, so a turning face is not lost between full
detections as it was with the frontal-only HOG window).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

from farm.face.detectors import Detection, FaceDetector
from farm.face.dlib_stack import HOG_ITSELF, HogBoxRelation, descriptor_distance, fit_68
from farm.face.geometry import (
    Box,
    Landmarks,
    alignment_matrix,
    box_area,
    box_of,
    expand_box,
    iou,
    transform_points,
)
from farm.face.timing import StageTimer

MATCH_IOU = 0.3
"""Minimum IoU for a detection to continue a track."""
REID_DISTANCE = 0.5
"""Descriptor distance under which a new face is a lost track coming back."""
NEAR_MARGIN = 0.4
"""The re-find window: the last box grown by this fraction of its size on every side."""
NEAR_FACE_PX = 100
"""The window is shrunk so the face is at most about this wide (detector cost, not recall)."""
NEAR_MAX_SHIFT = 0.6
"""A re-found face's centre may be at most this many box widths from the last one."""
MIN_WINDOW_PX = 16
"""Windows smaller than this (a face almost off-frame) are not searched."""


class Landmarker(Protocol):
    """The 68-point landmarks and descriptors of a face (`farm.face.dlib_stack.DlibFaceStack`)."""

    def landmarks(self, gray: np.ndarray, box: Box) -> Landmarks: ...

    def descriptor(self, rgb: np.ndarray, landmarks: Landmarks) -> np.ndarray: ...


class OneEuroFilter:
    """The One-Euro filter (Casiez et al., CHI 2012) on arrays: smooth when still, quick in motion.

    Arguments:
        min_cutoff: cutoff frequency (Hz) at zero speed; lower removes more jitter.
        beta: how fast the cutoff rises with speed; higher removes more lag.
        d_cutoff: cutoff (Hz) of the speed estimate.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0) -> None:
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, dt: float) -> np.ndarray:
        """Filter one sample taken ``dt`` seconds after the previous one."""
        x = x.astype(np.float64)
        if self._x is None or self._dx is None or dt <= 0:
            self._x, self._dx = x, np.zeros_like(x)
            return x.astype(np.float32)
        dx = (x - self._x) / dt
        a_d = self._alpha(self.d_cutoff, dt)
        self._dx = a_d * dx + (1 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        a = self._alpha(cutoff, dt)
        self._x = a * x + (1 - a) * self._x
        return self._x.astype(np.float32)


def face_size(landmarks: Landmarks) -> float:
    """Jaw width in pixels: the filter's unit, so its speeds do not depend on resolution."""
    return float(np.linalg.norm(landmarks[16] - landmarks[0])) or 1.0


@dataclass
class Track:
    """One face followed through a shard."""

    track_id: int
    box: Box
    last_seen: int
    last_landmarks: Landmarks
    filter_state: OneEuroFilter
    missed: int = 0
    last_filtered: int | None = None
    descriptor: np.ndarray | None = None
    descriptor_samples: int = 0
    descriptor_at: int = -(10**9)
    mean_shape: np.ndarray | None = None
    shape_samples: int = 0
    colour: tuple[np.ndarray, np.ndarray] | None = None
    selected: bool = False
    extra: dict[str, float] = field(default_factory=dict)

    def add_descriptor(self, descriptor: np.ndarray, index: int) -> None:
        """Fold one descriptor into the track's running mean."""
        n = self.descriptor_samples
        self.descriptor = (
            descriptor if self.descriptor is None else (self.descriptor * n + descriptor) / (n + 1)
        )
        self.descriptor_samples = n + 1
        self.descriptor_at = index

    def add_shape(self, landmarks: Landmarks) -> None:
        """Fold one observation into the track's mean canonical shape."""
        shape = transform_points(landmarks, alignment_matrix(landmarks, 1))
        weight = max(1.0 / (self.shape_samples + 1), 0.02)
        self.mean_shape = (
            shape if self.mean_shape is None else (1 - weight) * self.mean_shape + weight * shape
        )
        self.shape_samples += 1

    def smooth_colour(self, stats: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Exponential smoothing of the target's skin colour statistics (no flicker)."""
        if self.colour is None:
            self.colour = stats
        else:
            self.colour = (
                0.8 * self.colour[0] + 0.2 * stats[0],
                0.8 * self.colour[1] + 0.2 * stats[1],
            )
        return self.colour


@dataclass(frozen=True)
class TrackedFace:
    """A track's smoothed landmarks in one frame."""

    track: Track
    landmarks: Landmarks
    observed: bool
    """False when the landmarks were interpolated across a detection gap."""


class FaceTracker:
    """Tracks faces through consecutive batches of one shard."""

    def __init__(
        self,
        detector: FaceDetector,
        landmarker: Landmarker,
        *,
        hog_box: HogBoxRelation = HOG_ITSELF,
        detect_every: int = 5,
        detect_max_side: int = 640,
        max_gap: int = 3,
        min_cutoff: float = 1.0,
        beta: float = 0.05,
        descriptor_every: int = 0,
        fps: float = 25.0,
        timer: StageTimer | None = None,
    ) -> None:
        """``hog_box``: where the shape predictor's box sits relative to ``detector``'s boxes.
        ``descriptor_every``: compute a descriptor when a track starts and then every so many
        frames (0: never; descriptors cost about 100 ms each)."""
        self._detector = detector
        self._stack = landmarker
        self._hog_box = hog_box
        self.detect_every = detect_every
        self.detect_max_side = detect_max_side
        self.max_gap = max_gap
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.descriptor_every = descriptor_every
        self.fps = fps
        self.timer = timer or StageTimer()
        self.reset()

    def reset(self) -> None:
        """Forget every track (a scene cut or a new shard)."""
        self.tracks: list[Track] = []
        self.lost: list[Track] = []
        self._next_id = 0
        self._last_full: int | None = None
        self._ended: list[Track] = []

    def track_batch(
        self, frames: Sequence[np.ndarray], indices: Sequence[int]
    ) -> list[list[TrackedFace]]:
        """Track faces through consecutive BGR frames; smoothed faces per frame, in order."""
        grays = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
        before = {t.track_id: (t.last_seen, t.last_landmarks) for t in self.tracks}
        self._ended = []
        seen: list[dict[int, Landmarks]] = [{} for _ in frames]
        for i, index in enumerate(indices):
            self._follow(frames[i], grays[i], index, seen[i])
            if self._last_full is None or index - self._last_full >= self.detect_every:
                self._last_full = index
                self._discover(frames, grays, indices, i, seen)
            self._expire(index)
            self._describe(frames[i], index, seen[i])
        filled = self._fill_gaps(indices, seen, before)
        return self._smooth(indices, filled, seen)

    # -- per frame -------------------------------------------------------------------------

    def _follow(
        self, frame: np.ndarray, gray: np.ndarray, index: int, seen: dict[int, Landmarks]
    ) -> None:
        for track in self.tracks:
            found = self._near(frame, track.box)
            if found is None:
                track.missed += 1
                continue
            self._observe(track, gray, found, index, seen)

    def _near(self, frame: np.ndarray, box: Box) -> Detection | None:
        """Re-find the face last seen at ``box``: the detector on a window around it.

        The window is shrunk (the protocol's ``max_side``) so the face is about `NEAR_FACE_PX`
        wide, never enlarged. Of the faces found, the one nearest the last centre wins, if it is
        within `NEAR_MAX_SHIFT` box widths; a face that walked further is found again by the next
        full-frame detection.
        """
        height, width = frame.shape[:2]
        x0, y0, x1, y1 = expand_box(box, NEAR_MARGIN, width, height)
        if x1 - x0 < MIN_WINDOW_PX or y1 - y0 < MIN_WINDOW_PX:
            return None
        face_w = max(box[2] - box[0], 1.0)
        long_side = max(x1 - x0, y1 - y0)
        max_side = round(long_side * NEAR_FACE_PX / face_w) if face_w > NEAR_FACE_PX else 0
        with self.timer("detect"):
            found = self._detector.detect(frame[y0:y1, x0:x1], max_side=max_side)
        if not found:
            return None
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2

        def shift(d: Detection) -> float:
            return math.hypot(
                (d.box[0] + d.box[2]) / 2 + x0 - cx, (d.box[1] + d.box[3]) / 2 + y0 - cy
            )

        best = min(found, key=shift)
        if shift(best) > NEAR_MAX_SHIFT * face_w:
            return None
        return _offset(best, x0, y0)

    def _fit(self, gray: np.ndarray, detection: Detection) -> Landmarks:
        with self.timer("landmarks"):
            return fit_68(self._stack, gray, detection, self._hog_box)

    def _observe(
        self,
        track: Track,
        gray: np.ndarray,
        detection: Detection,
        index: int,
        seen: dict[int, Landmarks],
    ) -> None:
        landmarks = self._fit(gray, detection)
        box = detection.box
        track.box, track.last_seen, track.last_landmarks, track.missed = box, index, landmarks, 0
        track.add_shape(landmarks)
        seen[track.track_id] = landmarks

    def _discover(
        self,
        frames: Sequence[np.ndarray],
        grays: Sequence[np.ndarray],
        indices: Sequence[int],
        i: int,
        seen: list[dict[int, Landmarks]],
    ) -> None:
        with self.timer("detect"):
            detections = self._detector.detect(frames[i], max_side=self.detect_max_side)
        index = indices[i]
        for detection in detections:
            box = detection.box
            if any(iou(box, t.box) > MATCH_IOU for t in self.tracks if t.track_id in seen[i]):
                continue
            missing = [t for t in self.tracks if t.track_id not in seen[i]]
            best = max(missing, key=lambda t: iou(box, t.box), default=None)
            if best is not None and iou(box, best.box) > MATCH_IOU:
                self._observe(best, grays[i], detection, index, seen[i])
                continue
            track = self._start(frames[i], grays[i], detection, index, seen[i])
            self._extend_back(track, frames, grays, indices, i, seen)

    def _start(
        self,
        frame: np.ndarray,
        gray: np.ndarray,
        detection: Detection,
        index: int,
        seen: dict[int, Landmarks],
    ) -> Track:
        box = detection.box
        landmarks = self._fit(gray, detection)
        descriptor = None
        if self.descriptor_every > 0:
            descriptor = self._descriptor(frame, landmarks)
        track: Track | None = None
        if descriptor is not None and self.lost:
            nearest = min(self.lost, key=lambda t: _distance(t, descriptor))
            if _distance(nearest, descriptor) < REID_DISTANCE:
                track = nearest
                self.lost.remove(nearest)
                track.box, track.last_seen, track.last_landmarks = box, index, landmarks
                track.missed, track.filter_state = 0, self._new_filter()
                track.last_filtered = None
        if track is None:
            track = Track(
                track_id=self._next_id,
                box=box,
                last_seen=index,
                last_landmarks=landmarks,
                filter_state=self._new_filter(),
            )
            self._next_id += 1
        if descriptor is not None:
            track.add_descriptor(descriptor, index)
        track.add_shape(landmarks)
        self.tracks.append(track)
        seen[track.track_id] = landmarks
        return track

    def _extend_back(
        self,
        track: Track,
        frames: Sequence[np.ndarray],
        grays: Sequence[np.ndarray],
        indices: Sequence[int],
        i: int,
        seen: list[dict[int, Landmarks]],
    ) -> None:
        """A face found at batch position ``i`` was probably there a few frames earlier too."""
        box = track.box
        for j in range(i - 1, max(-1, i - self.detect_every), -1):
            found = self._near(frames[j], box)
            if found is None:
                break
            seen[j][track.track_id] = self._fit(grays[j], found)
            box = found.box

    def _expire(self, index: int) -> None:
        for track in [t for t in self.tracks if t.missed > self.max_gap]:
            self.tracks.remove(track)
            self._ended.append(track)
            if track.descriptor is not None:
                self.lost.append(track)
        keep_frames = int(30 * self.fps)
        self.lost = [t for t in self.lost if index - t.last_seen <= keep_frames]

    def _describe(self, frame: np.ndarray, index: int, seen: dict[int, Landmarks]) -> None:
        if self.descriptor_every <= 0:
            return
        for track in self.tracks:
            if track.track_id in seen and index - track.descriptor_at >= self.descriptor_every:
                track.add_descriptor(self._descriptor(frame, seen[track.track_id]), index)

    def _descriptor(self, frame: np.ndarray, landmarks: Landmarks) -> np.ndarray:
        with self.timer("descriptor"):
            return self._stack.descriptor(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), landmarks)

    def _new_filter(self) -> OneEuroFilter:
        return OneEuroFilter(min_cutoff=self.min_cutoff, beta=self.beta)

    # -- per batch -------------------------------------------------------------------------

    def _fill_gaps(
        self,
        indices: Sequence[int],
        seen: list[dict[int, Landmarks]],
        before: dict[int, tuple[int, Landmarks]],
    ) -> list[dict[int, Landmarks]]:
        """Interpolate each track linearly across gaps of up to ``max_gap`` frames."""
        filled: list[dict[int, Landmarks]] = [dict(s) for s in seen]
        position = {index: i for i, index in enumerate(indices)}
        track_ids = {tid for s in seen for tid in s}
        for tid in track_ids:
            sightings = [(indices[i], s[tid]) for i, s in enumerate(seen) if tid in s]
            if tid in before:
                sightings.insert(0, before[tid])
            for (a, la), (b, lb) in itertools.pairwise(sightings):
                if not 1 < b - a <= self.max_gap + 1:
                    continue
                for k in range(a + 1, b):
                    if k in position:
                        t = (k - a) / (b - a)
                        filled[position[k]][tid] = ((1 - t) * la + t * lb).astype(np.float32)
        return filled

    def _smooth(
        self,
        indices: Sequence[int],
        filled: list[dict[int, Landmarks]],
        seen: list[dict[int, Landmarks]],
    ) -> list[list[TrackedFace]]:
        by_id = {t.track_id: t for t in self._ended + self.lost + self.tracks}
        out: list[list[TrackedFace]] = []
        for i, index in enumerate(indices):
            faces = []
            for tid, landmarks in sorted(filled[i].items()):
                track = by_id.get(tid)
                if track is None:
                    continue
                dt = 1.0 / self.fps
                if track.last_filtered is not None:
                    dt *= max(1, index - track.last_filtered)
                if track.last_filtered is None:
                    track.extra["scale"] = face_size(landmarks)
                scale = track.extra.get("scale", 1.0)
                smoothed = track.filter_state(landmarks / scale, dt) * scale
                track.last_filtered = index
                faces.append(
                    TrackedFace(
                        track=track,
                        landmarks=smoothed.astype(np.float32),
                        observed=tid in seen[i],
                    )
                )
            out.append(faces)
        return out


def _offset(detection: Detection, dx: float, dy: float) -> Detection:
    """A detection made in a window, in the pixels of the frame the window was cut from."""
    x0, y0, x1, y1 = detection.box
    points = detection.points5
    if points is not None:
        points = (points + np.array([dx, dy], dtype=np.float32)).astype(np.float32)
    return Detection(
        box=(x0 + dx, y0 + dy, x1 + dx, y1 + dy), score=detection.score, points5=points
    )


def _distance(track: Track, descriptor: np.ndarray) -> float:
    return (
        descriptor_distance(track.descriptor, descriptor) if track.descriptor is not None else 9.0
    )


def largest(faces: Sequence[TrackedFace]) -> TrackedFace | None:
    """The face with the largest landmark box."""
    return max(faces, key=lambda f: box_area(box_of(f.landmarks)), default=None)
