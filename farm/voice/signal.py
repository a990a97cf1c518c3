"""Small sample-exact signal helpers shared by the voice stage (numpy only, float32)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from farm.errors import MediaError, plain_reason
from farm.media.audio import as_2d

# Channel layouts with a front-centre (dialogue) channel at index 2: 5.1 (6) and 7.1 (8).
_CENTRE_LAYOUTS = (6, 8)
_CENTRE_INDEX = 2


def speech_mixdown(audio: np.ndarray) -> np.ndarray:
    """The mono signal that carries the speech: the centre channel of 5.1/7.1, else the mean."""
    arr = as_2d(audio)
    if arr.shape[1] in _CENTRE_LAYOUTS:
        return np.ascontiguousarray(arr[:, _CENTRE_INDEX])
    return np.ascontiguousarray(arr.mean(axis=1, dtype=np.float32))


def voice_channel_gains(channels: int) -> np.ndarray:
    """Per-channel gains that put a mono voice back where `speech_mixdown` took it from."""
    if channels in _CENTRE_LAYOUTS:
        gains = np.zeros(channels, dtype=np.float32)
        gains[_CENTRE_INDEX] = 1.0
        return gains
    return np.ones(channels, dtype=np.float32)


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def gain_to_db(gain: float) -> float:
    return 20.0 * math.log10(max(gain, 1e-12))


def peak(audio: np.ndarray) -> float:
    return float(np.max(np.abs(audio))) if audio.size else 0.0


def peak_normalise_gain(audio: np.ndarray, low_dbfs: float, high_dbfs: float) -> float:
    """The gain that brings the peak into [low, high] dBFS (1.0 when already inside or silent)."""
    p = peak(audio)
    if p <= 1e-9:
        return 1.0
    p_db = gain_to_db(p)
    if p_db > high_dbfs:
        return db_to_gain(high_dbfs - p_db)
    if p_db < low_dbfs:
        return db_to_gain(low_dbfs - p_db)
    return 1.0


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Mono float32 resampling with soxr (identity when the rates match)."""
    x = np.ascontiguousarray(audio, dtype=np.float32)
    if rate_in == rate_out or x.size == 0:
        return x
    return np.asarray(soxr.resample(x, rate_in, rate_out), dtype=np.float32)


def frame_rms(audio: np.ndarray, frame: int, hop: int) -> np.ndarray:
    """librosa-style centred RMS: frame k covers k·hop ± frame//2 (zero-padded at the ends)."""
    x = np.asarray(audio, dtype=np.float64)
    pad = frame // 2
    padded = np.pad(x, (pad, pad))
    count = 1 + (padded.size - frame) // hop if padded.size >= frame else 0
    if count <= 0:
        return np.zeros(0)
    squares = np.concatenate(([0.0], np.cumsum(padded * padded)))
    starts = np.arange(count) * hop
    sums = squares[starts + frame] - squares[starts]
    return np.sqrt(np.maximum(sums, 0.0) / frame)


def speech_bounds(
    audio: np.ndarray, sample_rate: int, trim_db: float, floor_dbfs: float
) -> tuple[int, int] | None:
    """[start, stop) of the non-silent part (to the sample); None when all of it is silent.

    A frame is silent when its RMS is more than `trim_db` below the loudest frame, and below
    `floor_dbfs` is always silent.
    """
    x = np.asarray(audio, dtype=np.float32)
    hop = max(1, round(sample_rate * 0.005))
    frame = 2 * hop
    if x.size < frame:
        return None
    squares = np.concatenate(([0.0], np.cumsum(x.astype(np.float64) ** 2)))
    starts = np.arange(0, x.size - frame + 1, hop)
    rms = np.sqrt(np.maximum(squares[starts + frame] - squares[starts], 0.0) / frame)
    top = float(rms.max())
    floor = db_to_gain(floor_dbfs)
    if top <= floor:
        return None
    threshold = max(top * db_to_gain(-trim_db), floor)
    loud = np.flatnonzero(rms >= threshold)
    start = int(starts[loud[0]])
    stop = int(min(x.size, starts[loud[-1]] + frame))
    # refine to the sample inside the edge frames: first/last sample above the RMS threshold
    head = np.flatnonzero(np.abs(x[start : start + frame]) >= threshold)
    tail = np.flatnonzero(np.abs(x[max(start, stop - frame) : stop]) >= threshold)
    if head.size:
        start += int(head[0])
    if tail.size:
        stop = max(start, stop - frame) + int(tail[-1]) + 1
    return start, max(stop, start + 1)


def fade_edges(audio: np.ndarray, fade_in: int, fade_out: int) -> np.ndarray:
    """A copy with linear fades of the given lengths (clamped to the length)."""
    y = np.array(audio, dtype=np.float32, copy=True)
    n = y.size
    fi = min(fade_in, n)
    fo = min(fade_out, n)
    if fi > 0:
        y[:fi] *= np.linspace(0.0, 1.0, fi, endpoint=False, dtype=np.float32)
    if fo > 0:
        y[n - fo :] *= np.linspace(1.0, 0.0, fo + 1, dtype=np.float32)[1:]
    return y


def fit_length(audio: np.ndarray, length: int) -> np.ndarray:
    """Zero-pad or cut a mono signal to exactly `length` samples."""
    x = np.asarray(audio, dtype=np.float32)
    if x.size >= length:
        return np.ascontiguousarray(x[:length])
    return np.concatenate([x, np.zeros(length - x.size, dtype=np.float32)])


def fit_length_2d(audio: np.ndarray, length: int) -> np.ndarray:
    """Zero-pad or cut (samples, channels) audio to exactly `length` samples."""
    x = as_2d(audio)
    if x.shape[0] >= length:
        return np.ascontiguousarray(x[:length])
    pad = np.zeros((length - x.shape[0], x.shape[1]), dtype=np.float32)
    return np.concatenate([x, pad], axis=0)


def read_audio(path: Path, what: str = "audio file") -> tuple[np.ndarray, int]:
    """A WAV (or any libsndfile format) as float32 (samples, channels) plus its rate; MediaError
    (naming it as `what`) if it is unreadable or empty."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (OSError, RuntimeError, sf.LibsndfileError) as exc:
        raise MediaError(
            f"cannot read {what} {path}: {plain_reason(exc)}; give a WAV/FLAC file"
        ) from exc
    if data.shape[0] == 0:
        raise MediaError(f"{what} {path} holds no samples; give a recording of the voice")
    return np.ascontiguousarray(data), int(rate)


def read_wav_mono(path: Path) -> tuple[np.ndarray, int]:
    """A WAV (or any libsndfile format) as mono float32 plus its rate; MediaError if unreadable."""
    data, rate = read_audio(path)
    return speech_mixdown(data), rate
