"""Audio-video offset from the mouth's movement against the speech envelope.

The mouth signal comes from pixels only, located by YuNet's five points (never the swap's dlib
stack): the frame is warped by the similarity that puts the eyes at (±0.5, 0) eye distances, and
the box x in [-0.35, 0.35], y in [0.80, 1.50] eye distances (the lips, from below the nose to
below the mouth corners, when the jaw is open too) is read at 60 px per eye distance. The
opening is the luma's standard deviation in that box over the face box's median luma: a closed
mouth is an even band of lip, an open one shows dark cavity and bright teeth. On the GRID clips
this contrast followed the speech better than the dark-pixel share or the row profile (peak
correlation 0.60-0.74 against 0.40-0.67), and it needs no threshold. The face read is the
largest one; among faces nearly as large, the one whose mouth moves most (see `MouthTrack`).

The speech envelope is the RMS of the 300-3000 Hz band in 40 ms centred on each frame's time.
Both series are high-passed inside each shot (minus a 0.36 s moving mean) and standardised per
shot, so a cut, a new face size or a level change adds nothing. Frames with no face are missing
(masked), not zero. The Pearson correlation of mouth[t] with envelope[t + lag] is taken for every
whole-frame lag within ±0.5 s; the peak is refined by a parabola through it and its neighbours.

- ``offset_ms`` > 0: the audio comes after the mouth (the envelope best matches later audio);
  None when the peak sits on the edge of the search (more than 0.5 s off, or no match).
- ``confidence``: the Pearson correlation at the peak (about 0.6-0.75 on the GRID clips, under
  0.2 for a wrong face or no speech).
- Sentences with at least 1 s of measured frames get their own offset, looked for within
  ±0.2 s of the clip's: over 2-3 s of speech the correlation has sidelobes at the syllable period
  (250-300 ms on GRID) that can rival the true peak, and a drift is a small change anyway. A
  sentence whose peak falls on that window's edge (more than 0.2 s away) gets None.
  ``trend_ms_per_min`` is the least-squares slope of the sentence offsets over the sentences' mid
  times (None under 3).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import ClassVar

import cv2
import numpy as np

from farm.errors import MediaError
from farm.eval.base import EvalContext, Face, FramePair, JudgeModels
from farm.eval.metrics import LipSyncMetrics, SentenceSync

MOUTH_BOX = (-0.35, 0.35, 0.80, 1.50)
"""x0, x1, y0, y1 of the mouth box in eye distances (eyes at (±0.5, 0), y down)."""
PX_PER_EYE_DISTANCE = 60.0
ENVELOPE_BAND_HZ = (300.0, 3000.0)
ENVELOPE_WINDOW_S = 0.040
DETREND_S = 0.36
MAX_LAG_S = 0.5
MIN_SENTENCE_FRAMES_S = 1.0
SENTENCE_REACH_S = 0.2
"""A sentence's offset is looked for within this of the whole clip's (see the module doc)."""
MIN_CLIP_FRAMES = 10
MIN_CONFIDENCE = 0.3
"""Below this peak correlation an offset is not given: a mouth that does not follow the speech
(a wrong face, no speech, a swapped mouth that no longer opens with it) has a peak anywhere."""
TIED_WIDTH = 0.75
"""Faces at least this share of the largest face's width are candidates for the talker (two
faces side by side at the same distance differ by 15 % in YuNet's width on the GRID composite)."""
MAX_TIED_FACES = 4
TRACK_GAP_FRAMES = 5


def _similarity_to_eyes(face: Face) -> np.ndarray:
    """2 x 3 affine from mouth-patch pixels to image pixels (use with WARP_INVERSE_MAP)."""
    points = face.points.astype(np.float64)
    right_eye, left_eye = points[0], points[1]
    centre = (right_eye + left_eye) / 2
    axis = left_eye - right_eye
    eye_distance = float(np.hypot(axis[0], axis[1]))
    angle = math.atan2(axis[1], axis[0])
    scale = eye_distance / PX_PER_EYE_DISTANCE
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    matrix = np.array([[c, -s, 0.0], [s, c, 0.0]])
    origin = np.array([MOUTH_BOX[0], MOUTH_BOX[2]]) * PX_PER_EYE_DISTANCE
    matrix[:, 2] = centre + matrix[:, :2] @ origin
    return matrix


def mouth_patch(image: np.ndarray, face: Face) -> np.ndarray:
    """The mouth box of ``face`` as a luma patch (uint8), upright and at a fixed scale."""
    width = round((MOUTH_BOX[1] - MOUTH_BOX[0]) * PX_PER_EYE_DISTANCE)
    height = round((MOUTH_BOX[3] - MOUTH_BOX[2]) * PX_PER_EYE_DISTANCE)
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return np.asarray(
        cv2.warpAffine(
            gray,
            _similarity_to_eyes(face),
            (width, height),
            flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
    )


def mouth_opening(image: np.ndarray, face: Face) -> float | None:
    """Luma contrast in the mouth box over the face's median luma; None for a degenerate face."""
    points = face.points
    if float(np.linalg.norm(points[1] - points[0])) < 4.0:
        return None
    height, width = image.shape[:2]
    x0, y0, x1, y1 = face.box
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    skin = float(np.median(gray[y0:y1, x0:x1]))
    if skin < 8.0:
        return None
    patch = mouth_patch(gray, face).astype(np.float32)
    return float(patch.std()) / skin


def band_energy(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Cumulative energy of the 300-3000 Hz band (one leading zero): windows sum in O(1)."""
    from scipy.signal import butter, sosfiltfilt

    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    low, high = ENVELOPE_BAND_HZ
    high = min(high, 0.45 * sample_rate)
    if x.size > 64:
        sos = butter(4, (low, high), btype="band", fs=sample_rate, output="sos")
        x = sosfiltfilt(sos, x)
    return np.concatenate(([0.0], np.cumsum(x * x)))


def speech_envelope(
    energy: np.ndarray, sample_rate: int, times_s: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """RMS in 40 ms centred on each time (from `band_energy`), and whether it lies in the audio."""
    samples = energy.size - 1
    half = max(1, round(ENVELOPE_WINDOW_S * sample_rate / 2))
    centres = np.round(np.asarray(times_s) * sample_rate).astype(np.int64)
    inside = (centres - half >= 0) & (centres + half <= samples)
    lo = np.clip(centres - half, 0, samples)
    hi = np.clip(centres + half, 0, samples)
    power = (energy[hi] - energy[lo]) / np.maximum(hi - lo, 1)
    return np.sqrt(np.maximum(power, 0.0)), inside


def highpass_per_shot(
    values: np.ndarray, valid: np.ndarray, shots: np.ndarray, width: int
) -> np.ndarray:
    """Minus a masked moving mean inside each shot, then standardised per shot (NaN: missing)."""
    out = np.full(values.shape, np.nan)
    kernel = np.ones(max(1, width))
    for shot in np.unique(shots):
        idx = np.flatnonzero(shots == shot)
        ok = valid[idx]
        if ok.sum() < 3:
            continue
        seg = np.where(ok, values[idx], 0.0)
        total = np.convolve(seg, kernel, mode="same")
        count = np.convolve(ok.astype(np.float64), kernel, mode="same")
        resid = seg - total / np.maximum(count, 1.0)
        spread = float(resid[ok].std())
        if spread <= 1e-12:
            continue
        resid = (resid - float(resid[ok].mean())) / spread
        out[idx] = np.where(ok, resid, np.nan)
    return out


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < MIN_CLIP_FRAMES:
        return None
    x, y = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    den = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return float((x * y).sum()) / den if den > 1e-12 else None


def parabolic_peak(curve: np.ndarray) -> tuple[float, float] | None:
    """(fractional index, value) of the maximum; None when it lies on the edge."""
    if curve.size < 3 or not np.isfinite(curve).any():
        return None
    i = int(np.nanargmax(curve))
    if i == 0 or i == curve.size - 1:
        return None
    y0, y1, y2 = (float(v) for v in curve[i - 1 : i + 2])
    if not (math.isfinite(y0) and math.isfinite(y2)):
        return float(i), y1
    den = y0 - 2.0 * y1 + y2
    frac = 0.5 * (y0 - y2) / den if den < 0 else 0.0
    return i + frac, y1 - 0.25 * (y0 - y2) * frac


@dataclass
class _FaceTrack:
    """One face followed by position from frame to frame, with its mouth openings."""

    centre: np.ndarray
    width: float
    last_frame: int
    values: dict[int, float] = field(default_factory=dict)

    def activity(self, frame: int, reach: int) -> float:
        """Mean |frame-to-frame change| of the opening within ``reach`` frames, over its mean."""
        window = [self.values.get(k) for k in range(frame - reach, frame + reach + 1)]
        steps = [
            abs(b - a) for a, b in itertools.pairwise(window) if a is not None and b is not None
        ]
        known = [v for v in window if v is not None]
        if not steps or not known:
            return 0.0
        return float(np.mean(steps)) / max(float(np.mean(known)), 1e-9)


@dataclass
class MouthTrack:
    """The mouth-opening series of one side (input or output), frame by frame.

    The largest face is measured; when other faces are nearly as large (`TIED_WIDTH`), all of
    them are measured and followed by position, and each frame takes the one whose mouth moves
    most within ±0.5 s: the talker, not a still face of about the same size beside it. The
    choice looks at the pixels only, never at the audio, so it cannot favour a lag.
    """

    times: list[float] = field(default_factory=list)
    shots: list[int] = field(default_factory=list)
    tracks: list[_FaceTrack] = field(default_factory=list)
    present: list[list[int]] = field(default_factory=list)
    _recent: list[int] = field(default_factory=list)

    def add(self, time_s: float, shot: int, image: np.ndarray, faces: tuple[Face, ...]) -> None:
        frame = len(self.times)
        self.times.append(time_s)
        self.shots.append(shot)
        ids: list[int] = []
        if faces:
            largest = max(face.width for face in faces)
            tied = sorted(
                (f for f in faces if f.width >= TIED_WIDTH * largest), key=lambda f: -f.width
            )
            for face in tied[:MAX_TIED_FACES]:
                index = self._track_for(face, frame, ids)
                value = mouth_opening(image, face)
                if value is not None:
                    self.tracks[index].values[frame] = value
                ids.append(index)
        self.present.append(ids)

    def _track_for(self, face: Face, frame: int, taken: list[int]) -> int:
        """The recent track at this face's place, else a new one."""
        self._recent = [
            i for i in self._recent if frame - self.tracks[i].last_frame <= TRACK_GAP_FRAMES
        ]
        best, best_distance = -1, 0.5 * face.width
        for index in self._recent:
            track = self.tracks[index]
            if index in taken:
                continue
            distance = float(np.linalg.norm(track.centre - face.centre))
            if distance <= best_distance:
                best, best_distance = index, distance
        if best < 0:
            self.tracks.append(_FaceTrack(face.centre, face.width, frame))
            self._recent.append(len(self.tracks) - 1)
            return len(self.tracks) - 1
        track = self.tracks[best]
        track.centre, track.width, track.last_frame = face.centre, face.width, frame
        return best

    def series(self, fps: float) -> np.ndarray:
        """The opening per frame (NaN where no mouth was measured)."""
        reach = max(1, round(MAX_LAG_S * fps))
        out = np.full(len(self.times), np.nan)
        for frame, ids in enumerate(self.present):
            measured = [i for i in ids if frame in self.tracks[i].values]
            if not measured:
                continue
            if len(measured) > 1:
                measured.sort(key=lambda i: -self.tracks[i].activity(frame, reach))
            out[frame] = self.tracks[measured[0]].values[frame]
        return out

    @property
    def measured(self) -> int:
        return sum(
            any(frame in self.tracks[i].values for i in ids)
            for frame, ids in enumerate(self.present)
        )


@dataclass(frozen=True)
class SyncCurve:
    """Correlation over lags for one side, with what a sentence needs to cut its own out."""

    lags: np.ndarray
    mouth: np.ndarray
    envelopes: np.ndarray
    """(lags, frames): the standardised envelope at frame time + lag."""
    frame_s: float


def sync_curve(track: MouthTrack, audio: np.ndarray, sample_rate: int, fps: float) -> SyncCurve:
    times = np.asarray(track.times, dtype=np.float64)
    opening = track.series(fps)
    shots = np.asarray(track.shots, dtype=np.int64)
    frame_s = 1.0 / fps
    width = max(3, round(DETREND_S * fps) | 1)
    mouth = highpass_per_shot(opening, np.isfinite(opening), shots, width)
    reach = max(1, math.ceil(MAX_LAG_S * fps))
    lags = np.arange(-reach, reach + 1)
    energy = band_energy(audio, sample_rate)
    envelopes = np.empty((lags.size, times.size))
    for row, lag in enumerate(lags):
        env, inside = speech_envelope(energy, sample_rate, times + lag * frame_s)
        envelopes[row] = highpass_per_shot(env, inside, shots, width)
    return SyncCurve(lags=lags, mouth=mouth, envelopes=envelopes, frame_s=frame_s)


def offset_of(
    curve: SyncCurve, frames: np.ndarray | None = None, around_ms: float | None = None
) -> tuple[float | None, float]:
    """(offset_ms, peak correlation) over all frames or the selected ones; with ``around_ms``,
    the peak is looked for within `SENTENCE_REACH_S` of that offset only."""
    mouth = curve.mouth if frames is None else curve.mouth[frames]
    values = []
    for row in curve.envelopes:
        r = _pearson(mouth, row if frames is None else row[frames])
        values.append(math.nan if r is None else r)
    correlations = np.asarray(values)
    first = 0
    if around_ms is not None:
        centre = round(around_ms / 1000.0 / curve.frame_s) - int(curve.lags[0])
        reach = max(1, round(SENTENCE_REACH_S / curve.frame_s))
        first = max(0, centre - reach)
        correlations = correlations[first : centre + reach + 1]
    if not np.isfinite(correlations).any():
        return None, 0.0
    peak = parabolic_peak(correlations)
    if peak is None:
        return None, float(np.nanmax(correlations))
    index, value = peak
    lag_frames = float(curve.lags[0]) + first + index
    return lag_frames * curve.frame_s * 1000.0, float(value)


class LipSyncJudge:
    """Mouth opening (output and input frames) against the speech envelope of each audio."""

    name: ClassVar[str] = "lip_sync"

    def __init__(self, context: EvalContext, models: JudgeModels) -> None:
        self.context = context
        self.models = models
        self.output = MouthTrack()
        self.source = MouthTrack()

    def observe(self, pair: FramePair) -> None:
        self.output.add(pair.time_s, pair.shot, pair.output, pair.output_faces)
        self.source.add(pair.time_s, pair.shot, pair.source, pair.source_faces)

    def _fps(self) -> float:
        if self.context.fps > 0:
            return float(self.context.fps)
        times = np.asarray(self.output.times)
        step = float(np.median(np.diff(times))) if times.size > 1 else 0.0
        if step <= 0:
            raise MediaError("lip-sync judge: cannot tell the frame rate (fps 0, one frame)")
        return 1.0 / step

    def _sentences(
        self, curve: SyncCurve, fps: float, clip_offset: float | None
    ) -> list[SentenceSync]:
        times = np.asarray(self.output.times)
        measured = np.isfinite(curve.mouth)
        rows: list[SentenceSync] = []
        for span in self.context.sentences:
            frames = np.flatnonzero((times >= span.start_s) & (times < span.end_s))
            if int(measured[frames].sum()) < MIN_SENTENCE_FRAMES_S * fps:
                continue
            offset, confidence = _trusted(*offset_of(curve, frames, clip_offset))
            rows.append(
                SentenceSync(
                    index=span.index,
                    start_s=span.start_s,
                    end_s=span.end_s,
                    offset_ms=offset,
                    confidence=confidence,
                )
            )
        return rows

    def finish(self) -> LipSyncMetrics:
        audio = self.context.audio
        if audio.output is None:
            raise MediaError("lip-sync judge: the output has no audio")
        if self.output.measured < MIN_CLIP_FRAMES:
            raise MediaError(
                f"lip-sync judge: a mouth was found on {self.output.measured} output frames, "
                f"need at least {MIN_CLIP_FRAMES}"
            )
        fps = self._fps()
        curve = sync_curve(self.output, audio.output, audio.sample_rate, fps)
        offset, confidence = _trusted(*offset_of(curve))
        source_offset: float | None = None
        if audio.source is not None and self.source.measured >= MIN_CLIP_FRAMES:
            source_curve = sync_curve(self.source, audio.source, audio.sample_rate, fps)
            source_offset, _ = _trusted(*offset_of(source_curve))
        sentences = self._sentences(curve, fps, offset)
        timed = [(0.5 * (s.start_s + s.end_s), s.offset_ms) for s in sentences]
        points = [(t, o) for t, o in timed if o is not None]
        trend: float | None = None
        if len(points) >= 3:
            minutes = np.array([t for t, _ in points]) / 60.0
            offsets = np.array([o for _, o in points])
            if float(np.ptp(minutes)) > 0:
                trend = float(np.polyfit(minutes, offsets, 1)[0])
        return LipSyncMetrics(
            offset_ms=offset,
            confidence=confidence,
            source_offset_ms=source_offset,
            trend_ms_per_min=trend,
            sentences=sentences,
            face_frames=self.output.measured,
            min_confidence=MIN_CONFIDENCE,
        )


def _trusted(offset: float | None, confidence: float) -> tuple[float | None, float]:
    """The offset only where the correlation peak is strong enough to mean one."""
    return (offset if confidence >= MIN_CONFIDENCE else None), confidence
