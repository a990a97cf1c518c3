"""The reducer step: from finished units to one labelled, signed output file.

    validate every shard (codec, size, pixel format, headers, frame count)
    -> join video on the source's own timeline (packet copy, or one encode of lossless shards)
    -> one PCM timeline: the source audio, or every voiced sentence at its exact start sample
    -> reconcile: picture and sound end exactly where the source's streams end
    -> audio watermark -> one mux (one audio encode, rotation, colour tags, provenance tags)
    -> C2PA signing into a hidden partial file -> audit entry -> atomic rename -> report

Nothing appears at the output path until the last step; the audit entry exists before it does.
The step runs wherever the work directory is reachable (the reducer actor, or in-process), and
loads the operator's keys there: private keys never travel.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from farm.errors import Cancelled, MediaError
from farm.fsutil import commit_file, sha256_file
from farm.media.audio import RawAudio, decode_audio, write_raw_pcm
from farm.media.commands import CONTAINER_FORMATS, mux_argv
from farm.media.ffmpeg import run_ffmpeg
from farm.media.join import join_by_copy, join_by_encode, validate_shards
from farm.pipeline.plan import JobPlan
from farm.pipeline.remote import fetch_unit_files
from farm.pipeline.report import (
    AudioReport,
    FaceStackReport,
    FfmpegReport,
    JobReport,
    ProvenanceReport,
    Rational,
    SyncReport,
    WorkerReport,
    farm_version,
)
from farm.pipeline.voice import SentenceResult, VoiceUnits, assemble_voice
from farm.provenance.audit import AuditLog
from farm.provenance.keys import farm_home, load_operator
from farm.provenance.manifest import metadata_tags, sign_output
from farm.render import ShardResult, shard_output_path
from farm.voice.model import VoiceReport


@dataclass(frozen=True)
class ReduceRequest:
    """Everything the reducer needs; picklable (paths and metadata, never frames)."""

    plan: JobPlan
    run_id: str
    shards: tuple[ShardResult, ...]
    """One result per planned shard (rendered now or reused from the ledger)."""
    reused_shards: tuple[str, ...] = ()
    voice: VoiceUnits | None = None
    sentences: tuple[SentenceResult, ...] = ()
    reused_sentences: tuple[int, ...] = ()
    workers: tuple[WorkerReport, ...] = ()
    retries: int = 0
    device: str = "cpu"
    timings: dict[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    """Found while the units ran (the swap changed no frame, ...)."""


def partial_output_path(output: Path) -> Path:
    """Where the signed file is written before its atomic rename to ``output``."""
    return output.with_name(f".{output.stem}.partial{output.suffix}")


def _audio_timeline(
    request: ReduceRequest,
) -> tuple[np.ndarray | None, VoiceReport | None, list[str]]:
    """The output's PCM (as long as the source's audio stream), its voice report, warnings."""
    plan = request.plan
    audio = plan.info.audio
    voice = request.voice
    if voice is None or voice.skipped is not None:
        warnings = [voice.skipped] if voice is not None and voice.skipped else []
        report = None
        if voice is not None and voice.skipped:
            settings = plan.spec.voice
            report = VoiceReport(
                mode=settings.mode,
                backend=settings.backend_name(),
                sample_rate=voice.sample_rate,
                channels=voice.channels,
                total_samples=voice.total_samples,
                warnings=(voice.skipped,),
                skipped=True,
            )
        pcm = None if audio is None else decode_audio(plan.info.path, audio)
        return pcm, report, warnings
    timeline, report = assemble_voice(voice, plan.spec.voice, request.sentences)
    return timeline, report, []


def _sync_report(
    request: ReduceRequest, frames: int, raw: RawAudio | None, voice: VoiceReport | None
) -> SyncReport:
    """Check that both streams end where the source's end; say which sentences were fitted."""
    info = request.plan.info
    video = info.video
    if frames != video.frame_count:
        raise MediaError(f"joined video has {frames} frames, source has {video.frame_count}")
    source_samples = info.audio.sample_count if info.audio is not None else None
    samples = raw.samples if raw is not None else None
    if samples != source_samples:
        raise MediaError(
            f"the audio timeline has {samples} samples, the source's audio stream "
            f"{source_samples}; the output would drift"
        )
    sentences = voice.sentences if voice is not None else ()
    return SyncReport(
        video_frames=frames,
        source_video_frames=video.frame_count,
        video_end_s=float(video.frame_end_pts() * video.time_base),
        audio_samples=samples,
        source_audio_samples=source_samples,
        audio_end_s=(samples / raw.sample_rate) if raw is not None and samples else None,
        sentences_cut_at_end=[
            s.index for s in sentences if any("end of the video" in n for n in s.notes)
        ],
        sentences_out_of_band=[s.index for s in sentences if not s.in_band],
    )


def reduce_job(
    request: ReduceRequest, *, should_stop: Callable[[], bool] | None = None
) -> JobReport:
    """Validate, join, build the audio, mux, sign, audit and commit; return the report.

    ``should_stop`` is asked before each step and last before the rename: a cancelled job
    raises `Cancelled` with nothing at the output path.
    """

    def check_stop() -> None:
        if should_stop is not None and should_stop():
            raise Cancelled("the job was cancelled while reducing")

    plan = request.plan
    spec = plan.spec
    timings: dict[str, float] = {}
    operator = load_operator()
    if operator.key_id != plan.operator_key_id:
        raise MediaError(
            f"the reducer's operator key is {operator.key_id}, the job was planned with "
            f"{plan.operator_key_id}; every node must carry the same FARM_OPERATOR_KEY"
        )
    t0 = time.perf_counter()
    # Object storage: shards and sentences rendered on other nodes come from the work dir URL.
    fetch_unit_files(spec, plan.work_dir, request.shards, request.sentences)
    paths = [shard_output_path(plan.work_dir, s) for s in plan.shards]
    validate_shards(plan.shards, paths, plan.shard_encoder)
    timings["validate_s"] = time.perf_counter() - t0

    check_stop()
    t0 = time.perf_counter()
    joined = plan.work_dir / "video.mp4"
    joined_tmp = plan.work_dir / ".video.tmp.mp4"
    if plan.copy_join:
        frames = join_by_copy(plan.shards, paths, plan.info.video, joined_tmp)
    else:
        frames = join_by_encode(plan.shards, paths, plan.info.video, plan.final_encoder, joined_tmp)
    os.replace(joined_tmp, joined)
    timings["join_s"] = time.perf_counter() - t0

    check_stop()
    t0 = time.perf_counter()
    from farm.provenance.audio_watermark import embed_audio_watermark

    pcm, voice_report, warnings = _audio_timeline(request)
    raw = None
    audio = plan.info.audio
    if pcm is not None and audio is not None:
        if pcm.shape != (audio.sample_count, audio.channels):
            raise MediaError(
                f"audio timeline is {pcm.shape}, expected ({audio.sample_count}, {audio.channels})"
            )
        marked = embed_audio_watermark(pcm, audio.sample_rate, plan.payload)
        raw = write_raw_pcm(marked, plan.work_dir / "audio.f32", audio.sample_rate, audio.layout)
    sync = _sync_report(request, frames, raw, voice_report)
    timings["audio_s"] = time.perf_counter() - t0

    check_stop()
    t0 = time.perf_counter()
    output = spec.output.resolve()
    partial = partial_output_path(output)
    unsigned = plan.work_dir / f"unsigned{output.suffix}"
    container = CONTAINER_FORMATS[output.suffix.lower()]
    audio_codec = "aac"  # MP4 and MOV carry AAC; FLAC in MP4 is not widely played
    argv = mux_argv(
        plan.ffmpeg,
        joined,
        raw,
        unsigned,
        container=container,
        audio_codec=audio_codec,
        rotation=plan.info.video.rotation,
        color=plan.info.video.color,
        metadata=metadata_tags(plan.job_id, plan.consent_id, operator.key_id),
    )
    run_ffmpeg(argv)
    timings["mux_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    inputs = {"input": plan.input_sha256}
    staged_srt = _stage_transcript(voice_report, plan.work_dir)
    srt: Path | None = None
    try:
        sign_output(
            unsigned, partial, operator, plan.job_id, plan.consent_id, inputs, already_tagged=True
        )
        output_sha = sha256_file(partial)
        check_stop()
        # Recorded before the file appears: no labelled output exists without its audit entry.
        with AuditLog(farm_home() / "audit.sqlite") as audit:
            entry = audit.append(
                job_id=plan.job_id,
                run_id=request.run_id,
                identity=plan.identity_name,
                consent_id=plan.consent_id,
                operator_key_id=operator.key_id,
                input_sha256=inputs,
                output_sha256={"output": output_sha},
            )
        # The subtitles of what the output says, at the sentences' placed times; committed
        # just before the video, so a finished output always has its transcript beside it.
        if staged_srt is not None:
            srt = transcript_path(output)
            commit_file(staged_srt, srt)
        commit_file(partial, output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    timings["sign_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    from farm.eval.job import judge_output

    quality = judge_output(spec, scene_cuts=plan.cuts.cuts, voice=voice_report)
    if spec.report.judges:
        timings["judge_s"] = time.perf_counter() - t0

    stage_totals: dict[str, float] = {}
    for result in request.shards:
        for key, value in result.stages.items():
            stage_totals[key] = stage_totals.get(key, 0.0) + value
    stage_seconds = {**plan.timings, **request.timings, **timings}
    return JobReport(
        farm_version=farm_version(),
        job_id=plan.job_id,
        run_id=request.run_id,
        input=str(plan.info.path),
        output=str(output),
        output_sha256=output_sha,
        settings=spec.model_dump(mode="json", exclude={"provenance", "chaos"}),
        frames=plan.info.video.frame_count,
        fps=Rational.of(plan.info.video.fps),
        vfr=plan.info.video.is_vfr,
        width=plan.info.video.width,
        height=plan.info.video.height,
        shards=len(plan.shards),
        shards_reused=sorted(request.reused_shards),
        sentences_reused=sorted(request.reused_sentences),
        scene_cuts=list(plan.cuts.cuts),
        shard_ranges=[[s.start, s.stop] for s in plan.shards],
        intermediate=spec.video.intermediate,
        join="copy" if plan.copy_join else "encode",
        audio=None
        if raw is None
        else AudioReport(
            codec=audio_codec,
            sample_rate=raw.sample_rate,
            channels=raw.channels,
            samples=raw.samples,
        ),
        sync=sync,
        stage_seconds={k: round(v, 4) for k, v in stage_seconds.items()},
        shard_stage_seconds={k: round(v, 4) for k, v in stage_totals.items()},
        shard_seconds_total=round(sum(r.seconds for r in request.shards), 4),
        shard_workers={r.name: r.worker for r in request.shards if r.worker},
        frames_changed=sum(r.frames_changed for r in request.shards),
        device=request.device,
        workers=list(request.workers),
        retries=request.retries,
        ffmpeg=FfmpegReport(path=plan.ffmpeg, version=plan.ffmpeg_version),
        provenance=ProvenanceReport(
            watermark_payload=plan.payload.hex(),
            operator_key_id=operator.key_id,
            consent_id=plan.consent_id,
            audit_seq=entry.seq,
        ),
        voice=voice_report,
        transcript_srt=None if srt is None else str(srt),
        face_stack=face_stack_report(plan, request.shards),
        quality=quality.report,
        quality_report=None if quality.html is None else str(quality.html),
        warnings=[*plan.warnings, *request.warnings, *warnings, *quality.warnings],
    )


def transcript_path(output: Path) -> Path:
    """Where a re-voiced output's subtitles go: beside it, ``NAME.srt``."""
    return output.with_suffix(".srt")


def _stage_transcript(voice: VoiceReport | None, work_dir: Path) -> Path | None:
    """The re-voiced sentences' text as SRT in the work dir (None when no sentence has text)."""
    if voice is None:
        return None
    cues = [(s.start_s, s.end_s, s.text or "") for s in voice.sentences if (s.text or "").strip()]
    if not cues:
        return None
    from farm.voice.transcript import write_srt

    return write_srt(cues, work_dir / "transcript.srt")


def face_stack_report(plan: JobPlan, shards: Sequence[ShardResult]) -> FaceStackReport | None:
    """The resolved face stack, with what the workers said about how its models ran."""
    choice = plan.face_choice
    if choice is None:
        return None
    settings = choice.settings
    execution: list[str] = []
    for result in shards:
        execution += [note for note in result.notes if note not in execution]
    return FaceStackReport(
        backend="onnx" if settings.backend == "onnx" else "classic",
        swapper=settings.swapper,
        detector=settings.detector,
        face_parser=settings.face_parser,
        enhancer=settings.enhancer,
        models=list(choice.models),
        reason=choice.reason,
        execution=execution,
    )
