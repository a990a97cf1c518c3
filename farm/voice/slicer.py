"""Slice a voice track at its pauses, with exact sample offsets.

The first pass is the openvpi audio-slicer ``slicer2`` RMS algorithm (dubbing.md §2.1), written
over frame runs instead of a per-frame loop, and returning ``(start, stop)`` sample offsets instead
of audio. Like upstream (after its fix #12) it compares the input length with ``min_length`` in
frames. Cuts are quantised to the hop (10 ms by default).

The second pass (`refine_slices`) drops clips with no frame above the threshold, splits clips
longer than ``max_sentence_ms`` at their quietest frame, and merges clips shorter than
``min_sentence_ms`` into the nearer neighbour when the result stays within the cap::

    first pass   |--a--|  |-b-| |------------c (14 s)------------|   |d|
    second pass  |--a-----b-|   |-----c1------|------c2-----------|   |d|   (d: no neighbour fits)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from farm.voice.settings import SlicerSettings
from farm.voice.signal import db_to_gain, frame_rms


@dataclass(frozen=True, slots=True)
class SlicerFrames:
    """The slicer's parameters converted to samples and frames for one sample rate."""

    threshold: float
    hop: int
    win: int
    min_length: int
    min_interval: int
    max_sil_kept: int

    @classmethod
    def from_settings(cls, settings: SlicerSettings, sample_rate: int) -> SlicerFrames:
        min_interval_samples = sample_rate * settings.min_interval_ms / 1000
        hop = max(1, round(sample_rate * settings.hop_size_ms / 1000))
        return cls(
            threshold=db_to_gain(settings.threshold_db),
            hop=hop,
            win=max(1, min(round(min_interval_samples), 4 * hop)),
            min_length=round(sample_rate * settings.min_length_ms / 1000 / hop),
            min_interval=round(min_interval_samples / hop),
            max_sil_kept=round(sample_rate * settings.max_sil_kept_ms / 1000 / hop),
        )


def _silent_runs(silent: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) frame runs where `silent` is True."""
    padded = np.concatenate(([False], silent, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def slice_frames(rms: np.ndarray, p: SlicerFrames) -> list[tuple[int, int]]:
    """The slicer2 scan over RMS frames: (begin, end) frame pairs of the kept clips."""
    total = int(rms.shape[0])
    tags: list[tuple[int, int]] = []
    clip_start = 0
    msk = p.max_sil_kept
    for silence_start, i in _silent_runs(rms < p.threshold):
        if i >= total:  # trailing silence
            if total - silence_start >= p.min_interval:
                silence_end = min(total, silence_start + msk)
                pos = int(rms[silence_start : silence_end + 1].argmin()) + silence_start
                tags.append((pos, total + 1))
            break
        is_leading = silence_start == 0 and i > msk
        need_middle = i - silence_start >= p.min_interval and i - clip_start >= p.min_length
        if not is_leading and not need_middle:
            continue
        if i - silence_start <= msk:
            pos = int(rms[silence_start : i + 1].argmin()) + silence_start
            tags.append((0, pos) if silence_start == 0 else (pos, pos))
            clip_start = pos
        elif i - silence_start <= msk * 2:
            pos = int(rms[i - msk : silence_start + msk + 1].argmin()) + i - msk
            pos_l = int(rms[silence_start : silence_start + msk + 1].argmin()) + silence_start
            pos_r = int(rms[i - msk : i + 1].argmin()) + i - msk
            if silence_start == 0:
                tags.append((0, pos_r))
                clip_start = pos_r
            else:
                tags.append((min(pos_l, pos), max(pos_r, pos)))
                clip_start = max(pos_r, pos)
        else:
            pos_l = int(rms[silence_start : silence_start + msk + 1].argmin()) + silence_start
            pos_r = int(rms[i - msk : i + 1].argmin()) + i - msk
            tags.append((0, pos_r) if silence_start == 0 else (pos_l, pos_r))
            clip_start = pos_r
    if not tags:
        return [(0, total)]
    clips: list[tuple[int, int]] = []
    if tags[0][0] > 0:
        clips.append((0, tags[0][0]))
    for left, right in itertools.pairwise(tags):
        clips.append((left[1], right[0]))
    if tags[-1][1] < total:
        clips.append((tags[-1][1], total))
    return [(a, b) for a, b in clips if b > a]


def slice_audio(
    audio: np.ndarray, sample_rate: int, settings: SlicerSettings
) -> list[tuple[int, int]]:
    """First pass only: slicer2 clips of a mono signal as [start, stop) sample offsets."""
    x = np.asarray(audio, dtype=np.float32)
    n = int(x.shape[0])
    if n == 0:
        return []
    p = SlicerFrames.from_settings(settings, sample_rate)
    rms = frame_rms(x, p.win, p.hop)
    if rms.shape[0] <= p.min_length:
        return [(0, n)]
    out = []
    for begin, end in slice_frames(rms, p):
        start, stop = begin * p.hop, min(n, end * p.hop)
        if stop > start:
            out.append((start, stop))
    return out


def _split_long(
    start: int, stop: int, rms: np.ndarray, hop: int, max_len: int
) -> list[tuple[int, int]]:
    """Cut a clip into pieces of at most `max_len` samples at the quietest frame of each window."""
    pieces: list[tuple[int, int]] = []
    while stop - start > max_len:
        lo = -(-(start + max_len // 2) // hop)  # first frame centre at or after the half
        hi = (start + max_len) // hop  # last frame centre inside the cap
        cut = start + max_len if hi <= lo else (lo + int(rms[lo : hi + 1].argmin())) * hop
        pieces.append((start, cut))
        start = cut
    pieces.append((start, stop))
    return pieces


def _merge_short(clips: list[tuple[int, int]], min_len: int, max_len: int) -> list[tuple[int, int]]:
    """Merge clips shorter than `min_len` into the neighbour across the smaller gap (≤ max_len)."""
    merged = list(clips)
    changed = True
    while changed:
        changed = False
        for k, (a, b) in enumerate(merged):
            if b - a >= min_len:
                continue
            options: list[tuple[int, int]] = []  # (gap, neighbour index)
            if k > 0 and b - merged[k - 1][0] <= max_len:
                options.append((a - merged[k - 1][1], k - 1))
            if k + 1 < len(merged) and merged[k + 1][1] - a <= max_len:
                options.append((merged[k + 1][0] - b, k + 1))
            if not options:
                continue
            _, j = min(options)
            lo, hi = min(k, j), max(k, j)
            merged[lo : hi + 1] = [(merged[lo][0], merged[hi][1])]
            changed = True
            break
    return merged


def refine_slices(
    audio: np.ndarray,
    sample_rate: int,
    clips: list[tuple[int, int]],
    settings: SlicerSettings,
) -> list[tuple[int, int]]:
    """Second pass: drop silent clips, cap the length, merge fragments (see the module doc)."""
    x = np.asarray(audio, dtype=np.float32)
    p = SlicerFrames.from_settings(settings, sample_rate)
    rms = frame_rms(x, p.win, p.hop)
    max_len = round(sample_rate * settings.max_sentence_ms / 1000)
    min_len = round(sample_rate * settings.min_sentence_ms / 1000)

    def loud(start: int, stop: int) -> bool:
        lo, hi = -(-start // p.hop), (stop - 1) // p.hop
        return hi >= lo and bool((rms[lo : hi + 1] >= p.threshold).any())

    voiced = [(a, b) for a, b in clips if loud(a, b)]
    capped = [piece for a, b in voiced for piece in _split_long(a, b, rms, p.hop, max_len)]
    capped = [(a, b) for a, b in capped if loud(a, b)]
    return _merge_short(capped, min_len, max_len)


def plan_slices(
    audio: np.ndarray, sample_rate: int, settings: SlicerSettings
) -> list[tuple[int, int]]:
    """Both passes: the sentence ranges of a mono voice track, sorted and non-overlapping."""
    return refine_slices(audio, sample_rate, slice_audio(audio, sample_rate, settings), settings)
