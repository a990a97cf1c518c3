"""The voice stage's entry points, as plain functions over numpy arrays.

The spine calls, in order::

    decide_voice_stage(audio, settings)            -> StageDecision (skip when there is no audio)
    plan_voice(audio, sr, settings, transcript, N)  -> VoicePlan     (once, in the driver)
    prepare_target(settings, voice_refs)            -> VoiceProfile  (once; pass to every task)
    synthesize_sentence(...)                        -> SentenceAudio (one unit per sentence)
    fit_sentence(...)                               -> FittedSentence
    finish_voice(fitted, settings, N, ...)          -> (PCM exactly N samples long, report)

`farm.pipeline.voice` cuts these into the units a runner executes (in-process or on Ray); the
same steps run everywhere. Audio is float32 (samples, channels) at the video's own sample rate;
every offset is an integer sample.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from farm.errors import MediaError, SpecError
from farm.voice.asr import ASR_SAMPLE_RATE, Transcriber, create_transcriber
from farm.voice.fit import assemble_timeline
from farm.voice.model import (
    FittedSentence,
    Sentence,
    SentenceAudio,
    SentenceSpeaker,
    StageDecision,
    VoicePlan,
    VoiceProfile,
    VoiceReport,
)
from farm.voice.separate import create_separator
from farm.voice.settings import VoiceSettings
from farm.voice.signal import (
    as_2d,
    peak_normalise_gain,
    resample,
    speech_bounds,
    speech_mixdown,
)
from farm.voice.slicer import plan_slices
from farm.voice.synth import (
    SynthRequest,
    VoiceSynth,
    converts_speech,
    create_synth,
    needs_target_profile,
)
from farm.voice.transcript import Transcript, align_text, read_transcript
from farm.voice.world import profile_from_audio, profile_from_references

logger = logging.getLogger(__name__)

_SOURCE_PROFILE_MAX_S = 120.0
PROFILE_MIN_S = 2.0
"""Shortest total voice reference for a conversion profile (seconds)."""


def decide_voice_stage(audio: np.ndarray | None, settings: VoiceSettings) -> StageDecision:
    """Whether the voice stage runs for this input; the reason is meant for the user."""
    if settings.mode == "keep":
        return StageDecision(False, "voice mode 'keep': the original audio is passed through")
    if audio is None or audio.size == 0 or (audio.ndim == 2 and audio.shape[1] == 0):
        return StageDecision(
            False,
            f"the input has no audio track; voice stage (mode {settings.mode!r}) skipped, the "
            "output has no audio either",
        )
    return StageDecision(True, f"re-voicing with backend {settings.backend_name()!r}")


def sentence_seed(job_seed: int, index: int) -> int:
    """A reproducible per-sentence seed in [0, 2**32 − 1) derived from the job and sentence."""
    digest = hashlib.sha256(f"syncfarm-voice:{job_seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2**32 - 1)


def prepare_target(settings: VoiceSettings, voice_refs: Sequence[Path]) -> VoiceProfile | None:
    """The identity's `VoiceProfile` when the backend converts toward it (vc, espeak), else None."""
    if not needs_target_profile(settings.backend_name()):
        return None
    # A pitch and formant profile needs a couple of seconds of voiced speech, not the 3 s that a
    # GPT-SoVITS prompt must have: one short take (a 2.98 s GRID sentence) is enough here.
    return profile_from_references(
        voice_refs, settings.vc, min(settings.reference_min_s, PROFILE_MIN_S)
    )


def _sentences_from_cues(
    transcript: Transcript,
    vocals: np.ndarray,
    sample_rate: int,
    total_samples: int,
    settings: VoiceSettings,
    warnings: list[str],
) -> list[tuple[int, int, str | None]]:
    ranges: list[tuple[int, int, str | None]] = []
    for number, cue in enumerate(transcript.cues, start=1):
        start = cue.start_ms * sample_rate // 1000
        stop = cue.end_ms * sample_rate // 1000
        if start >= total_samples:
            warnings.append(
                f"subtitle {number} ({cue.text[:40]!r}) starts at {cue.start_ms / 1000:.3f} s, "
                f"after the video's end ({total_samples / sample_rate:.3f} s); not voiced"
            )
            continue
        if stop > total_samples:
            warnings.append(
                f"subtitle {number} ({cue.text[:40]!r}) ends at {cue.end_ms / 1000:.3f} s, after "
                f"the video's end ({total_samples / sample_rate:.3f} s); cut at the end"
            )
            stop = total_samples
        if ranges and start < ranges[-1][1]:
            warnings.append(
                f"subtitle {number} starts before the previous one ends; the previous one is "
                "shortened to its start"
            )
            prev = ranges[-1]
            if start <= prev[0]:
                ranges[-1] = (prev[0], prev[1], f"{prev[2]} {cue.text}")
                continue
            ranges[-1] = (prev[0], start, prev[2])
        ranges.append((start, stop, cue.text))
    return ranges


def _attach_plain_text(
    transcript: Transcript, ranges: list[tuple[int, int, str | None]], warnings: list[str]
) -> list[tuple[int, int, str | None]]:
    texts = align_text(transcript.lines, [b - a for a, b, _ in ranges])
    if len(transcript.lines) != len(ranges):
        warnings.append(
            f"transcript {transcript.path.name} has {len(transcript.lines)} lines for "
            f"{len(ranges)} detected sentences; its words were spread over them by duration"
        )
    if not ranges and transcript.lines:
        warnings.append(
            f"transcript {transcript.path.name} has text but no speech was found to align it to"
        )
    return [(a, b, t) for (a, b, _), t in zip(ranges, texts, strict=True)]


def plan_voice(
    audio: np.ndarray,
    sample_rate: int,
    settings: VoiceSettings,
    transcript_path: Path | None,
    total_samples: int,
    *,
    transcriber: Transcriber | None = None,
) -> VoicePlan:
    """Normalise, separate, slice and attach text: the sentences with exact sample offsets.

    `transcript_path` (or ``settings.transcript``) may be SRT/VTT/ASS (its cues are the
    sentences) or plain text (spread over the slicer's clips). In `tts` mode without a transcript
    the ASR backend transcribes each clip; `vc` mode needs no text. Speech after `total_samples`
    (the video's length) is not voiced and is reported in ``plan.warnings``.
    """
    if sample_rate <= 0:
        raise MediaError(f"audio sample rate must be positive, got {sample_rate}")
    if total_samples < 0:
        raise MediaError(f"total_samples must be >= 0, got {total_samples}")
    mix = as_2d(audio)
    if mix.shape[0] == 0 or mix.shape[1] == 0:
        raise MediaError("the audio holds no samples; call decide_voice_stage first (it skips)")
    warnings: list[str] = []
    separation = create_separator(settings).separate(mix, sample_rate)
    mono = speech_mixdown(separation.voice)
    if mono.shape[0] > total_samples:
        extra = mono.shape[0] - total_samples
        warnings.append(
            f"the audio runs {extra / sample_rate:.3f} s past the video's end; that part is "
            "not voiced"
        )
    gain = peak_normalise_gain(mono, *settings.peak_range_dbfs)
    vocals = (mono * np.float32(gain))[:total_samples]
    path = transcript_path or settings.transcript
    transcript = read_transcript(path) if path is not None else None
    if transcript is not None:
        warnings.extend(transcript.warnings)
    ranges: list[tuple[int, int, str | None]]
    if transcript is not None and transcript.timed:
        ranges = _sentences_from_cues(
            transcript, vocals, sample_rate, total_samples, settings, warnings
        )
    else:
        ranges = [(a, b, None) for a, b in plan_slices(vocals, sample_rate, settings.slicer)]
        if transcript is not None:
            ranges = _attach_plain_text(transcript, ranges, warnings)
        elif settings.mode == "tts":
            asr = transcriber or create_transcriber(settings.asr)
            if asr is None:
                raise SpecError(
                    "voice mode 'tts' needs the sentences' text: give a transcript file "
                    "(SRT/VTT/ASS/TXT), or leave voice.asr.backend at 'auto' (Whisper tiny.en)"
                )
            ranges = [
                (
                    a,
                    b,
                    asr.transcribe(
                        resample(vocals[a:b], sample_rate, ASR_SAMPLE_RATE), settings.language
                    ),
                )
                for a, b, _ in ranges
            ]
    if not ranges:
        warnings.append("no speech was found in the audio; nothing is re-voiced")
    spans: list[tuple[int, int, int, int, str | None]] = []
    for a, b, text in ranges:
        bounds = speech_bounds(
            vocals[a:b], sample_rate, settings.fit.trim_db, settings.fit.trim_floor_dbfs
        )
        if bounds is None:
            if text is None:
                continue
            warnings.append(
                f"no speech under the text {text[:40]!r} at {a / sample_rate:.3f} s; it is voiced "
                "over the whole cue"
            )
            bounds = (0, b - a)
        spans.append((a, b, a + bounds[0], a + bounds[1], text))
    sentences = []
    for k, (a, b, s0, s1, text) in enumerate(spans):
        slot_stop = spans[k + 1][2] if k + 1 < len(spans) else total_samples
        sentences.append(
            Sentence(
                index=k,
                start_sample=a,
                stop_sample=b,
                speech_start_sample=s0,
                speech_stop_sample=s1,
                slot_stop_sample=max(slot_stop, s1),
                text=text,
                language=settings.language,
            )
        )
    source_profile = None
    if converts_speech(settings.backend_name()) and sentences:
        cap = int(_SOURCE_PROFILE_MAX_S * sample_rate)
        speech = np.concatenate(
            [vocals[s.speech_start_sample : s.speech_stop_sample] for s in sentences]
        )
        source_profile = profile_from_audio(speech[:cap], sample_rate, settings.vc)
    for message in warnings:
        logger.warning("voice plan: %s", message)
    return VoicePlan(
        sample_rate=sample_rate,
        channels=mix.shape[1],
        total_samples=total_samples,
        sentences=tuple(sentences),
        vocals=np.ascontiguousarray(vocals),
        gain=gain,
        background=separation.background,
        source_profile=source_profile,
        warnings=tuple(warnings),
    )


def synthesize_sentence(
    sentence: Sentence,
    source: np.ndarray,
    sample_rate: int,
    voice_refs: Sequence[Path],
    settings: VoiceSettings,
    seed: int,
    *,
    target: VoiceProfile | None = None,
    source_profile: VoiceProfile | None = None,
    synth: VoiceSynth | None = None,
) -> SentenceAudio:
    """Voice one sentence with the backend named by `settings` (one Ray task; all args pickle).

    `source` is the sentence's normalised speech (`VoicePlan.sentence_source`); `target` the
    identity's profile from `prepare_target` (computed here when None); `source_profile` is
    ``plan.source_profile``. Returns mono float32 at `sample_rate`, not yet trimmed or fitted.
    `synth` is a backend the caller keeps across sentences (a worker's: sessions and server
    connections stay open); without one a backend is made for this sentence and closed.
    """
    name = settings.backend_name()
    if name == "keep":
        raise SpecError("voice mode 'keep' synthesizes nothing; skip the voice stage")
    began = time.perf_counter()
    owned = synth is None
    if synth is None:
        synth = create_synth(name, settings, voice_refs, target)
    try:
        samples, rate = synth.synthesize(
            SynthRequest(
                index=sentence.index,
                text=sentence.text,
                language=sentence.language,
                source=np.asarray(source, dtype=np.float32),
                sample_rate=sample_rate,
                seed=seed,
                source_profile=source_profile,
            )
        )
    finally:
        if owned:
            synth.close()
    out = resample(samples, rate, sample_rate)
    return SentenceAudio(
        keeps_timing=synth.keeps_timing and out.size == np.asarray(source).size,
        index=sentence.index,
        samples=out,
        sample_rate=sample_rate,
        backend=name,
        seed=seed,
        synth_seconds=time.perf_counter() - began,
    )


def voiceable(sentence: Sentence, settings: VoiceSettings) -> bool:
    """Text-to-speech needs text; conversion (`vc`, `rvc`) voices every sentence."""
    return converts_speech(settings.backend_name()) or bool((sentence.text or "").strip())


def finish_voice(
    fitted: Sequence[FittedSentence],
    settings: VoiceSettings,
    *,
    total_samples: int,
    channels: int,
    sample_rate: int,
    background: np.ndarray | None,
    warnings: Sequence[str],
    timings: dict[str, float],
    kept: Sequence[tuple[int, np.ndarray]] = (),
    revoice: str = "all",
    speakers: Sequence[SentenceSpeaker] = (),
) -> tuple[np.ndarray, VoiceReport]:
    """Place every fitted sentence on one timeline (exactly `total_samples`) and report.

    `kept`: original audio of the sentences somebody other than the swapped person says.
    """
    notes = list(warnings)
    began = time.perf_counter()
    ordered = sorted(fitted, key=lambda f: f.start_sample)
    timeline, reports = assemble_timeline(
        total_samples,
        channels,
        sample_rate,
        ordered,
        background,
        background_gain=settings.fit.background_gain,
        kept=kept,
    )
    timings["assemble"] = time.perf_counter() - began
    clipped = int(np.count_nonzero(np.abs(timeline) >= 1.0))
    for r in reports:
        if not r.in_band:
            notes.append(f"sentence {r.index}: " + "; ".join(r.notes))
    return timeline, VoiceReport(
        mode=settings.mode,
        backend=settings.backend_name(),
        sample_rate=sample_rate,
        channels=channels,
        total_samples=total_samples,
        sentences=tuple(reports),
        warnings=tuple(notes),
        clipped_samples=clipped,
        timings_s=timings,
        revoice=revoice,
        speakers=tuple(speakers),
    )
