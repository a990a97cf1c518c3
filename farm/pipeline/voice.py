"""The voice stage as units of work: planned once, one sentence per unit, assembled by the reducer.

::

    plan_voice_units(plan)   where the job runs: decode, normalise, slice, text, target profile;
                             one `SentenceTask` per sentence (a few seconds of PCM each)
    run_sentence(task)       on any worker: synthesize in the identity's voice, fit to the slot,
                             write the sentence's PCM to the work dir (tmp + fsync + rename)
    assemble_voice(...)      in the reducer: every sentence file at its exact start sample on
                             one timeline exactly as long as the source's audio stream

Sentence files are recorded in the ledger like shards, so a resumed job voices only what is
missing, and a retry reproduces the same take (the seed comes from the job and the sentence).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from farm.chaos import ChaosSettings, inject
from farm.errors import MediaError
from farm.face.identity import IdentityPack, load_identity
from farm.fsutil import commit_file
from farm.media.audio import as_2d, decode_audio, write_raw_pcm
from farm.pipeline.plan import JobPlan
from farm.plan.ledger import Ledger
from farm.spec import JobSpec
from farm.voice.model import (
    FittedSentence,
    Sentence,
    SentenceReport,
    SentenceSpeaker,
    VoiceProfile,
    VoiceReport,
)
from farm.voice.settings import VoiceSettings

if TYPE_CHECKING:
    from farm.voice.synth import VoiceSynth

# The DSP modules (farm.voice.stage, farm.voice.fit) load SciPy, pedalboard and WORLD: imported
# where a sentence is planned, voiced or assembled, so a job that keeps its audio never pays.


@dataclass(frozen=True)
class SentenceTask:
    """One sentence and the few seconds of PCM it needs; picklable, no shared state."""

    job_id: str
    sentence: Sentence
    source: np.ndarray
    original: np.ndarray
    sample_rate: int
    voice_refs: tuple[Path, ...]
    settings: VoiceSettings
    seed: int
    target: VoiceProfile | None
    source_profile: VoiceProfile | None
    out_path: Path

    @property
    def key(self) -> str:
        return f"sentence {self.sentence.index}"


@dataclass(frozen=True)
class SentenceResult:
    """A voiced sentence on disk: mono float32 samples that start at ``start_sample``."""

    index: int
    start_sample: int
    samples: int
    path: Path
    report: SentenceReport
    seconds: float
    worker: str = ""

    @property
    def key(self) -> str:
        return f"sentence {self.index}"

    def record(self) -> dict[str, Any]:
        """The ledger entry (JSON; the file's path follows from the work dir and the index)."""
        return {
            "start_sample": self.start_sample,
            "samples": self.samples,
            "seconds": round(self.seconds, 4),
            "report": asdict(self.report),
        }

    @classmethod
    def from_record(cls, index: int, record: dict[str, Any], work_dir: Path) -> SentenceResult:
        report = dict(record["report"])
        report["notes"] = tuple(report.get("notes", ()))
        return cls(
            index=index,
            start_sample=int(record["start_sample"]),
            samples=int(record["samples"]),
            path=sentence_path(work_dir, index),
            report=SentenceReport(**report),
            seconds=float(record.get("seconds", 0.0)),
        )


@dataclass(frozen=True)
class VoiceUnits:
    """The planned voice stage of one job (picklable; goes to the reducer)."""

    sample_rate: int
    channels: int
    total_samples: int
    """The source audio stream's exact length: the re-voiced track ends where it ends."""
    tasks: tuple[SentenceTask, ...] = ()
    background_path: Path | None = None
    """Separated background (raw f32le, ``channels`` interleaved), or None."""
    warnings: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)
    skipped: str | None = None
    """Why the stage does not run for this input (said in the report), or None."""
    revoice: str = "all"
    kept: tuple[tuple[int, Path], ...] = ()
    """(start sample, raw f32le file) of original audio kept as it is: others' sentences."""
    speakers: tuple[SentenceSpeaker, ...] = ()


def sentence_path(work_dir: Path, index: int) -> Path:
    return work_dir / "voice" / f"sentence-{index:05d}.f32"


def plan_voice_units(plan: JobPlan) -> VoiceUnits | None:
    """The voice stage's units for a job, or None in ``keep`` mode (the audio passes through)."""
    spec = plan.spec
    if spec.voice.mode == "keep":
        return None
    audio = plan.info.audio
    if audio is None:
        return VoiceUnits(
            0,
            0,
            0,
            skipped="the input has no audio stream: voice stage skipped, video still produced",
        )
    if spec.face is None:
        raise MediaError("re-voicing needs an identity pack with voice references")
    pack = load_identity(spec.face.identity)
    speakers_of = None
    if revoice_mode(spec) == "swapped" and plan.info.video is not None:
        speakers_of = partial(_active_speakers, plan, pack, audio.sample_rate)
    return voice_units_from_pcm(
        decode_audio(plan.info.path, audio),
        audio.sample_rate,
        with_pack_voice_model(spec.voice, pack),
        tuple(pack.voice_refs),
        job_id=plan.job_id,
        work_dir=plan.work_dir,
        layout=audio.layout,
        speakers_of=speakers_of,
    )


def with_pack_voice_model(settings: VoiceSettings, pack: IdentityPack) -> VoiceSettings:
    """`settings` pointing `rvc` at the pack's own generator (its signed sha256 and rate) when
    the job names none: the model trained on the person travels with their consent."""
    model = pack.voice_model("rvc")
    if settings.mode != "rvc" or settings.rvc.generator is not None or model is None:
        return settings
    path, entry = model
    rvc = settings.rvc.model_copy(
        update={
            "generator": str(path.resolve()),
            "generator_sha256": entry.sha256,
            "generator_sample_rate": entry.sample_rate or settings.rvc.generator_sample_rate,
        }
    )
    return settings.model_copy(update={"rvc": rvc})


def _slots_before_kept(sentences: Sequence[Sentence], revoiced: set[int]) -> list[Sentence]:
    """The sentences, each re-voiced one's slot ending where a kept sentence begins: a slot
    runs to the next sentence's speech, and must not spill into audio that stays as it is."""
    out = list(sentences)
    for k, (sentence, following) in enumerate(pairwise(sentences)):
        if sentence.index in revoiced and following.index not in revoiced:
            stop = max(sentence.speech_stop_sample, following.start_sample)
            out[k] = replace(sentence, slot_stop_sample=min(sentence.slot_stop_sample, stop))
    return out


def revoice_mode(spec: JobSpec) -> str:
    """``swapped`` or ``all``: what ``voice.revoice`` means for this job's face selection."""
    if spec.voice.revoice != "auto":
        return spec.voice.revoice
    return "swapped" if spec.face is not None and spec.face.faces == "reference" else "all"


def _active_speakers(
    plan: JobPlan, pack: IdentityPack, sample_rate: int, sentences: Sequence[Sentence]
) -> list[SentenceSpeaker]:
    """Who says each sentence, by the swap's own tracker and selection (`farm.voice.speakers`)."""
    from farm.face.catalogue import full_face_manifest
    from farm.face.processor import FaceSwapProcessor
    from farm.media.video_io import decode_range, frame_to_bgr
    from farm.voice.speakers import sentence_speakers

    video = plan.info.video
    face = plan.spec.face
    assert video is not None and face is not None  # plan_voice_units checked both
    # The pack the voice stage loaded (and verified) already; the classic tracker and selection.
    observer = FaceSwapProcessor(face, pack, full_face_manifest(plan.spec.models_dir))

    def read_frames(start: int, stop: int) -> Iterator[tuple[int, np.ndarray]]:
        for index, frame in decode_range(plan.info.path, video.frame_pts, start, stop):
            yield index, frame_to_bgr(frame, video.color)

    try:
        return sentence_speakers(
            sentences, sample_rate, float(video.fps), video.frame_count, observer, read_frames
        )
    finally:
        observer.close()


def voice_units_from_pcm(
    pcm: np.ndarray,
    sample_rate: int,
    settings: VoiceSettings,
    voice_refs: tuple[Path, ...],
    *,
    job_id: str,
    work_dir: Path,
    layout: str = "",
    speakers_of: Callable[[Sequence[Sentence]], list[SentenceSpeaker]] | None = None,
) -> VoiceUnits:
    """Plan the voice units of a decoded track: float32 (samples, channels) at ``sample_rate``.

    The timeline is as long as ``pcm``: the source's audio stream, whatever the picture's length.
    `speakers_of` (re-voice only the swapped person) says who says each sentence; sentences of
    anybody else keep the original audio, sample for sample.
    """
    from farm.voice.stage import (
        decide_voice_stage,
        plan_voice,
        prepare_target,
        sentence_seed,
        voiceable,
    )

    channels = int(pcm.shape[1]) if pcm.ndim == 2 else 1
    decision = decide_voice_stage(pcm, settings)
    if not decision.run:
        return VoiceUnits(sample_rate, channels, int(pcm.shape[0]), skipped=decision.reason)
    began = time.perf_counter()
    plan_settings = settings
    if speakers_of is not None:
        # A turn between speakers is a pause, often shorter than the slicer's 4 s minimum clip:
        # cut at every pause so that no sentence holds two people.
        slicer = settings.slicer
        shortest = max(slicer.min_interval_ms, slicer.min_sentence_ms)
        plan_settings = settings.model_copy(
            update={"slicer": slicer.model_copy(update={"min_length_ms": shortest})}
        )
    voice_plan = plan_voice(pcm, sample_rate, plan_settings, settings.transcript, pcm.shape[0])
    timings = {"plan": time.perf_counter() - began}
    speakers: list[SentenceSpeaker] = []
    kept: list[tuple[int, Path]] = []
    revoiced = {s.index for s in voice_plan.sentences}
    if speakers_of is not None:
        began = time.perf_counter()
        speakers = speakers_of(voice_plan.sentences)
        timings["active_speaker"] = time.perf_counter() - began
        revoiced = {s.index for s in speakers if s.speaker == "swapped"}
        mix = as_2d(pcm)
        for sentence in voice_plan.sentences:
            if sentence.index in revoiced:
                continue
            path = work_dir / "voice" / f"kept-{sentence.index:05d}.f32"
            original = mix[sentence.start_sample : sentence.slot_stop_sample]
            write_raw_pcm(original, path, sample_rate, layout)
            kept.append((sentence.start_sample, path))
    sentences = _slots_before_kept(voice_plan.sentences, revoiced)
    began = time.perf_counter()
    target = prepare_target(settings, voice_refs) if voice_plan.sentences else None
    timings["target"] = time.perf_counter() - began
    warnings = list(voice_plan.warnings)
    job_seed = int(job_id[:8], 16)
    tasks: list[SentenceTask] = []
    for sentence in sentences:
        if sentence.index not in revoiced:
            continue
        if not voiceable(sentence, settings):
            warnings.append(
                f"sentence {sentence.index} at "
                f"{sentence.speech_start_sample / sample_rate:.3f} s has no text; left silent"
            )
            continue
        tasks.append(
            SentenceTask(
                job_id=job_id,
                sentence=sentence,
                source=voice_plan.sentence_source(sentence),
                original=voice_plan.sentence_original(sentence),
                sample_rate=sample_rate,
                voice_refs=voice_refs,
                settings=settings,
                seed=sentence_seed(job_seed, sentence.index),
                target=target,
                source_profile=voice_plan.source_profile,
                out_path=sentence_path(work_dir, sentence.index),
            )
        )
    background_path = None
    if voice_plan.background is not None:
        background_path = work_dir / "voice" / "background.f32"
        write_raw_pcm(voice_plan.background, background_path, sample_rate, layout)
    return VoiceUnits(
        sample_rate=sample_rate,
        channels=voice_plan.channels,
        total_samples=voice_plan.total_samples,
        tasks=tuple(tasks),
        background_path=background_path,
        warnings=tuple(warnings),
        timings=timings,
        revoice="swapped" if speakers_of is not None else "all",
        kept=tuple(kept),
        speakers=tuple(speakers),
    )


def run_sentence(
    task: SentenceTask,
    *,
    chaos: ChaosSettings | None = None,
    synth: VoiceSynth | None = None,
) -> SentenceResult:
    """Voice one sentence and write its fitted samples to ``task.out_path``.

    `synth` is the worker's backend for this job's voice (kept across its sentences).
    """
    from farm.voice.fit import fit_sentence
    from farm.voice.stage import synthesize_sentence

    began = time.perf_counter()
    inject(chaos, task.key, 1 << 30)
    voiced = synthesize_sentence(
        task.sentence,
        task.source,
        task.sample_rate,
        task.voice_refs,
        task.settings,
        task.seed,
        target=task.target,
        source_profile=task.source_profile,
        synth=synth,
    )
    fitted = fit_sentence(task.sentence, voiced, task.original, task.sample_rate, task.settings.fit)
    task.out_path.parent.mkdir(parents=True, exist_ok=True)
    # Unique per attempt, like shard files: a zombie attempt must never share a file.
    tmp = task.out_path.with_name(f".{task.out_path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}")
    np.ascontiguousarray(fitted.samples, dtype="<f4").tofile(tmp)
    commit_file(tmp, task.out_path)
    return SentenceResult(
        index=task.sentence.index,
        start_sample=fitted.start_sample,
        samples=int(fitted.samples.size),
        path=task.out_path,
        report=fitted.report,
        seconds=time.perf_counter() - began,
    )


def pending_sentences(
    units: VoiceUnits, ledger: Ledger
) -> tuple[list[SentenceTask], list[SentenceResult]]:
    """(sentences still to voice, finished ones reused from the ledger and the work dir)."""
    done = ledger.sentence_records()
    todo: list[SentenceTask] = []
    reused: list[SentenceResult] = []
    for task in units.tasks:
        record = done.get(task.sentence.index)
        if record is not None:
            result = SentenceResult.from_record(task.sentence.index, record, ledger.work_dir)
            on_disk = result.path.exists() and result.path.stat().st_size == 4 * result.samples
            if on_disk and result.start_sample == task.sentence.speech_start_sample:
                reused.append(result)
                continue
            ledger.forget_sentence(task.sentence.index)
        todo.append(task)
    return todo, reused


def load_sentence(result: SentenceResult) -> FittedSentence:
    samples = np.fromfile(result.path, dtype="<f4")
    if samples.size != result.samples:
        raise MediaError(
            f"sentence {result.index}: {result.path} holds {samples.size} samples, the ledger "
            f"says {result.samples}; delete the work directory's voice/ folder and resume"
        )
    return FittedSentence(result.start_sample, samples.astype(np.float32), result.report)


def assemble_voice(
    units: VoiceUnits, settings: VoiceSettings, results: Sequence[SentenceResult]
) -> tuple[np.ndarray, VoiceReport]:
    """One PCM timeline, exactly ``units.total_samples`` long, with every sentence in place."""
    from farm.voice.stage import finish_voice

    background = None
    if units.background_path is not None:
        background = np.fromfile(units.background_path, dtype="<f4").reshape(-1, units.channels)
    timings = dict(units.timings)
    timings["synthesize_and_fit"] = sum(r.seconds for r in results)
    kept = [
        (start, np.fromfile(path, dtype="<f4").reshape(-1, units.channels))
        for start, path in units.kept
    ]
    return finish_voice(
        [load_sentence(r) for r in results],
        settings,
        total_samples=units.total_samples,
        channels=units.channels,
        sample_rate=units.sample_rate,
        background=background,
        warnings=units.warnings,
        timings=timings,
        kept=kept,
        revoice=units.revoice,
        speakers=units.speakers,
    )


def voice_track_in_process(
    pcm: np.ndarray,
    sample_rate: int,
    settings: VoiceSettings,
    voice_refs: Sequence[Path],
    work_dir: Path,
    *,
    job_id: str = "0" * 12,
) -> tuple[np.ndarray, VoiceReport]:
    """The voice stage alone on one decoded track, in this process, through the same units a job
    runs (plan, `run_sentence` for each, `assemble_voice`): for tests and benchmarks."""
    units = voice_units_from_pcm(
        as_2d(pcm), sample_rate, settings, tuple(voice_refs), job_id=job_id, work_dir=work_dir
    )
    return assemble_voice(units, settings, [run_sentence(task) for task in units.tasks])
