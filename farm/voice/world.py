"""The `vc` conversion: a WORLD (pyworld) DSP baseline, not a neural voice converter.

Each sentence is analysed (DIO + StoneMask F0, CheapTrick envelope, D4C aperiodicity) at
``VcSettings.sample_rate`` (16 kHz by default, so the converted voice is band-limited to 8 kHz),
then resynthesised with

* F0 mapped to the reference speaker's statistics in the log domain:
  ``log f0' = (log f0 − μ_src) · σ_ref/σ_src + μ_ref`` (voiced frames only). The statistics are
  robust (frames beyond 3 MAD-σ, i.e. octave errors, are dropped) and the location μ is the
  median of log-F0 by default (``VcSettings.f0_location``; ``mean`` is the textbook choice, but
  speech log-F0 is skewed, and the median lands the converted median F0 on the reference's), and
* the spectral envelope warped along the frequency axis by ``α = centroid_ref / centroid_src``
  (clamped to ``1/max_formant_warp .. max_formant_warp``), a crude formant shift, and then
* the long-term timbre mapped (``VcSettings.envelope_mapping``): the difference between the
  reference's mean voiced log-envelope and the (warped) source's, smoothed over mel bands so that
  it carries the vocal tract and voice quality rather than any one harmonic, centred (loudness is
  matched later) and clamped to ``±max_envelope_gain_db``, is added to every voiced frame's
  envelope.
  This is long-term spectrum equalisation learned from the reference audio; per-phone mapping
  needs a trained model (the `rvc` backend).

Timing, voicing and prosody shape come from the original sentence unchanged, so the output has
exactly the input's length. It changes the pitch range and the vocal-tract brightness toward the
reference speaker; it does not reproduce the reference speaker's timbre the way a trained model
would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyworld as pw

from farm.errors import MediaError
from farm.voice.model import VoiceProfile
from farm.voice.settings import VcSettings
from farm.voice.signal import fit_length, read_wav_mono, resample

_CENTROID_BAND_HZ = (50.0, 5000.0)
_MIN_VOICED_FRAMES = 20


@dataclass(frozen=True, eq=False)
class WorldFeatures:
    """WORLD parameters of one signal at `sample_rate`."""

    f0: np.ndarray
    sp: np.ndarray
    ap: np.ndarray | None
    sample_rate: int
    n_samples: int


def analyse(
    audio: np.ndarray, sample_rate: int, vc: VcSettings, *, aperiodicity: bool = True
) -> WorldFeatures:
    """WORLD analysis of mono audio, resampled to ``vc.sample_rate`` first."""
    fs = vc.sample_rate
    x = resample(audio, sample_rate, fs).astype(np.float64)
    f0, times = pw.dio(
        x, fs, f0_floor=vc.f0_floor_hz, f0_ceil=vc.f0_ceil_hz, frame_period=vc.frame_period_ms
    )
    f0 = pw.stonemask(x, f0, times, fs)
    sp = pw.cheaptrick(x, f0, times, fs, f0_floor=vc.f0_floor_hz)
    ap = pw.d4c(x, f0, times, fs) if aperiodicity else None
    return WorldFeatures(f0=f0, sp=sp, ap=ap, sample_rate=fs, n_samples=x.shape[0])


def spectral_centroid_hz(sp: np.ndarray, voiced: np.ndarray, sample_rate: int) -> float:
    """Amplitude-weighted centroid of the mean voiced envelope within 50–5000 Hz."""
    frames = sp[voiced] if voiced.any() else sp
    if frames.shape[0] == 0:
        return 0.0
    amp = np.sqrt(frames).mean(axis=0)
    freqs = np.arange(amp.shape[0]) * (sample_rate / 2) / (amp.shape[0] - 1)
    band = (freqs >= _CENTROID_BAND_HZ[0]) & (freqs <= min(_CENTROID_BAND_HZ[1], sample_rate / 2))
    weight = amp[band]
    return float((freqs[band] * weight).sum() / max(weight.sum(), 1e-20))


def mean_log_envelope(sp: np.ndarray, voiced: np.ndarray) -> np.ndarray:
    """Mean natural-log envelope of the voiced frames (all frames when too few are voiced)."""
    frames = sp[voiced] if int(voiced.sum()) >= _MIN_VOICED_FRAMES else sp
    return np.log(np.maximum(frames, 1e-16)).mean(axis=0)


def mel_bands(bins: int, sample_rate: int, n_bands: int) -> np.ndarray:
    """Triangular mel filters (n_bands, bins) over 50 Hz .. Nyquist; rows sum to > 0."""
    freqs = np.arange(bins) * (sample_rate / 2) / (bins - 1)
    mel = 1127.0 * np.log1p(freqs / 700.0)
    edges = np.linspace(1127.0 * math.log1p(50.0 / 700.0), mel[-1], n_bands + 2)
    rise = (mel[None, :] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    fall = (edges[2:, None] - mel[None, :]) / (edges[2:, None] - edges[1:-1, None])
    weights = np.maximum(0.0, np.minimum(rise, fall))
    # A band narrower than one bin still gets its nearest bin, so no row is empty.
    centres = np.abs(mel[None, :] - edges[1:-1, None]).argmin(axis=1)
    weights[np.arange(n_bands), centres] = np.maximum(weights[np.arange(n_bands), centres], 1.0)
    return weights


def envelope_correction(
    source_log_env: np.ndarray,
    target_log_env: np.ndarray,
    alpha: float,
    sample_rate: int,
    vc: VcSettings,
) -> np.ndarray | None:
    """Per-bin log-gain taking the warped source's long-term envelope to the target's.

    None when the two envelopes were measured with different analysis sizes.
    """
    if source_log_env.shape != target_log_env.shape or source_log_env.size < 8:
        return None
    warped = source_log_env
    if abs(alpha - 1.0) > 1e-3:
        warped = np.log(_warp_envelope(np.exp(source_log_env)[None, :], alpha))[0]
    diff = target_log_env - warped
    bins = diff.shape[0]
    bands = mel_bands(bins, sample_rate, vc.envelope_bands)
    band_diff = (bands @ diff) / bands.sum(axis=1)
    band_diff -= band_diff.mean()  # timbre only: the level is matched after synthesis
    centres = (bands * np.arange(bins)[None, :]).sum(axis=1) / bands.sum(axis=1)
    smooth = np.interp(np.arange(bins), centres, band_diff)
    limit = vc.max_envelope_gain_db / (10.0 / math.log(10.0))  # dB of power → natural log
    return np.clip(smooth, -limit, limit)


def robust_log_f0(f0: np.ndarray) -> np.ndarray:
    """Log-F0 of the voiced frames, without octave errors (frames beyond 3 robust σ dropped)."""
    log_f0 = np.log(f0[f0 > 0])
    if log_f0.size < _MIN_VOICED_FRAMES:
        return log_f0
    centre = float(np.median(log_f0))
    spread = 1.4826 * float(np.median(np.abs(log_f0 - centre)))
    keep = np.abs(log_f0 - centre) <= max(3.0 * spread, 0.05)
    return log_f0[keep]


def profile_from_features(feats: WorldFeatures, frame_period_ms: float) -> VoiceProfile:
    """Log-F0 mean/std (robust: octave errors dropped) and the envelope centroid."""
    voiced = feats.f0 > 0
    log_f0 = robust_log_f0(feats.f0)
    return VoiceProfile(
        log_f0_mean=float(log_f0.mean()) if log_f0.size else 0.0,
        log_f0_median=float(np.median(log_f0)) if log_f0.size else 0.0,
        log_f0_std=float(log_f0.std()) if log_f0.size else 0.0,
        spectral_centroid_hz=spectral_centroid_hz(feats.sp, voiced, feats.sample_rate),
        voiced_seconds=float(voiced.sum() * frame_period_ms / 1000.0),
        sample_rate=feats.sample_rate,
        log_envelope=tuple(float(v) for v in mean_log_envelope(feats.sp, voiced)),
    )


def profile_from_audio(audio: np.ndarray, sample_rate: int, vc: VcSettings) -> VoiceProfile:
    """Speaker statistics of mono audio (no aperiodicity; 10 ms frames suffice for statistics)."""
    coarse = vc.model_copy(update={"frame_period_ms": max(vc.frame_period_ms, 10.0)})
    feats = analyse(audio, sample_rate, coarse, aperiodicity=False)
    return profile_from_features(feats, coarse.frame_period_ms)


def load_references(
    paths: Sequence[Path], min_s: float, max_total_s: float
) -> tuple[np.ndarray, int]:
    """The identity's clips joined into one mono signal (at the first clip's rate), capped.

    Clips shorter than `min_s` are merged with the others; a total under `min_s` is an error.
    """
    if not paths:
        raise MediaError("no voice references given; the identity pack must hold WAV clips")
    pieces: list[np.ndarray] = []
    rate = 0
    total = 0
    for path in paths:
        audio, sr = read_wav_mono(path)
        if rate == 0:
            rate = sr
        pieces.append(resample(audio, sr, rate))
        total += pieces[-1].shape[0]
        if total >= max_total_s * rate:
            break
    joined = np.concatenate(pieces)[: int(max_total_s * rate)]
    seconds = joined.shape[0] / rate
    if seconds < min_s:
        names = ", ".join(p.name for p in paths)
        raise MediaError(
            f"voice references ({names}) hold {seconds:.2f} s of audio, need at least "
            f"{min_s:.1f} s; "
            "add more clips of the identity's voice"
        )
    return joined, rate


def profile_from_references(paths: Sequence[Path], vc: VcSettings, min_s: float) -> VoiceProfile:
    """The identity's `VoiceProfile` from its reference clips (merged, up to max_reference_s)."""
    audio, rate = load_references(paths, min_s, vc.max_reference_s)
    profile = profile_from_audio(audio, rate, vc)
    if profile.voiced_seconds < 1.0:
        names = ", ".join(p.name for p in paths)
        raise MediaError(
            f"voice references ({names}) hold only {profile.voiced_seconds:.2f} s of voiced "
            "speech; "
            "need at least 1 s: give clips of the identity speaking"
        )
    return profile


def _warp_envelope(sp: np.ndarray, alpha: float) -> np.ndarray:
    """sp'(f) = sp(f/α): α > 1 moves formants up."""
    bins = sp.shape[1]
    pos = np.arange(bins, dtype=np.float64) / alpha
    lo = np.clip(np.floor(pos).astype(np.int64), 0, bins - 1)
    hi = np.minimum(lo + 1, bins - 1)
    frac = np.clip(pos - lo, 0.0, 1.0)
    warped = sp[:, lo] * (1.0 - frac) + sp[:, hi] * frac
    return np.ascontiguousarray(np.maximum(warped, 1e-16))


def convert(
    audio: np.ndarray,
    sample_rate: int,
    target: VoiceProfile,
    vc: VcSettings,
    source: VoiceProfile | None = None,
) -> np.ndarray:
    """Convert mono speech toward `target`; returns float32 of exactly the input's length.

    `source` is the original speaker's profile (e.g. from the whole voice track); when None it is
    estimated from this signal alone.
    """
    x = np.asarray(audio, dtype=np.float32)
    if x.shape[0] == 0:
        return x.copy()
    feats = analyse(x, sample_rate, vc)
    assert feats.ap is not None  # analyse(aperiodicity=True)
    own = profile_from_features(feats, vc.frame_period_ms)
    src = source if source is not None and source.voiced_seconds > 0 else own
    f0 = feats.f0.copy()
    voiced = f0 > 0
    if voiced.any() and target.voiced_seconds > 0:
        if src.log_f0_std > 1e-3 and int(voiced.sum()) >= _MIN_VOICED_FRAMES:
            ratio = min(
                max(target.log_f0_std / src.log_f0_std, 1 / vc.max_std_ratio), vc.max_std_ratio
            )
        else:
            ratio = 1.0
        src_loc, tgt_loc = src.location(vc.f0_location), target.location(vc.f0_location)
        log_f0 = (np.log(f0[voiced]) - src_loc) * ratio + tgt_loc
        f0[voiced] = np.exp(np.clip(log_f0, math.log(vc.f0_floor_hz), math.log(vc.f0_ceil_hz)))
    sp = feats.sp
    alpha = 1.0
    if src.spectral_centroid_hz > 0 and target.spectral_centroid_hz > 0:
        alpha = target.spectral_centroid_hz / src.spectral_centroid_hz
        alpha = min(max(alpha, 1 / vc.max_formant_warp), vc.max_formant_warp)
        if abs(alpha - 1.0) > 1e-3:
            sp = _warp_envelope(sp, alpha)
    if vc.envelope_mapping and src.log_envelope and target.log_envelope:
        gain = envelope_correction(
            np.asarray(src.log_envelope),
            np.asarray(target.log_envelope),
            alpha,
            feats.sample_rate,
            vc,
        )
        if gain is not None and gain.shape[0] == sp.shape[1]:
            # Learned from voiced frames, so applied to them only: fricatives and pauses keep
            # their own spectra (and the energy edges of each sentence stay where they were).
            sp = sp.copy()
            sp[voiced] *= np.exp(gain)[None, :]
    y = pw.synthesize(
        np.ascontiguousarray(f0),
        sp,
        np.ascontiguousarray(feats.ap),
        feats.sample_rate,
        vc.frame_period_ms,
    )
    y = fit_length(y.astype(np.float32), feats.n_samples)
    out = resample(y, feats.sample_rate, sample_rate)
    return fit_length(out, x.shape[0])
