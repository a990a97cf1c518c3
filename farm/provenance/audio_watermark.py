"""Audio watermark: a fixed, fine-grained spectral ripple (spread spectrum across frequency).

The band ``BAND_HZ`` is cut into chips of ``CHIP_HZ``; each chip carries one code bit (80 code
bits = 64 payload bits + CRC-16, several chips per bit, chips assigned by a fixed permutation)
times a fixed pseudo-random sign. Embedding filters the audio with a zero-phase FIR whose gain is
``1 + GAIN * chip_sign`` inside the band and 1 outside::

    gain (dB)  +1.2 ┤   ┌──┐     ┌──┐┌──┐        ┌──┐
                0   ┼───┘  │  ┌──┘  └┘  │  ┌──┐   │  └───
               -1.4 ┤      └──┘         └──┘  └───┘
                       500 Hz        ...           6 kHz

The ripple is far narrower than an auditory critical band, so it does not change the loudness of
any band, and it is the same at every instant, so any excerpt carries the whole payload and no
time synchronisation is needed. The chips are defined in hertz, so resampling keeps them.

The detector averages the log power spectrum over the non-silent windows of the clip, removes the
smooth spectral envelope, and correlates each chip with its sign.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, signal

from farm.media.audio import as_2d
from farm.provenance.payload import (
    CODE_BITS,
    codeword_accuracy,
    convolutional_encode,
    decode_codeword,
    encode_codeword,
    viterbi_decode,
)
from farm.provenance.video_watermark import WatermarkReading

BAND_HZ = (400.0, 7000.0)
CHIP_HZ = 20.0
GAIN = 0.15
"""Ripple depth: chip gains are 1 ± GAIN (+1.2 / -1.4 dB); the ripple is ~19 dB below the audio."""
CHANNEL_BITS = 2 * (CODE_BITS + 6)
"""The 80 code bits after the rate-1/2 convolutional code (with its 6 tail bits)."""
SEED = 0x5F4D_A0D1
COHERENCE_MIN = 0.88
"""Agreement of the soft channel values with the decoded codeword re-encoded; unmarked audio
scores ~0.8 (Viterbi always finds some path), marked audio 0.95-1.0."""
SILENCE_DB = 45.0
"""Windows quieter than the loudest window by more than this are ignored."""
FLIP_PERIOD_S = 1.5
"""The ripple flips sign every half period, so that the detector can cancel the static spectral
structure of the host (sustained notes, a steady hum) by differencing the two halves."""
FLIP_EDGE_S = 0.06
"""Length of the soft sign change (no click)."""
RESIDUAL_CLIP_DB = 8.0
PHASE_CANDIDATES = 3
"""Strongest flip phases whose decodes are tried (each doubles the tiny false-alarm rate)."""
PHASE_STEPS = 32
"""Candidate flip phases the detector tries (an excerpt may start anywhere)."""


@dataclass(frozen=True)
class _Chips:
    edges_hz: np.ndarray  # (n + 1,)
    bit: np.ndarray  # (n,) code-bit index per chip
    sign: np.ndarray  # (n,) ±1


def _chips(sample_rate: int) -> _Chips:
    """The chip plan; chips above 0.45 x the sample rate are dropped (the rest keep their place)."""
    lo, hi = BAND_HZ
    count = round((hi - lo) / CHIP_HZ)
    rng = np.random.default_rng(SEED)
    bit = rng.permutation(count) % CHANNEL_BITS
    sign = rng.choice(np.array([-1.0, 1.0]), size=count)
    edges = lo + CHIP_HZ * np.arange(count + 1)
    usable = int(np.searchsorted(edges, 0.45 * sample_rate, side="right")) - 1
    if usable < CHANNEL_BITS:
        raise ValueError(f"sample rate {sample_rate} Hz is too low for the audio watermark")
    return _Chips(edges_hz=edges[: usable + 1], bit=bit[:usable], sign=sign[:usable])


def _filter_taps(sample_rate: int, chip_gain: np.ndarray, chips: _Chips) -> np.ndarray:
    """Zero-phase FIR (odd length) whose response is ``chip_gain`` inside the chips, 0 elsewhere."""
    nfft = 1 << int(np.ceil(np.log2(sample_rate / CHIP_HZ * 16)))
    freqs = np.fft.rfftfreq(nfft, 1.0 / sample_rate)
    index = np.searchsorted(chips.edges_hz, freqs, side="right") - 1
    inside = (index >= 0) & (index < len(chip_gain))
    response = np.where(inside, chip_gain[np.clip(index, 0, len(chip_gain) - 1)], 0.0)
    impulse = np.fft.fftshift(np.fft.irfft(response, nfft))
    half = round(4 * sample_rate / CHIP_HZ)  # ±4 / CHIP_HZ seconds
    centre = nfft // 2
    taps = impulse[centre - half : centre + half + 1] * np.hanning(2 * half + 1)
    return np.asarray(taps)


def _flip_wave(t_s: np.ndarray, phase_s: float = 0.0) -> np.ndarray:
    """The ripple's sign over time: a square wave of period `FLIP_PERIOD_S` with soft edges."""
    slope = FLIP_PERIOD_S / (2.0 * np.pi * FLIP_EDGE_S / 2.0)
    return np.asarray(np.clip(slope * np.sin(2.0 * np.pi * (t_s - phase_s) / FLIP_PERIOD_S), -1, 1))


def embed_audio_watermark(
    samples: np.ndarray, sample_rate: int, payload: bytes, *, gain: float = GAIN
) -> np.ndarray:
    """Watermark float32 audio shaped (samples, channels) or (samples,); returns the same shape."""
    audio = as_2d(samples)
    chips = _chips(sample_rate)
    bits = convolutional_encode(encode_codeword(payload)).astype(np.float64)
    chip_gain = gain * chips.sign * (1.0 - 2.0 * bits[chips.bit])
    taps = _filter_taps(sample_rate, chip_gain, chips)
    ripple = signal.oaconvolve(audio.astype(np.float64), taps[:, None], mode="same", axes=0)
    flips = _flip_wave(np.arange(len(audio)) / sample_rate)
    out = (audio + ripple * flips[:, None]).astype(np.float32)
    return out if np.asarray(samples).ndim == 2 else out[:, 0]


def _analysis(sample_rate: int) -> tuple[int, int]:
    """STFT length (about four bins per chip) and hop."""
    nfft = 1 << int(np.floor(np.log2(sample_rate / CHIP_HZ * 4)))
    return nfft, nfft // 2


def _chip_residuals(log_power: np.ndarray, freqs: np.ndarray, chips: _Chips) -> np.ndarray:
    """Per-window, per-chip log power minus its smooth envelope; ``log_power``: (windows, bins)."""
    bin_hz = float(freqs[1] - freqs[0])
    width = max(3, round(5 * CHIP_HZ / bin_hz) | 1)
    residual = log_power - ndimage.uniform_filter1d(log_power, width, axis=1, mode="nearest")
    # Robust, variance-weighted votes: harmonic peaks and nulls of the host count for less.
    residual = np.clip(residual, -RESIDUAL_CLIP_DB, RESIDUAL_CLIP_DB)
    variance = ndimage.uniform_filter1d(residual**2, 2 * width + 1, axis=1, mode="nearest")
    residual = residual / (variance + 0.5)
    position = (freqs - chips.edges_hz[0]) / CHIP_HZ
    index = np.floor(position).astype(np.int64)
    usable = (np.abs(position - index - 0.5) <= 0.3) & (index >= 0) & (index < len(chips.bit))
    # (bins -> chips) averaging matrix
    members = np.zeros((len(freqs), len(chips.bit)))
    members[np.flatnonzero(usable), index[usable]] = 1.0
    members /= np.maximum(members.sum(axis=0), 1.0)
    return np.asarray(residual @ members)


def detect_audio_watermark(
    samples: np.ndarray, sample_rate: int, *, expected: bytes | None = None
) -> WatermarkReading:
    """Read the audio watermark from float audio (samples, channels) or (samples,) of any length.

    Needs at least a few flip periods (a 5 s excerpt is plenty).
    """
    audio = as_2d(samples).astype(np.float64).mean(axis=1)
    chips = _chips(sample_rate)
    nfft, hop = _analysis(sample_rate)
    if len(audio) < nfft + 2 * hop:
        return _empty_reading(expected)
    freqs, times, spectrum = signal.stft(
        audio,
        fs=sample_rate,
        window="hann",
        nperseg=nfft,
        noverlap=nfft - hop,
        boundary=None,
        padded=False,
    )
    power = (np.abs(spectrum) ** 2).T  # (windows, bins)
    energy = power.sum(axis=1)
    peak = float(energy.max())
    loud = energy > peak * 10 ** (-SILENCE_DB / 10)
    if peak <= 0 or loud.sum() < 2:
        return _empty_reading(expected)
    log_power = 10.0 * np.log10(power[loud] + float(power[loud].mean()) * 1e-9)
    residuals = _chip_residuals(log_power, freqs, chips)  # (windows, chips)
    signed = residuals * chips.sign
    per_bit = np.stack(
        [np.bincount(chips.bit, weights=row, minlength=CHANNEL_BITS) for row in signed]
    )  # (windows, bits)
    # Try every flip phase; keep the one whose per-bit sums are strongest.
    phases = np.arange(PHASE_STEPS) * FLIP_PERIOD_S / PHASE_STEPS
    waves = np.stack([_flip_wave(times[loud], phase) for phase in phases])  # (phases, windows)
    strength = np.abs(waves @ per_bit).sum(axis=1)
    bits = np.zeros(CODE_BITS, dtype=np.uint8)
    payload: bytes | None = None
    wave, soft, wave_sign = waves[int(np.argmax(strength))], np.zeros(CHANNEL_BITS), 1.0
    for phase_index in np.argsort(strength)[::-1][:PHASE_CANDIDATES]:
        candidate_wave = waves[phase_index]
        candidate_soft = candidate_wave @ per_bit  # (channel bits,), positive means 0
        scale = float(np.abs(candidate_soft).mean()) or 1.0
        for sign in (1.0, -1.0):  # a half-period shift inverts every bit; the CRC settles it
            candidate = viterbi_decode(sign * candidate_soft / scale, CODE_BITS)
            if payload is None and (phase_index == np.argmax(strength) and sign == 1.0):
                bits, soft, wave, wave_sign = candidate, candidate_soft, candidate_wave, sign
            decoded = decode_codeword(candidate)
            if decoded is not None:
                bits, soft, wave, wave_sign, payload = (
                    candidate,
                    candidate_soft,
                    candidate_wave,
                    sign,
                    decoded,
                )
                break
        if payload is not None:
            break
    # Coherence: how well the soft channel values agree with the decoded codeword re-encoded.
    channel = 1.0 - 2.0 * convolutional_encode(bits).astype(np.float64)
    mass = float(np.abs(soft).sum())
    coherence = float(np.sum(wave_sign * soft * channel) / mass) if mass > 0 else 0.0
    found = payload is not None and coherence >= COHERENCE_MIN
    reference, accuracy = codeword_accuracy(bits, expected, found)
    # Lone decodes of each flip period (raw channel bits, before the code), `frame_bit_accuracy`.
    reference_channel = convolutional_encode(reference)
    period_of = np.floor((times[loud] - times[loud][0]) / FLIP_PERIOD_S).astype(np.int64)
    unit_accuracy = None
    if found or expected is not None:
        accuracies = []
        for unit in np.unique(period_of):
            chosen = period_of == unit
            unit_sums = wave_sign * (wave[chosen] @ per_bit[chosen])
            if np.any(unit_sums != 0):
                accuracies.append(float(np.mean((unit_sums < 0) == reference_channel)))
        unit_accuracy = float(np.mean(accuracies)) if accuracies else None
    return WatermarkReading(
        found=found,
        payload=payload if found else None,
        bit_accuracy=accuracy,
        coherence=coherence,
        frame_bit_accuracy=unit_accuracy,
        units=len(np.unique(period_of)),
        raw_bits=tuple(int(b) for b in bits),
    )


def _empty_reading(expected: bytes | None) -> WatermarkReading:
    return WatermarkReading(
        found=False,
        payload=None,
        bit_accuracy=0.0 if expected is not None else None,
        coherence=0.0,
        frame_bit_accuracy=None,
        units=0,
        raw_bits=(),
    )
