"""Planning a job: consent, probe, scene cuts, shard plan and ledger, all before any work.

`prepare_job` raises on bad input before a single frame is rendered. Its `JobPlan` is a plain,
picklable description (no open files, no keys): the job actor holds it and the reducer actor
receives it. The `Ledger` it returns stays with whoever runs the job (its single writer).
"""

from __future__ import annotations

import hashlib
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from farm.errors import SpecError
from farm.face.stack_choice import FaceStackChoice, resolve_face_stack
from farm.fsutil import sha256_file
from farm.media.codecs import final_encoder, joins_by_copy, shard_encoder
from farm.media.commands import CONTAINER_FORMATS, mux_capabilities
from farm.media.ffmpeg import select_ffmpeg
from farm.media.probe import MediaInfo, probe
from farm.media.video_io import EncoderSettings, count_packets
from farm.plan.ledger import Ledger
from farm.plan.scenes import SceneCuts, detect_cuts
from farm.plan.shards import Shard, plan_shards
from farm.provenance.consent import ConsentRecord, check_consent
from farm.provenance.keys import Operator, load_operator
from farm.provenance.payload import watermark_payload
from farm.provenance.settings import ProvenanceSettings
from farm.render import ShardTask, shard_output_path
from farm.spec import JobSpec


@dataclass(frozen=True)
class JobPlan:
    """Everything decided before the first unit runs; picklable, sent to the reducer."""

    spec: JobSpec
    """The validated spec with `provenance` filled in (the watermark payload)."""
    info: MediaInfo
    job_id: str
    job_key: str
    input_sha256: str
    work_dir: Path
    keep_work_dir: bool
    cuts: SceneCuts
    shards: tuple[Shard, ...]
    shard_encoder: EncoderSettings
    final_encoder: EncoderSettings
    copy_join: bool
    ffmpeg: str
    """The ffmpeg binary for the mux, chosen by what this job needs of it."""
    ffmpeg_version: str
    operator_key_id: str
    consent_id: str
    identity_name: str
    face_choice: FaceStackChoice | None = None
    """The face stack ``auto`` resolved to (None for passthrough)."""
    warnings: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def payload(self) -> bytes:
        """The 8-byte watermark payload (job id and operator key)."""
        if self.spec.provenance is None:
            raise SpecError("the job has no watermark payload; it was not prepared by prepare_job")
        return bytes.fromhex(self.spec.provenance.payload_hex)


def default_work_dir(output: Path) -> Path:
    return output.parent / f".{output.name}.farm-work"


def report_path(output: Path) -> Path:
    """``OUT.mp4.report.json``: the extension stays, so OUT.mp4 and OUT.mov never share one."""
    return output.with_name(f"{output.name}.report.json")


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


def job_key_of(spec: JobSpec, input_sha256: str) -> str:
    """The job's identity: what it renders (spec content) from which bytes (input hash)."""
    return hashlib.sha256(f"{spec.content_hash()}:{input_sha256}".encode()).hexdigest()


def prepare_job(spec: JobSpec, *, operator: Operator | None = None) -> tuple[JobPlan, Ledger]:
    """Check consent, probe, plan and write (or reload) the ledger; raise on bad input."""
    t0 = time.perf_counter()
    check_output_writable(spec.output)
    # Consent and the operator's keys are checked before anything else runs.
    operator = operator or load_operator()
    consent_id, identity_name = "none", ""
    face_choice: FaceStackChoice | None = None
    if spec.face is not None:
        record = identity_consent(spec, operator)
        consent_id, identity_name = record.consent_id, record.subject
        # Resolved before the job's identity: the key covers the models that render it.
        face_choice = resolve_face_stack(spec.face, spec.models_dir)
        spec = spec.model_copy(update={"face": face_choice.settings})
    info = probe(spec.input)
    if info.path.resolve() == spec.output.resolve():
        raise SpecError("output must not overwrite the input; choose another output path")
    # Chosen by what this job's mux needs (Debian 12's ffmpeg 5.1 cannot restore a rotation).
    ffmpeg = select_ffmpeg(
        mux_capabilities(
            rotation=info.video.rotation,
            audio_codec="aac" if info.audio is not None else None,
            container=CONTAINER_FORMATS[spec.output.suffix.lower()],
        )
    )
    t_probe = time.perf_counter() - t0

    input_sha = sha256_file(spec.input)
    job_key = job_key_of(spec, input_sha)
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
        spec.video.encoder_threads,
    )
    final_enc = final_encoder(
        spec.video.codec, spec.video.crf, spec.video.preset, video, spec.video.final_threads
    )
    warnings = dropped_stream_warnings(info, strict=spec.strict)
    if shard_enc.pix_fmt.replace("yuvj", "yuv") != video.pix_fmt.replace("yuvj", "yuv"):
        warnings.append(
            f"source pixel format {video.pix_fmt} is encoded as {shard_enc.pix_fmt} "
            f"({video.width}x{video.height} kept exactly)"
        )

    t1 = time.perf_counter()
    if spec.work_dir is None:
        # The default work dir is ours to manage: a different job to the same output (or a
        # damaged ledger) must not block this one.
        stale = _stale_default_work_dir(work_dir, job_key)
        if stale:
            shutil.rmtree(work_dir, ignore_errors=True)
            warnings.append(stale)
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
            # Fault injection is a drill for one run: a resume runs without it.
            spec=spec.model_dump(mode="json", exclude={"provenance", "chaos"}),
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
        shards=tuple(shards),
        shard_encoder=shard_enc,
        final_encoder=final_enc,
        copy_join=joins_by_copy(spec.video.intermediate, spec.video.codec),
        ffmpeg=ffmpeg.path,
        ffmpeg_version=ffmpeg.version,
        operator_key_id=operator.key_id,
        consent_id=consent_id,
        identity_name=identity_name,
        face_choice=face_choice,
        warnings=tuple(warnings),
        timings={"probe_s": t_probe, "plan_s": t_plan},
    )
    return plan, ledger


def dropped_stream_warnings(info: MediaInfo, *, strict: bool) -> list[str]:
    """One warning per input stream the output does not carry (an error with ``strict``)."""
    warnings = [f"{info.path.name}: {stream} is not carried to the output" for stream in info.extra]
    if strict and warnings:
        raise SpecError(f"--strict: {warnings[0]}")
    return warnings


def _stale_default_work_dir(work_dir: Path, job_key: str) -> str | None:
    """Why an existing default work dir must go (the warning to show), or None to keep it."""
    if not work_dir.exists():
        return None
    if not Ledger.exists(work_dir):
        return f"removed {work_dir}, left by an earlier run that failed before it planned"
    try:
        ledger = Ledger.load(work_dir)
    except SpecError:
        return f"removed {work_dir}: its ledger was damaged"
    if ledger.data.get("job_key") != job_key:
        return (
            f"removed {work_dir}, the unfinished work of a different earlier job to the same output"
        )
    return None


def identity_consent(spec: JobSpec, operator: Operator) -> ConsentRecord:
    """The identity's consent must be signed by a trusted key, current, in scope, and cover
    exactly the reference media the job uses."""
    from farm.face.identity import load_identity

    if spec.face is None:
        raise SpecError("a consent check needs an identity")
    pack = load_identity(spec.face.identity, trust=operator.trust)
    uses_voice = spec.voice.mode != "keep"
    media = [("face", f.source_name, f.source_sha256) for f in pack.manifest.faces]
    if uses_voice:
        media += [("voice", v.source_name, v.sha256) for v in pack.manifest.voices]
    scope = {"face", "voice"} if uses_voice else {"face"}
    return check_consent(pack.consent.path, scope=scope, media_hashes=media, trust=operator.trust)


def pending_shards(plan: JobPlan, ledger: Ledger) -> tuple[list[Shard], list[str]]:
    """(shards still to render, names of finished shards reused).

    A shard recorded as done is reused only while its file still holds the planned number of
    frames; anything else is forgotten and rendered again.
    """
    done = ledger.done_names()
    todo: list[Shard] = []
    reused: list[str] = []
    for shard in plan.shards:
        path = shard_output_path(plan.work_dir, shard)
        if shard.name in done and path.exists():
            try:
                if count_packets(path) == shard.frames:
                    reused.append(shard.name)
                    continue
            except Exception:  # an unreadable leftover is simply rendered again
                pass
        if shard.name in done:
            ledger.forget(shard.name)
        todo.append(shard)
    return todo, reused


def shard_task(plan: JobPlan, shard: Shard, *, decode_threads: int = 1) -> ShardTask:
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
        decode_threads=decode_threads,
    )
