"""One evaluation: decode the input and the output once, in lockstep, and let every judge look.

`evaluate` checks that the two files can be compared frame for frame, finds the faces of every
frame pair with YuNet (once, for all judges), feeds the pairs to the judges in order, and
collects their sections into an `EvalReport`, with what the report page shows beside it
(`EvalArtifacts`). The judges are listed in `JUDGES`; adding one is an entry and a module.
"""

from __future__ import annotations

import importlib
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from farm.errors import FarmError, MediaError
from farm.eval.base import (
    EVAL_SAMPLE_RATE,
    ContactPair,
    EvalArtifacts,
    EvalAudio,
    EvalContext,
    Face,
    FramePair,
    Judge,
    JudgeModels,
    SentenceSpan,
)
from farm.eval.metrics import EvalReport, ProvenanceCheck
from farm.fsutil import AbsolutePath
from farm.models import ModelManifest

if TYPE_CHECKING:
    from farm.media.probe import MediaInfo
    from farm.provenance.keys import TrustList

JudgeName = Literal["identity", "coverage", "fidelity", "temporal", "speaker", "words", "lip_sync"]


@dataclass(frozen=True)
class JudgeEntry:
    """Where a judge lives and what it cannot run without."""

    name: JudgeName
    section: str
    """The `EvalReport` field its findings go in."""
    module: str
    cls: str
    needs_faces: bool = False
    needs_audio: bool = False


JUDGES: tuple[JudgeEntry, ...] = (
    JudgeEntry(
        "identity", "identity_similarity", "farm.eval.identity", "IdentityJudge", needs_faces=True
    ),
    JudgeEntry("coverage", "coverage", "farm.eval.coverage", "CoverageJudge", needs_faces=True),
    JudgeEntry("fidelity", "fidelity", "farm.eval.fidelity", "FidelityJudge"),
    JudgeEntry("temporal", "temporal", "farm.eval.temporal", "TemporalJudge", needs_faces=True),
    JudgeEntry("speaker", "speaker", "farm.eval.speaker", "SpeakerJudge", needs_audio=True),
    JudgeEntry("words", "words", "farm.eval.words", "WordsJudge", needs_audio=True),
    JudgeEntry(
        "lip_sync",
        "lip_sync",
        "farm.eval.lipsync",
        "LipSyncJudge",
        needs_faces=True,
        needs_audio=True,
    ),
)
"""Every judge, in the order its section appears in the report."""

DETECT_MAX_SIDE = 640
"""Frames are shrunk to this longest side for YuNet (its boxes are scaled back)."""


class EvalSettings(BaseModel):
    """How much to look at; the same settings and files always give the same numbers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pairs: int = Field(default=10, ge=1, le=100, description="random frame pairs (paper: 10)")
    samples: int = Field(
        default=60, ge=3, le=10_000, description="frames for SFace and the plots, evenly spread"
    )
    seed: int = 0
    judges: tuple[JudgeName, ...] = Field(
        default=tuple(j.name for j in JUDGES), description="which judges run"
    )


class EvalRequest(BaseModel):
    """What to compare: an output against the input it was made from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: AbsolutePath
    output: AbsolutePath
    identity: AbsolutePath | None = None
    transcript: AbsolutePath | None = None
    settings: EvalSettings = EvalSettings()


@dataclass(frozen=True)
class JobFacts:
    """What a job already knows about its output (saves work, and is more exact)."""

    scene_cuts: tuple[int, ...] | None = None
    sentences: tuple[SentenceSpan, ...] | None = None
    left_out: tuple[tuple[str, str], ...] = ()
    """(judge, why) for judges the job chose not to run: the report page says why."""


@dataclass(frozen=True, eq=False)
class Evaluation:
    report: EvalReport
    artifacts: EvalArtifacts


def evaluate(
    request: EvalRequest,
    *,
    trust: TrustList | None = None,
    job: JobFacts | None = None,
    manifest: ModelManifest | None = None,
) -> Evaluation:
    """Run the judges of ``request.settings`` over the output and its input.

    ``trust`` is the farm's `TrustList` (loaded when None) for the identity pack and `verify`.
    `MediaError` when the files cannot be compared: missing, no video, different frame counts or
    sizes, or an output with no face where the face judges are asked for.
    """
    from farm.eval.models import judge_manifest
    from farm.face.identity import load_identity
    from farm.media.probe import probe
    from farm.provenance.keys import load_trust

    job = job or JobFacts()
    trust_list = trust if trust is not None else load_trust()
    for label, path in (("input", request.input), ("output", request.output)):
        if not path.is_file():
            raise MediaError(f"{label} {path} does not exist or is not a file")
    source_info, output_info = probe(request.input), probe(request.output)
    source_video, output_video = source_info.video, output_info.video
    if output_video.frame_count != source_video.frame_count:
        raise MediaError(
            f"output {request.output} has {output_video.frame_count} frames and input "
            f"{request.input} has {source_video.frame_count}: evaluation compares frame for frame, "
            "so give the output made from this input"
        )
    if (output_video.width, output_video.height) != (source_video.width, source_video.height):
        raise MediaError(
            f"output is {output_video.width}x{output_video.height} and input is "
            f"{source_video.width}x{source_video.height}: they must be the same size"
        )
    pack = load_identity(request.identity, trust=trust_list) if request.identity else None
    transcript = _transcript_text(request.transcript) if request.transcript else None

    settings = request.settings
    frames = source_video.frame_count
    fps = float(source_video.fps)
    cuts = job.scene_cuts
    if cuts is None:
        from farm.plan.scenes import detect_cuts

        cuts = detect_cuts(request.input, source_video).cuts
    shots = _shots(cuts, frames)
    audio = _audio(source_info, output_info, pack.voice_refs if pack else ())
    wants_audio = any(j.needs_audio for j in JUDGES if j.name in settings.judges)
    sentences = job.sentences if wants_audio else ()
    if sentences is None:
        from farm.eval.speech import sentences_from_silence

        sentences = (
            sentences_from_silence(audio.source, audio.sample_rate)
            if audio.source is not None
            else ()
        )
    context = EvalContext(
        source=request.input,
        output=request.output,
        frames=frames,
        fps=fps,
        width=source_video.width,
        height=source_video.height,
        shots=shots,
        sampled=_evenly(frames, settings.samples),
        pairs=_random_pairs(frames, settings.pairs, settings.seed),
        identity_faces=tuple(face.image for face in pack.faces) if pack else (),
        audio=audio,
        sentences=sentences,
        transcript=transcript,
    )
    models = JudgeModels(manifest or judge_manifest())
    skipped: dict[str, str] = dict(job.left_out)
    wanted = [j for j in JUDGES if j.name in settings.judges]
    for entry in wanted:
        reason = _cannot_run(entry, context)
        if reason:
            skipped[entry.name] = reason
    runnable = [j for j in wanted if j.name not in skipped]
    judges: list[tuple[JudgeEntry, Judge]] = [(j, _create(j, context, models)) for j in runnable]
    seconds: dict[str, float] = {j.name: 0.0 for j, _ in judges}

    contact: list[ContactPair] = []
    faces_in, faces_out = 0, 0
    pass_started = time.perf_counter()
    pairs = frozenset(context.pairs)
    for pair in _frame_pairs(context, models, shots):
        faces_in += len(pair.source_faces)
        faces_out += len(pair.output_faces)
        if pair.index in pairs:
            contact.append(ContactPair(pair.index, pair.time_s, pair.source, pair.output))
        for entry, judge in judges:
            started = time.perf_counter()
            judge.observe(pair)
            seconds[entry.name] += time.perf_counter() - started
    seconds["decode_and_detect"] = time.perf_counter() - pass_started - sum(seconds.values())

    face_judges = [j.name for j, _ in judges if j.needs_faces]
    if face_judges and faces_out == 0 and faces_in > 0:
        raise MediaError(
            f"output {request.output} shows no face in any of its {frames} frames, where the "
            f"input shows {faces_in}: it is not a face swap of this input"
        )
    sections: dict[str, BaseModel | None] = {}
    for entry, judge in judges:
        if entry.needs_faces and faces_in == 0:
            skipped[entry.name] = "no face was found in the input"
            continue
        started = time.perf_counter()
        try:
            sections[entry.section] = judge.finish()
        except (FarmError, ValueError) as exc:
            skipped[entry.name] = " ".join(str(exc).split())
        seconds[entry.name] += time.perf_counter() - started

    report = EvalReport(
        input=str(request.input),
        output=str(request.output),
        identity=str(request.identity) if request.identity else None,
        transcript=str(request.transcript) if request.transcript else None,
        frames=frames,
        fps=round(fps, 6),
        width=source_video.width,
        height=source_video.height,
        duration_s=round(float(source_video.duration_s), 4),
        seed=settings.seed,
        judge_seconds={name: round(value, 3) for name, value in seconds.items()},
        provenance=_provenance(request.output, trust_list),
        skipped=skipped,
        **sections,  # type: ignore[arg-type]
    )
    artifacts = EvalArtifacts(
        contact=tuple(contact),
        identity_faces=context.identity_faces,
        audio=audio,
        sentences=sentences,
    )
    return Evaluation(report=report, artifacts=artifacts)


def _create(entry: JudgeEntry, context: EvalContext, models: JudgeModels) -> Judge:
    factory = getattr(importlib.import_module(entry.module), entry.cls)
    judge: Judge = factory(context, models)
    return judge


def _cannot_run(entry: JudgeEntry, context: EvalContext) -> str | None:
    if entry.needs_audio and (context.audio.source is None or context.audio.output is None):
        return "the input or the output has no audio"
    if entry.name == "speaker" and not context.sentences:
        return "no speech was found in the input"
    return None


def _frame_pairs(
    context: EvalContext, models: JudgeModels, shots: tuple[tuple[int, int], ...]
) -> Iterator[FramePair]:
    import av

    shot_of = np.zeros(context.frames, dtype=np.int32)
    for i, (start, end) in enumerate(shots):
        shot_of[start:end] = i
    with av.open(str(context.source)) as source, av.open(str(context.output)) as output:
        source_frames = source.decode(source.streams.video[0])
        output_frames = output.decode(output.streams.video[0])
        for index, (a, b) in enumerate(zip(source_frames, output_frames, strict=False)):
            if index >= context.frames:
                break
            image_a = a.to_ndarray(format="bgr24")
            image_b = b.to_ndarray(format="bgr24")
            yield FramePair(
                index=index,
                time_s=index / context.fps,
                shot=int(shot_of[index]),
                source=image_a,
                output=image_b,
                source_faces=_detect(models, image_a),
                output_faces=_detect(models, image_b),
            )


def _detect(models: JudgeModels, image: np.ndarray) -> tuple[Face, ...]:
    import cv2

    height, width = image.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(height, width))
    if scale >= 1.0:
        return models.detect(image)
    size = (round(width * scale), round(height * scale))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    faces = []
    for face in models.detect(small):
        row = face.row.copy()
        row[:14] /= scale
        faces.append(Face(row))
    return tuple(faces)


def _evenly(frames: int, count: int) -> frozenset[int]:
    if frames <= count:
        return frozenset(range(frames))
    return frozenset(round(i) for i in np.linspace(0, frames - 1, count))


def _random_pairs(frames: int, count: int, seed: int) -> tuple[int, ...]:
    rng = np.random.default_rng(seed)
    chosen = rng.choice(frames, size=min(count, frames), replace=False)
    return tuple(sorted(int(i) for i in chosen))


def _shots(cuts: tuple[int, ...], frames: int) -> tuple[tuple[int, int], ...]:
    bounds = [0, *sorted(c for c in cuts if 0 < c < frames), frames]
    return tuple((a, b) for a, b in itertools.pairwise(bounds) if b > a)


def _audio(source: MediaInfo, output: MediaInfo, references: tuple[Path, ...]) -> EvalAudio:
    from farm.voice.signal import read_wav_mono

    refs = []
    for path in references:
        samples, rate = read_wav_mono(path)
        refs.append(_to_eval_rate(samples, rate))
    return EvalAudio(source=_track(source), output=_track(output), reference_voices=tuple(refs))


def _track(media: MediaInfo) -> np.ndarray | None:
    from farm.media.audio import decode_audio
    from farm.voice.signal import speech_mixdown

    info, path = media.audio, media.path
    if info is None or info.sample_count == 0:
        return None
    mono = _to_eval_rate(speech_mixdown(decode_audio(path, info)), info.sample_rate)
    # Judges read sample k as time k / rate from the first video frame: an audio stream that
    # starts later (ffmpeg -itsoffset moves timestamps only) is placed where it plays.
    lead = round(_audio_lead_s(path) * EVAL_SAMPLE_RATE)
    if lead > 0:
        return np.concatenate([np.zeros(lead, dtype=np.float32), mono])
    return mono[-lead:] if lead < 0 else mono


def _audio_lead_s(path: Path) -> float:
    """How much later than the first video frame the first audio sample plays, in seconds."""
    import av

    with av.open(str(path)) as container:
        starts = []
        for stream in (container.streams.video[0], container.streams.audio[0]):
            if stream.start_time is None or stream.time_base is None:
                return 0.0
            starts.append(float(stream.start_time * stream.time_base))
    return starts[1] - starts[0]


def _to_eval_rate(samples: np.ndarray, rate: int) -> np.ndarray:
    from farm.voice.signal import resample

    mono = np.asarray(samples, dtype=np.float32).reshape(-1)
    return np.asarray(resample(mono, rate, EVAL_SAMPLE_RATE), dtype=np.float32)


def _transcript_text(path: Path) -> str:
    from farm.voice.transcript import read_transcript

    transcript = read_transcript(path)
    lines = [cue.text for cue in transcript.cues] if transcript.timed else list(transcript.lines)
    return " ".join(" ".join(lines).split())


def _provenance(output: Path, trust: TrustList) -> ProvenanceCheck:
    from farm.provenance.verify import verify_file

    found = verify_file(output, trust)
    return ProvenanceCheck(
        verdict=found.verdict.value,
        explanation=found.explanation,
        video_watermark=None if found.video is None else found.video.found,
        audio_watermark=None if found.audio is None else found.audio.found,
        c2pa=found.manifest.state,
        job_id=found.job_id,
        consent_id=found.manifest.consent_id,
    )
