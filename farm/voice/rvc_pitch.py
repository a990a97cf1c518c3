"""Pitch for the `rvc` backend: F0 at 10 ms on 16 kHz audio, and RVC's coarse pitch.

Two extractors give one F0 value (Hz, 0 = unvoiced) per 160-sample hop of 16 kHz audio,
``len(x) // 160 + 1`` frames, frame k centred on sample 160·k:

* WORLD (pyworld): ``dio`` + StoneMask as in `farm.voice.world` (the default, fast), or
  ``harvest`` followed by a 3-frame median filter (RVC's ``harvest`` method, about 20× slower).
* RMVPE (ONNX, user-supplied): a log-mel spectrogram (128 HTK mels, 30–8000 Hz, n_fft and
  window 1024, hop 160, magnitude, log of max(mel, 1e-5)) padded to a multiple of 32 frames goes
  in; (frames, 360) salience comes out, bin i being 1997.3794 + 20·i cents (re 10 Hz). The
  decode is RVC's: the salience-weighted mean of the cents of the 9 bins around the argmax,
  unvoiced where the peak salience is at most the threshold (0.03).

The generator takes the F0 twice: as Hz (`pitchf`, driving its sine source) and as `coarse_pitch`,
RVC's mel-scale quantisation to 1..255 between 50 and 1100 Hz (1 = unvoiced).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pyworld as pw
from scipy.signal import medfilt

from farm.errors import ModelError
from farm.face.onnx.runtime import run_bound

SAMPLE_RATE = 16000
HOP = 160
"""10 ms at 16 kHz: the generator's frame."""

F0_MIN_HZ = 50.0
F0_MAX_HZ = 1100.0
F0_MEL_MIN = 1127.0 * math.log(1.0 + F0_MIN_HZ / 700.0)
F0_MEL_MAX = 1127.0 * math.log(1.0 + F0_MAX_HZ / 700.0)

RMVPE_MELS = 128
RMVPE_N_FFT = 1024
RMVPE_FMIN_HZ = 30.0
RMVPE_FMAX_HZ = 8000.0
RMVPE_BINS = 360
RMVPE_FRAME_MULTIPLE = 32
"""The RMVPE U-Net halves the time axis five times: its input must be a multiple of 32."""
CENTS_BASE = 1997.3794084376191
CENTS_PER_BIN = 20.0
_LOG_FLOOR = 1e-5
_LOCAL_BINS = 4

WorldMethod = Literal["dio", "harvest"]


def frame_count(samples: int) -> int:
    """F0 frames of ``samples`` of 16 kHz audio (centred frames at every hop)."""
    return samples // HOP + 1


def fit_frames(values: np.ndarray, frames: int) -> np.ndarray:
    """Cut or zero-extend a per-frame track to exactly ``frames`` frames."""
    v = np.asarray(values, dtype=np.float32)
    if v.shape[0] >= frames:
        return np.ascontiguousarray(v[:frames])
    return np.concatenate([v, np.zeros(frames - v.shape[0], dtype=np.float32)])


def coarse_pitch(f0_hz: np.ndarray) -> np.ndarray:
    """RVC's coarse pitch: mel(f0) = 1127·ln(1 + f0/700) scaled so 50 Hz → 1 and 1100 Hz → 255,
    rounded, clamped to 1..255; unvoiced (0 Hz) frames are 1."""
    f0 = np.asarray(f0_hz, dtype=np.float64)
    mel = 1127.0 * np.log1p(np.maximum(f0, 0.0) / 700.0)
    voiced = mel > 0
    mel[voiced] = (mel[voiced] - F0_MEL_MIN) * 254.0 / (F0_MEL_MAX - F0_MEL_MIN) + 1.0
    mel = np.clip(mel, 1.0, 255.0)
    return np.rint(mel).astype(np.int64)


def shift_semitones(f0_hz: np.ndarray, semitones: float) -> np.ndarray:
    """Voiced frames scaled by 2^(semitones/12); unvoiced frames stay 0."""
    return np.asarray(f0_hz, dtype=np.float32) * np.float32(2.0 ** (semitones / 12.0))


def median_log_f0(f0_hz: np.ndarray) -> float | None:
    """Median log-F0 of the voiced frames; None when there are none."""
    voiced = np.asarray(f0_hz)[np.asarray(f0_hz) > 0]
    return float(np.median(np.log(voiced))) if voiced.size else None


def world_f0(
    x16: np.ndarray,
    method: WorldMethod = "dio",
    f0_min_hz: float = F0_MIN_HZ,
    f0_max_hz: float = F0_MAX_HZ,
) -> np.ndarray:
    """F0 of 16 kHz mono audio at 10 ms frames with WORLD (``frame_count`` frames)."""
    x = np.ascontiguousarray(x16, dtype=np.float64)
    if x.size == 0:
        return np.zeros(1, dtype=np.float32)
    period = 1000.0 * HOP / SAMPLE_RATE
    if method == "harvest":
        f0, _ = pw.harvest(
            x, SAMPLE_RATE, f0_floor=f0_min_hz, f0_ceil=f0_max_hz, frame_period=period
        )
        f0 = medfilt(f0, 3)
    else:
        f0, times = pw.dio(
            x, SAMPLE_RATE, f0_floor=f0_min_hz, f0_ceil=f0_max_hz, frame_period=period
        )
        f0 = pw.stonemask(x, f0, times, SAMPLE_RATE)
    return fit_frames(f0, frame_count(x.size))


def _hz_to_mel_htk(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz_htk(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin_hz: float, fmax_hz: float
) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular HTK-mel filters, each scaled to unit area (Slaney
    normalisation): librosa's ``filters.mel(htk=True)``, which RMVPE was trained with."""
    freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    low, high = _hz_to_mel_htk(np.array(fmin_hz)), _hz_to_mel_htk(np.array(fmax_hz))
    edges = _mel_to_hz_htk(np.linspace(low, high, n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


def rmvpe_log_mel(x16: np.ndarray, basis: np.ndarray | None = None) -> np.ndarray:
    """(128, frame_count) log-mel of 16 kHz audio, as RMVPE's front end computes it (centred
    frames, reflect padding, periodic Hann window, magnitude spectrum)."""
    x = np.asarray(x16, dtype=np.float32)
    half = RMVPE_N_FFT // 2
    padded = (
        np.pad(x, (half, half), mode="reflect")
        if x.size > 1
        else np.zeros(2 * half + 1, dtype=np.float32)
    )
    frames = np.lib.stride_tricks.sliding_window_view(padded, RMVPE_N_FFT)[::HOP]
    window = np.hanning(RMVPE_N_FFT + 1)[:-1].astype(np.float32)
    magnitude = np.abs(np.fft.rfft(frames * window, axis=1)).astype(np.float32)
    if basis is None:
        basis = mel_filterbank(SAMPLE_RATE, RMVPE_N_FFT, RMVPE_MELS, RMVPE_FMIN_HZ, RMVPE_FMAX_HZ)
    mel = basis @ magnitude.T
    return np.log(np.maximum(mel, _LOG_FLOOR)).astype(np.float32)


def salience_to_cents(salience: np.ndarray, threshold: float) -> np.ndarray:
    """(frames, 360) salience → cents per frame: the weighted mean over the 9 bins around the
    argmax (bins outside 0..359 count as zero salience); 0 where the peak is ≤ ``threshold``."""
    s = np.asarray(salience, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != RMVPE_BINS:
        raise ModelError(f"RMVPE salience must be (frames, {RMVPE_BINS}), got {s.shape}")
    centre = np.argmax(s, axis=1)
    bins = centre[:, None] + np.arange(-_LOCAL_BINS, _LOCAL_BINS + 1)[None, :]
    inside = (bins >= 0) & (bins < RMVPE_BINS)
    rows = np.arange(s.shape[0])[:, None]
    weight = np.where(inside, s[rows, np.clip(bins, 0, RMVPE_BINS - 1)], 0.0)
    cents = CENTS_BASE + CENTS_PER_BIN * bins
    total = weight.sum(axis=1)
    mean = (weight * cents).sum(axis=1) / np.where(total == 0, 1.0, total)
    mean[(s.max(axis=1) <= threshold) | (total == 0)] = 0.0
    return mean


def salience_to_f0(salience: np.ndarray, threshold: float) -> np.ndarray:
    """F0 in Hz per frame (10 · 2^(cents/1200)); 0 where unvoiced."""
    cents = salience_to_cents(salience, threshold)
    f0 = 10.0 * 2.0 ** (cents / 1200.0)
    f0[cents == 0] = 0.0
    return f0.astype(np.float32)


def _dim_is(dim: object, value: int) -> bool:
    """A graph dimension that is ``value``, or symbolic (checked when it runs)."""
    return not isinstance(dim, int) or dim == value


class RmvpePitch:
    """F0 with an RMVPE ONNX session (input [1, 128, frames] log-mel, output [1, frames, 360])."""

    def __init__(self, session: Any, path: object = "RMVPE model") -> None:
        inputs, outputs = session.get_inputs(), session.get_outputs()
        in_shape = list(inputs[0].shape) if len(inputs) == 1 else []
        out_shape = list(outputs[0].shape) if len(outputs) >= 1 else []
        if not (
            len(in_shape) == 3
            and _dim_is(in_shape[1], RMVPE_MELS)
            and len(out_shape) == 3
            and _dim_is(out_shape[2], RMVPE_BINS)
        ):
            raise ModelError(
                f"{path} is not an RMVPE pitch model: expected input [1, {RMVPE_MELS}, frames] "
                f"and output [1, frames, {RMVPE_BINS}], found inputs "
                f"{[(i.name, i.shape) for i in inputs]}, outputs "
                f"{[(o.name, o.shape) for o in outputs]}"
            )
        self._session = session
        self._input = str(inputs[0].name)
        self._output = str(outputs[0].name)
        self._basis = mel_filterbank(
            SAMPLE_RATE, RMVPE_N_FFT, RMVPE_MELS, RMVPE_FMIN_HZ, RMVPE_FMAX_HZ
        )

    def __call__(self, x16: np.ndarray, threshold: float = 0.03) -> np.ndarray:
        """F0 (Hz) of 16 kHz audio at 10 ms frames (``frame_count`` frames)."""
        mel = rmvpe_log_mel(x16, self._basis)
        frames = mel.shape[1]
        padded = -(-frames // RMVPE_FRAME_MULTIPLE) * RMVPE_FRAME_MULTIPLE
        if padded > frames:
            floor = np.float32(math.log(_LOG_FLOOR))
            mel = np.pad(mel, ((0, 0), (0, padded - frames)), constant_values=floor)
        (hidden,) = run_bound(self._session, {self._input: mel[None]}, [self._output])
        salience = np.asarray(hidden, dtype=np.float32).reshape(-1, RMVPE_BINS)[:frames]
        return salience_to_f0(salience, threshold)
