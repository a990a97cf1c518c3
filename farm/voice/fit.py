"""Fit each synthesized sentence to its slot and assemble one PCM timeline.

Per sentence (`fit_sentence`):

1. trim the synthesized audio's leading and trailing silence;
2. ``length_ratio = trimmed / original speech``. Within ``stretch_tolerance`` of 1 it is padded or
   cut (with a fade); inside the band ``[stretch_min, stretch_max]`` it is time-stretched
   (pedalboard, pitch preserved) to exactly the original speech length;
3. above the band it is sped up by ``stretch_max`` only and borrows the gap up to the next
   sentence; if it still overruns its slot it is cut with a fade. Below the band it is slowed by
   ``stretch_min`` only and ends early. Both cases are reported (``in_band=False``);
4. its loudness is matched to the original sentence (LUFS with pyloudnorm, or RMS when either is
   shorter than ``min_loudness_s``), never peaking above ``max_peak_dbfs``.

`assemble_timeline` places every fitted sentence at its exact start sample on a timeline of exactly
``total_samples`` (zero end drift) over the background, when one was separated.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import pedalboard
import pyloudnorm

from farm.voice.model import FittedSentence, LoudnessMethod, Sentence, SentenceAudio, SentenceReport
from farm.voice.settings import FitSettings
from farm.voice.signal import (
    as_2d,
    db_to_gain,
    fade_edges,
    fit_length,
    fit_length_2d,
    gain_to_db,
    peak,
    speech_bounds,
    voice_channel_gains,
)

logger = logging.getLogger(__name__)

_MIN_STRETCH_SAMPLES = 256
_ONSET_FADE_S = 0.0025
_SILENT_RMS = 1e-5


def time_stretch(audio: np.ndarray, sample_rate: int, speed: float, length: int) -> np.ndarray:
    """Pitch-preserving time-stretch by `speed` (>1 is faster), cut or padded to `length`."""
    x = np.ascontiguousarray(audio, dtype=np.float32)
    if x.size < _MIN_STRETCH_SAMPLES or speed == 1.0:
        return fit_length(x, length)
    y = pedalboard.time_stretch(x[None, :], float(sample_rate), float(speed))[0]
    return fit_length(y, length)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def loudness_gain_db(
    voice: np.ndarray, original: np.ndarray, sample_rate: int, settings: FitSettings
) -> tuple[float, LoudnessMethod]:
    """The gain (dB) that gives `voice` the loudness of `original`, and how it was measured."""
    if _rms(original) < _SILENT_RMS or _rms(voice) < _SILENT_RMS:
        return 0.0, "none"
    shortest = min(voice.size, original.size) / sample_rate
    if shortest >= settings.min_loudness_s:
        meter = pyloudnorm.Meter(sample_rate)
        target = float(meter.integrated_loudness(original.astype(np.float64)))
        current = float(meter.integrated_loudness(voice.astype(np.float64)))
        if math.isfinite(target) and math.isfinite(current):
            return target - current, "lufs"
    return gain_to_db(_rms(original) / _rms(voice)), "rms"


def fit_sentence(
    sentence: Sentence,
    audio: SentenceAudio,
    original: np.ndarray,
    sample_rate: int,
    settings: FitSettings,
) -> FittedSentence:
    """Trim, stretch, level and bound one sentence (see the module doc).

    `original` is the sentence's speech at the video's level (`VoicePlan.sentence_original`).
    The returned samples start at ``sentence.speech_start_sample`` and never pass its slot.
    """
    if audio.sample_rate != sample_rate:
        raise ValueError(
            f"sentence {sentence.index}: synthesized at {audio.sample_rate} Hz, timeline is "
            f"{sample_rate} Hz; synthesize_sentence resamples, call it first"
        )
    target = sentence.speech_samples
    slot = sentence.slot_samples
    notes: list[str] = []
    bounds = speech_bounds(audio.samples, sample_rate, settings.trim_db, settings.trim_floor_dbfs)
    fade = round(settings.fade_ms * sample_rate / 1000)
    onset = round(_ONSET_FADE_S * sample_rate)

    def report(**values: object) -> SentenceReport:
        base: dict[str, object] = {
            "index": sentence.index,
            "start_sample": sentence.speech_start_sample,
            "end_sample": sentence.speech_start_sample,
            "start_s": sentence.speech_start_sample / sample_rate,
            "end_s": sentence.speech_start_sample / sample_rate,
            "text": sentence.text,
            "backend": audio.backend,
            "seed": audio.seed,
            "length_ratio": 0.0,
            "stretch_ratio": 1.0,
            "in_band": True,
            "borrowed_samples": 0,
            "trimmed_samples": 0,
            "loudness": "none",
            "gain_db": 0.0,
            "synth_seconds": audio.synth_seconds,
            "notes": tuple(notes),
        }
        base.update(values)
        return SentenceReport(**base)  # type: ignore[arg-type]

    if audio.keeps_timing and audio.samples.size == target and bounds is not None:
        bounds = (0, target)  # sample-aligned with the original speech: place it as it is
    if bounds is None or target <= 0:
        notes.append("synthesized audio is silent; nothing placed")
        return FittedSentence(
            start_sample=sentence.speech_start_sample,
            samples=np.zeros(0, dtype=np.float32),
            report=report(in_band=False, notes=tuple(notes)),
        )
    trimmed = audio.samples[bounds[0] : bounds[1]]
    length = trimmed.size
    ratio = length / target
    in_band = True
    borrowed = 0
    cut = 0
    lo, hi = settings.stretch_min, settings.stretch_max
    if abs(ratio - 1.0) <= settings.stretch_tolerance:
        speed = 1.0
        out = fit_length(trimmed, target)
        if length > target:
            out = fade_edges(out, 0, fade)
    elif lo <= ratio <= hi:
        speed = ratio
        out = time_stretch(trimmed, sample_rate, speed, target)
    elif ratio > hi:
        speed = hi
        in_band = False
        natural = round(length / hi)
        out = time_stretch(trimmed, sample_rate, speed, natural)
        if natural <= slot:
            borrowed = natural - target
            notes.append(
                f"needs {ratio:.2f}× (band {lo}–{hi}); sped up {hi}× and borrowed "
                f"{borrowed / sample_rate:.3f} s of the following gap"
            )
        else:
            borrowed = slot - target
            cut = natural - slot
            out = fade_edges(out[:slot], 0, fade)
            notes.append(
                f"needs {ratio:.2f}× (band {lo}–{hi}); sped up {hi}×, borrowed the whole gap "
                f"and cut {cut / sample_rate:.3f} s with a fade"
            )
    else:
        speed = lo
        in_band = False
        natural = round(length / lo)
        out = time_stretch(trimmed, sample_rate, speed, natural)
        notes.append(
            f"needs {ratio:.2f}× (band {lo}–{hi}); slowed {lo}× and ends "
            f"{(target - natural) / sample_rate:.3f} s early"
        )
    out = fade_edges(out, onset, onset)
    gain_db, method = loudness_gain_db(out, original, sample_rate, settings)
    top = peak(out)
    if top > 0:
        gain_db = min(gain_db, settings.max_peak_dbfs - gain_to_db(top))
    out = out * np.float32(db_to_gain(gain_db))
    return FittedSentence(
        start_sample=sentence.speech_start_sample,
        samples=out.astype(np.float32),
        report=report(
            end_sample=sentence.speech_start_sample + out.size,
            end_s=(sentence.speech_start_sample + out.size) / sample_rate,
            length_ratio=ratio,
            stretch_ratio=speed,
            in_band=in_band,
            borrowed_samples=borrowed,
            trimmed_samples=cut,
            loudness=method,
            gain_db=gain_db,
            notes=tuple(notes),
        ),
    )


def assemble_timeline(
    total_samples: int,
    channels: int,
    sample_rate: int,
    fitted: Sequence[FittedSentence],
    background: np.ndarray | None,
    *,
    background_gain: float = 1.0,
    kept: Sequence[tuple[int, np.ndarray]] = (),
) -> tuple[np.ndarray, list[SentenceReport]]:
    """One float32 (total_samples, channels) timeline: background plus every sentence at its start.

    A sentence reaching past ``total_samples`` is cut there (and reported); overlapping sentences
    add up. The result is clipped to [-1, 1] (a warning is logged when that changed samples).
    `kept` are ranges of the original mix (start sample, (samples, channels)) that replace
    the timeline there as they are: sentences somebody else says.
    """
    if total_samples < 0 or channels < 1 or sample_rate <= 0:
        raise ValueError(
            f"timeline needs total_samples >= 0, channels >= 1, sample_rate > 0; got "
            f"{total_samples}, {channels}, {sample_rate}"
        )
    if background is None:
        timeline = np.zeros((total_samples, channels), dtype=np.float32)
    else:
        bg = as_2d(background)
        if bg.shape[1] != channels:
            raise ValueError(f"background has {bg.shape[1]} channels, the timeline {channels}")
        timeline = fit_length_2d(bg, total_samples) * np.float32(background_gain)
    for start, original in kept:
        stop = min(start + original.shape[0], total_samples)
        if stop > start >= 0:
            timeline[start:stop] = original[: stop - start]
    gains = voice_channel_gains(channels)
    reports: list[SentenceReport] = []
    for item in sorted(fitted, key=lambda f: f.start_sample):
        start = item.start_sample
        report = item.report
        stop = min(start + item.samples.size, total_samples)
        if start < 0:
            raise ValueError(
                f"sentence {report.index} starts at sample {start}, before the timeline"
            )
        if stop > start:
            timeline[start:stop] += item.samples[: stop - start, None] * gains[None, :]
        if start + item.samples.size > total_samples:
            lost = start + item.samples.size - max(start, total_samples)
            report = _with_note(
                report,
                f"cut {lost} samples at the end of the video",
                end_sample=max(start, stop),
                end_s=max(start, stop) / sample_rate,
                trimmed_samples=report.trimmed_samples + lost,
                in_band=False,
            )
        reports.append(report)
    over = int(np.count_nonzero(np.abs(timeline) > 1.0))
    if over:
        logger.warning("voice timeline: %d samples above full scale were clipped", over)
        np.clip(timeline, -1.0, 1.0, out=timeline)
    return timeline, reports


def _with_note(report: SentenceReport, note: str, **changes: object) -> SentenceReport:
    from dataclasses import replace

    return replace(report, notes=(*report.notes, note), **changes)  # type: ignore[arg-type]
