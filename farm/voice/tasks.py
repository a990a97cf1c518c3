"""The voice stage cut into units of work: one sentence per task, for any shell to run.

prepare_voice_job(...)  in the driver: decode, plan, target profile, one task per sentence
run_sentence_task(t)    anywhere (a Ray actor): synthesize the sentence and fit it to its slot
finish_voice(...)       in the driver: one PCM timeline exactly as long as the source audio
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from farm.voice.model import FittedSentence, Sentence, VoicePlan, VoiceProfile
from farm.voice.settings import VoiceSettings
from farm.voice.stage import (
    fit_sentence,
    plan_voice,
    prepare_target,
    sentence_seed,
    synthesize_sentence,
    voiceable,
)


@dataclass(frozen=True)
class SentenceTask:
    """One sentence and the few seconds of PCM it needs; picklable, no shared state."""

    sentence: Sentence
    source: np.ndarray
    original: np.ndarray
    sample_rate: int
    voice_refs: tuple[Path, ...]
    settings: VoiceSettings
    seed: int
    target: VoiceProfile | None
    source_profile: VoiceProfile | None


@dataclass
class VoiceJob:
    plan: VoicePlan
    tasks: list[SentenceTask]
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def prepare_voice_job(
    audio: np.ndarray,
    sample_rate: int,
    settings: VoiceSettings,
    voice_refs: tuple[Path, ...],
    job_seed: int,
) -> VoiceJob:
    began = time.perf_counter()
    plan = plan_voice(audio, sample_rate, settings, settings.transcript, audio.shape[0])
    timings = {"plan": time.perf_counter() - began}
    began = time.perf_counter()
    target = prepare_target(settings, voice_refs) if plan.sentences else None
    timings["target"] = time.perf_counter() - began
    warnings = list(plan.warnings)
    tasks: list[SentenceTask] = []
    for sentence in plan.sentences:
        if not voiceable(sentence, settings):
            warnings.append(
                f"sentence {sentence.index} at "
                f"{sentence.speech_start_sample / sample_rate:.3f} s has no text; left silent"
            )
            continue
        tasks.append(
            SentenceTask(
                sentence=sentence,
                source=plan.sentence_source(sentence),
                original=plan.sentence_original(sentence),
                sample_rate=sample_rate,
                voice_refs=voice_refs,
                settings=settings,
                seed=sentence_seed(job_seed, sentence.index),
                target=target,
                source_profile=plan.source_profile,
            )
        )
    return VoiceJob(plan, tasks, warnings, timings)


def run_sentence_task(task: SentenceTask) -> FittedSentence:
    voiced = synthesize_sentence(
        task.sentence,
        task.source,
        task.sample_rate,
        task.voice_refs,
        task.settings,
        task.seed,
        target=task.target,
        source_profile=task.source_profile,
    )
    return fit_sentence(task.sentence, voiced, task.original, task.sample_rate, task.settings.fit)
