"""A job from spec to output, as plain steps that any shell (Ray, a test, a loop) can drive.

prepare_job(spec)            probe, scene cuts, shard plan, ledger (plan written first)
shard_task(plan, shard)      the picklable unit a worker renders with `farm.render`
finish_job(plan, results)    validate shards, join on the source timeline, one PCM
                             timeline, one audio encode, mux, atomic rename, report
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from farm.errors import MediaError, SpecError
from farm.fsutil import commit_file, sha256_file, write_json_atomic
from farm.media.audio import RawAudio, decode_audio, write_raw_pcm
from farm.media.codecs import final_encoder, joins_by_copy, shard_encoder
from farm.media.commands import CONTAINER_FORMATS, mux_argv
from farm.media.ffmpeg import ffmpeg_binary, run_ffmpeg
from farm.media.probe import MediaInfo, probe
from farm.media.video_io import EncoderSettings
from farm.plan.ledger import Ledger
from farm.plan.scenes import SceneCuts, detect_cuts
from farm.plan.shards import Shard, plan_shards
from farm.provenance.audit import AuditLog
from farm.provenance.consent import ConsentRecord, check_consent
from farm.provenance.keys import Operator, farm_home, load_operator
from farm.provenance.manifest import metadata_tags, sign_output
from farm.provenance.payload import watermark_payload
from farm.provenance.settings import ProvenanceSettings
from farm.reduce import join_by_copy, join_by_encode, validate_shards
from farm.render import ShardResult, ShardTask, shard_output_path
from farm.spec import JobSpec

log = logging.getLogger(__name__)


@dataclass
class JobPlan:
    """Everything decided before the first shard runs."""

    spec: JobSpec
    info: MediaInfo
    job_id: str
    job_key: str
    input_sha256: str
    work_dir: Path
    keep_work_dir: bool
    cuts: SceneCuts
    shards: list[Shard]
    shard_encoder: EncoderSettings
    final_encoder: EncoderSettings
    copy_join: bool
    ledger: Ledger
    operator: Operator
    consent_id: str
    identity_name: str
    reused: set[str] = field(default_factory=set)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def default_work_dir(output: Path) -> Path:
    return output.parent / f".{output.name}.farm-work"


def check_output_writable(output: Path) -> None:
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise SpecError(f"output directory {parent} does not exist; create it first")
    try:
        # Try for real: permission bits do not tell root about read-only mounts. A unique name,
        # since jobs of one batch check the same folder at the same time.
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".farm-write-test-"):
            pass
    except OSError as exc:
        raise SpecError(f"output directory {parent} is not writable ({exc.strerror})") from None
    if output.exists() and output.is_dir():
        raise SpecError(f"output {output} is a directory; give a file name ending in .mp4")


def prepare_job(spec: JobSpec, *, worker_threads: int = 1) -> JobPlan:
    """Probe, plan and write (or reload) the ledger. Raises before any work on bad input."""
    t0 = time.perf_counter()
    check_output_writable(spec.output)
    # Consent and the operator's keys are checked before anything else runs.
    operator = load_operator()
    consent_id, identity_name = "none", ""
    if spec.face is not None:
        record = identity_consent(spec, operator)
        consent_id, identity_name = record.consent_id, record.subject
    info = probe(spec.input)
    if info.path.resolve() == spec.output.resolve():
        raise SpecError("output must not overwrite the input; choose another output path")
    t_probe = time.perf_counter() - t0

    input_sha = sha256_file(spec.input)
    job_key = hashlib.sha256(f"{spec.content_hash()}:{input_sha}".encode()).hexdigest()
    job_id = job_key[:12]
    payload = watermark_payload(job_id, operator.key_id)
    spec = spec.model_copy(update={"provenance": ProvenanceSettings(payload_hex=payload.hex())})
    keep = spec.work_dir is not None
    work_dir = (spec.work_dir or default_work_dir(spec.output)).resolve()

    video = info.video
    shard_enc = shard_encoder(
        spec.video.intermediate,
        spec.video.codec,
        spec.video.crf,
        spec.video.preset,
        video,
        worker_threads,
    )
    final_enc = final_encoder(
        spec.video.codec, spec.video.crf, spec.video.preset, video, max(1, os.cpu_count() or 1)
    )
    warnings: list[str] = []
    if shard_enc.pix_fmt.replace("yuvj", "yuv") != video.pix_fmt.replace("yuvj", "yuv"):
        warnings.append(
            f"source pixel format {video.pix_fmt} is encoded as {shard_enc.pix_fmt} "
            f"({video.width}x{video.height} kept exactly)"
        )

    t1 = time.perf_counter()
    if Ledger.exists(work_dir):
        ledger = Ledger.load(work_dir)
        ledger.check_key(job_key)
        shards = ledger.shards()
        cuts = SceneCuts(tuple(ledger.data.get("cuts", [])), ())
    else:
        fps = float(video.fps)
        cuts = detect_cuts(
            spec.input,
            video,
            spec.video.scene_detector,
            min_scene_frames=max(1, math.floor(spec.video.min_shard_s * fps)),
        )
        shards = plan_shards(
            video.frame_count,
            cuts.cuts,
            max_frames=max(1, math.floor(spec.video.max_shard_s * fps)),
            min_frames=max(1, math.floor(spec.video.min_shard_s * fps)),
            overlap=spec.video.overlap_frames,
            scores=cuts.scores,
        )
        ledger = Ledger.create(
            work_dir,
            job_id=job_id,
            job_key=job_key,
            spec=spec.model_dump(mode="json", exclude={"provenance"}),
            shards=shards,
        )
        ledger.data["cuts"] = list(cuts.cuts)
        ledger.save()
    t_plan = time.perf_counter() - t1

    plan = JobPlan(
        spec=spec,
        info=info,
        job_id=job_id,
        job_key=job_key,
        input_sha256=input_sha,
        work_dir=work_dir,
        keep_work_dir=keep,
        cuts=cuts,
        shards=shards,
        shard_encoder=shard_enc,
        final_encoder=final_enc,
        copy_join=joins_by_copy(spec.video.intermediate, spec.video.codec),
        ledger=ledger,
        operator=operator,
        consent_id=consent_id,
        identity_name=identity_name,
        warnings=warnings,
    )
    plan.timings["probe_s"] = t_probe
    plan.timings["plan_s"] = t_plan
    return plan


def identity_consent(spec: JobSpec, operator: Operator) -> ConsentRecord:
    """The identity's consent must be signed by a trusted key, current, in scope, and cover
    exactly the reference media the job uses."""
    from farm.face.identity import load_identity

    if spec.face is None:
        raise SpecError("a consent check needs an identity")
    pack = load_identity(spec.face.identity)
    uses_voice = spec.voice.mode != "keep"
    media = [("face", f.source_name, f.source_sha256) for f in pack.manifest.faces]
    if uses_voice:
        media += [("voice", v.source_name, v.sha256) for v in pack.manifest.voices]
    scope = {"face", "voice"} if uses_voice else {"face"}
    return check_consent(pack.consent.path, scope=scope, media_hashes=media, trust=operator.trust)


def pending_shards(plan: JobPlan) -> list[Shard]:
    """Shards still to render: those not in the ledger, or whose file no longer checks out."""
    from farm.media.video_io import count_packets

    done = plan.ledger.done_names()
    todo: list[Shard] = []
    for shard in plan.shards:
        path = shard_output_path(plan.work_dir, shard)
        if shard.name in done and path.exists():
            try:
                if count_packets(path) == shard.frames:
                    plan.reused.add(shard.name)
                    continue
            except Exception:  # an unreadable leftover is simply rendered again
                pass
        if shard.name in done:
            plan.ledger.forget(shard.name)
        todo.append(shard)
    return todo


def shard_task(plan: JobPlan, shard: Shard) -> ShardTask:
    return ShardTask(
        job_id=plan.job_id,
        source=plan.info.path.resolve(),
        frame_pts=plan.info.video.frame_pts,
        shard=shard,
        fps=plan.info.video.fps,
        color=plan.info.video.color,
        encoder=plan.shard_encoder,
        out_path=shard_output_path(plan.work_dir, shard),
        batch_frames=plan.spec.video.batch_frames,
        decode_threads=plan.shard_encoder.threads,
    )


def record_shard(plan: JobPlan, result: ShardResult) -> None:
    plan.ledger.mark_done(
        result.name,
        {
            "frames": result.frames,
            "path": str(result.path.relative_to(plan.work_dir)),
            "size_bytes": result.size_bytes,
            "seconds": round(result.seconds, 4),
            "stages": result.stages,
        },
    )


def _partial_output_path(output: Path) -> Path:
    return output.with_name(f".{output.stem}.partial{output.suffix}")


def report_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}.report.json")


def build_audio_timeline(plan: JobPlan, timeline: np.ndarray | None = None) -> RawAudio | None:
    """One PCM timeline as long as the source's audio (or the re-voiced one), watermarked,
    written raw; the mux encodes it once."""
    from farm.provenance.audio_watermark import embed_audio_watermark

    audio = plan.info.audio
    if audio is None:
        return None
    pcm = decode_audio(plan.info.path, audio) if timeline is None else timeline
    if pcm.shape != (audio.sample_count, audio.channels):
        raise MediaError(
            f"audio timeline is {pcm.shape}, expected ({audio.sample_count}, {audio.channels})"
        )
    marked = embed_audio_watermark(pcm, audio.sample_rate, payload_of(plan))
    return write_raw_pcm(marked, plan.work_dir / "audio.f32", audio.sample_rate, audio.layout)


def payload_of(plan: JobPlan) -> bytes:
    if plan.spec.provenance is None:
        raise SpecError("the job has no watermark payload; it was not prepared by prepare_job")
    return bytes.fromhex(plan.spec.provenance.payload_hex)


def finish_job(
    plan: JobPlan,
    results: list[ShardResult],
    *,
    audio_timeline: np.ndarray | None = None,
    voice_report: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Validate and join the shards, mux with one audio encode, rename atomically, report."""
    spec = plan.spec
    t0 = time.perf_counter()
    paths = [shard_output_path(plan.work_dir, s) for s in plan.shards]
    validate_shards(plan.shards, paths, plan.shard_encoder)
    t_validate = time.perf_counter() - t0

    t1 = time.perf_counter()
    joined = plan.work_dir / "video.mp4"
    joined_tmp = plan.work_dir / ".video.tmp.mp4"
    if plan.copy_join:
        frames = join_by_copy(plan.shards, paths, plan.info.video, joined_tmp)
    else:
        frames = join_by_encode(plan.shards, paths, plan.info.video, plan.final_encoder, joined_tmp)
    if frames != plan.info.video.frame_count:
        raise MediaError(
            f"joined video has {frames} frames, source has {plan.info.video.frame_count}"
        )
    os.replace(joined_tmp, joined)
    t_join = time.perf_counter() - t1

    t2 = time.perf_counter()
    raw_audio = build_audio_timeline(plan, audio_timeline)
    t_audio = time.perf_counter() - t2

    t3 = time.perf_counter()
    output = spec.output.resolve()
    partial = _partial_output_path(output)
    unsigned = plan.work_dir / f"unsigned{output.suffix}"
    container = CONTAINER_FORMATS[output.suffix.lower()]
    # FLAC in Matroska is lossless and sample-exact at any rate; MP4 and MOV carry AAC.
    audio_codec = "flac" if container == "matroska" else "aac"
    argv = mux_argv(
        ffmpeg_binary(),
        joined,
        raw_audio,
        unsigned,
        container=container,
        audio_codec=audio_codec,
        rotation=plan.info.video.rotation,
        color=plan.info.video.color,
        metadata=metadata_tags(plan.job_id, plan.consent_id, plan.operator.key_id),
    )
    run_ffmpeg(argv)
    t_mux = time.perf_counter() - t3

    t4 = time.perf_counter()
    inputs = {"input": plan.input_sha256}
    try:
        sign_output(
            unsigned,
            partial,
            plan.operator,
            plan.job_id,
            plan.consent_id,
            inputs,
            already_tagged=True,
        )
        commit_file(partial, output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    output_sha = sha256_file(output)
    with AuditLog(farm_home() / "audit.sqlite") as audit:
        audit.append(
            job_id=plan.job_id,
            identity=plan.identity_name,
            consent_id=plan.consent_id,
            operator_key_id=plan.operator.key_id,
            input_sha256=inputs,
            output_sha256={"output": output_sha},
        )
    t_sign = time.perf_counter() - t4

    plan.timings.update(
        {
            "validate_s": t_validate,
            "join_s": t_join,
            "audio_s": t_audio,
            "mux_s": t_mux,
            "sign_s": t_sign,
        }
    )
    render_s = sum(r.seconds for r in results)
    stage_totals: dict[str, float] = {}
    for result in results:
        for key, value in result.stages.items():
            stage_totals[key] = stage_totals.get(key, 0.0) + value
    summary: dict[str, Any] = {
        "job_id": plan.job_id,
        "input": str(plan.info.path),
        "output": str(output),
        "frames": plan.info.video.frame_count,
        "fps": str(plan.info.video.fps),
        "vfr": plan.info.video.is_vfr,
        "width": plan.info.video.width,
        "height": plan.info.video.height,
        "shards": len(plan.shards),
        "shards_reused": sorted(plan.reused),
        "scene_cuts": list(plan.cuts.cuts) or plan.ledger.data.get("cuts", []),
        "shard_ranges": [[s.start, s.stop] for s in plan.shards],
        "intermediate": spec.video.intermediate,
        "join": "copy" if plan.copy_join else "encode",
        "audio": None
        if raw_audio is None
        else {
            "codec": audio_codec,
            "sample_rate": raw_audio.sample_rate,
            "channels": raw_audio.channels,
            "samples": raw_audio.samples,
        },
        "stage_seconds": {k: round(v, 4) for k, v in plan.timings.items()},
        "shard_stage_seconds": {k: round(v, 4) for k, v in stage_totals.items()},
        "shard_seconds_total": round(render_s, 4),
        "shard_workers": {r.name: r.worker for r in results if r.worker},
        "frames_changed": sum(r.frames_changed for r in results),
        "provenance": {
            "watermark_payload": payload_of(plan).hex(),
            "operator_key_id": plan.operator.key_id,
            "consent_id": plan.consent_id,
            "c2pa": "signed",
        },
        "voice": voice_report,
        "warnings": plan.warnings,
    }
    plan.ledger.mark_output({"path": str(output), "sha256": output_sha})
    write_json_atomic(report_path(output), summary)
    if not plan.keep_work_dir:
        shutil.rmtree(plan.work_dir, ignore_errors=True)
    return summary
