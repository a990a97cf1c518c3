"""The frozen job specification: validated once at the edge, passed down unchanged.

A `JobSpec` is everything a job's outcome depends on, plus how to run it (`ClusterSettings`).
Workers receive it by value, so one worker actor can serve two jobs with different settings one
after the other. Change it with ``spec.model_copy(update=...)``, never in place.

The job's identity (`content_hash`, hence its id, ledger key and watermark payload) covers what
changes the output and nothing else: execution settings (workers, GPUs, device, address,
timeouts), the input's, output's and work paths (or object-storage URLs), metrics and fault
injection are left out, so the same job gives the same bytes wherever and however it runs. Every
path is made absolute when the spec is validated, so it means the same in a worker, on resume
from another folder, and in the ledger.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from farm.chaos import ChaosSettings
from farm.errors import SpecError
from farm.face.settings import FaceSettings
from farm.fsutil import AbsolutePath
from farm.objectstore import RemoteLocations, bind_remote
from farm.provenance.settings import ProvenanceSettings
from farm.voice.settings import VoiceSettings

Intermediate = Literal["fast", "lossless"]
VideoCodec = Literal["h264", "hevc"]
DeviceChoice = Literal["auto", "cpu", "cuda", "tensorrt"]


class VideoSettings(BaseModel):
    """How shards are planned and encoded."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    intermediate: Intermediate = Field(
        default="fast",
        description="shard encoding: 'fast' encodes shards once with the final codec and joins "
        "them without re-encoding; 'lossless' writes FFV1 shards and encodes the output once",
    )
    codec: VideoCodec = "h264"
    crf: int = Field(default=18, ge=0, le=51, description="final quality (0 is lossless)")
    preset: str = Field(default="veryfast", description="x264/x265 preset of the final encode")
    max_shard_s: float = Field(default=10.0, gt=0, description="longest shard, in seconds")
    min_shard_s: float = Field(
        default=0.6, ge=0, description="shortest scene kept as its own shard"
    )
    scene_detector: Literal["adaptive", "content"] = "content"
    overlap_frames: int = Field(
        default=4, ge=0, le=64, description="context frames before a forced (non-scene) split"
    )
    batch_frames: int = Field(default=16, ge=1, le=512, description="frames per processor batch")
    encoder_threads: int = Field(
        default=1,
        ge=1,
        le=64,
        description="threads of each shard's encoder; part of the job's identity, because the "
        "x264/x265 bitstream depends on the thread count (never on the machine)",
    )
    final_threads: int = Field(
        default=4,
        ge=1,
        le=64,
        description="threads of the reducer's single final encode (lossless intermediates); "
        "fixed for the same reason",
    )

    @model_validator(mode="after")
    def _shard_lengths(self) -> VideoSettings:
        if self.min_shard_s >= self.max_shard_s:
            raise ValueError(
                f"min_shard_s ({self.min_shard_s}) must be below max_shard_s ({self.max_shard_s})"
            )
        return self


class ClusterSettings(BaseModel):
    """How the job uses the Ray cluster. Resource requests come from here, never from code.

    None of these change a job's output: they are left out of its identity.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str | None = Field(
        default=None, description="join this Ray cluster instead of starting one"
    )
    device: DeviceChoice = Field(
        default="auto",
        description="'auto' uses GPUs where the cluster has them and the job asks for them "
        "(gpus_per_worker) or a backend can use them, CPUs elsewhere; 'cpu' never uses a GPU; "
        "'cuda' needs GPUs and runs video workers only on GPU nodes; 'tensorrt' is 'cuda' with "
        "the TensorRT provider first for the ONNX face models",
    )
    video_workers: int | None = Field(
        default=None, ge=1, description="default: as many as the cluster's resources hold"
    )
    cpus_per_worker: float = Field(default=1.0, gt=0)
    gpus_per_worker: float = Field(
        default=0.0,
        ge=0,
        description="GPUs per video worker on GPU nodes, whole or fractional (0.25: four per "
        "GPU); 0 with device 'cuda' means 1",
    )
    max_inflight_per_worker: int = Field(default=2, ge=1)
    shard_timeout_s: float = Field(
        default=600.0, gt=0, description="a shard taking longer is re-run"
    )
    max_attempts: int = Field(default=3, ge=1, description="tries per shard before the job fails")
    voice_workers: int = Field(default=1, ge=1, description="sentence workers when re-voicing")
    voice_cpus_per_worker: float = Field(default=1.0, gt=0)
    voice_gpus_per_worker: float = Field(
        default=0.0, ge=0, description="GPUs per voice worker (neural voice backends)"
    )
    actor_start_timeout_s: float = Field(
        default=60.0, gt=0, description="a replacement worker not placed by then is dropped"
    )
    connect_timeout_s: float = Field(
        default=30.0, gt=0, description="joining a cluster that does not answer fails after this"
    )
    keep_workers_s: float = Field(
        default=300.0,
        ge=0,
        description="idle workers (and their loaded models) stay this long for the next job",
    )

    @model_validator(mode="after")
    def _device_matches_gpus(self) -> ClusterSettings:
        if self.device == "cpu" and (self.gpus_per_worker > 0 or self.voice_gpus_per_worker > 0):
            raise ValueError(
                "device 'cpu' with GPUs per worker: drop --gpus-per-worker or use --device auto"
            )
        return self


class ReportSettings(BaseModel):
    """The quality report beside the output. None of this changes the output (not in its id)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    judges: bool = Field(
        default=True,
        description="run the independent judges and write OUT.mp4.report.html (farm run "
        "--no-report skips them; the JSON report is always written)",
    )
    pairs: int = Field(default=10, ge=1, le=100, description="random frame pairs in the report")
    samples: int = Field(default=60, ge=3, le=10_000, description="frames measured for the plots")


class JobSpec(BaseModel):
    """One job: an input video, what to do to it, and where the result goes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: AbsolutePath
    output: AbsolutePath
    work_dir: AbsolutePath | None = Field(
        default=None, description="keeps intermediates and the ledger"
    )
    passthrough: bool = False
    face: FaceSettings | None = None
    voice: VoiceSettings = VoiceSettings()
    video: VideoSettings = VideoSettings()
    cluster: ClusterSettings = ClusterSettings()
    models_dir: AbsolutePath | None = None
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    report: ReportSettings = ReportSettings()
    chaos: ChaosSettings | None = Field(default=None, description="fault injection (tests only)")
    strict: bool = Field(
        default=False,
        description="warnings that mean the double did not happen (no frame swapped, the "
        "reference person never found, streams dropped) fail the job instead",
    )
    provenance: ProvenanceSettings | None = Field(
        default=None, description="filled by the job from its id and the operator key"
    )
    remote: RemoteLocations | None = Field(
        default=None,
        description="the object-storage URLs (s3://...) given for input, output or work_dir; "
        "those fields then hold their local stand-ins on this node (farm.objectstore)",
    )

    @model_validator(mode="before")
    @classmethod
    def _object_storage(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        try:
            return bind_remote(data)
        except SpecError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _something_to_do(self) -> JobSpec:
        if self.passthrough and self.face is not None:
            raise ValueError("passthrough and an identity exclude each other; drop one of them")
        if not self.passthrough and self.face is None:
            raise ValueError("give --identity DIR to swap faces, or --passthrough to copy frames")
        if self.voice.mode != "keep" and self.face is None:
            raise ValueError(
                f"voice mode {self.voice.mode!r} speaks in an identity's voice: give --identity DIR"
            )
        if self.output.suffix.lower() not in {".mp4", ".mov"}:
            # Every output carries a C2PA manifest, which MP4 and QuickTime files can hold.
            raise ValueError(f"output must end in .mp4 or .mov, not {self.output.name!r}")
        return self

    def processor_chain(self) -> list[str]:
        """Frame processors in the order a shard runs them."""
        if self.face is None:
            chain = ["identity"]
        else:
            # 'auto' is resolved when the job is planned (farm.face.stack_choice); a spec that
            # was not planned yet renders classically.
            chain = ["onnx-swap"] if self.face.backend == "onnx" else ["classic-swap"]
        if self.provenance is not None:
            chain.append("watermark")  # always last: it marks exactly what goes out
        return chain

    def worker_key(self) -> str:
        """What a worker's processors depend on: the content plus the watermark payload."""
        payload = self.provenance.payload_hex if self.provenance else ""
        return f"{self.content_hash()}:{payload}"

    def content_hash(self) -> str:
        """A short hash of everything that changes the rendered frames (keys the ledger)."""
        relevant = self.model_dump(
            mode="json",
            exclude={
                # The input is its bytes (the job key holds their sha256), not where they lie:
                # the same clip on a local disk or at s3:// is the same job.
                "input",
                "remote",
                "output",
                "work_dir",
                "metrics_port",
                "cluster",
                "chaos",
                "provenance",
                "strict",
                "report",
            },
        )
        blob = json.dumps(relevant, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def validation_message(error: Any, names: Mapping[str, str] | None = None) -> str:
    """One pydantic error in a user's words: the setting by the name they typed (``names`` maps
    dotted setting paths to flags) and the rule, without pydantic's phrasing."""
    names = names or {}
    # A list item's index is not part of the setting's name (--judge, not settings.judges.0).
    path = ".".join(str(p) for p in error["loc"] if not isinstance(p, int))
    kind, ctx = error["type"], error.get("ctx") or {}
    rules = {
        "greater_than": lambda: f"must be > {ctx.get('gt')}",
        "greater_than_equal": lambda: f"must be >= {ctx.get('ge')}",
        "less_than": lambda: f"must be < {ctx.get('lt')}",
        "less_than_equal": lambda: f"must be <= {ctx.get('le')}",
        "literal_error": lambda: f"must be {ctx.get('expected')}",
        "missing": lambda: "is required",
        "extra_forbidden": lambda: "is not a setting SyncFarm knows",
        "string_too_short": lambda: "must not be empty",
        "int_parsing": lambda: "must be a whole number",
        "int_from_float": lambda: "must be a whole number",
        "float_parsing": lambda: "must be a number",
        "bool_parsing": lambda: "must be true or false",
        "string_pattern_mismatch": lambda: f"must match {ctx.get('pattern')}",
    }
    text = rules[kind]() if kind in rules else str(error["msg"]).removeprefix("Value error, ")
    for setting, flag in names.items():  # validators name settings (max_shard_s) in messages
        leaf = setting.rsplit(".", 1)[-1]
        if "_" in leaf:
            text = re.sub(rf"\b{re.escape(leaf)}\b", flag, text)
    if not error["loc"] or (kind == "value_error" and not names.get(path)):
        return text
    return f"{names.get(path, path)} {text}"


def parse_spec(data: dict[str, object], *, names: Mapping[str, str] | None = None) -> JobSpec:
    """Validate a job description; raise `SpecError` naming the setting and the rule.

    ``names`` maps dotted setting paths to the flags a front end offers for them (the CLI's
    ``--max-shard-seconds`` for ``video.max_shard_s``), so the message names what the user typed.
    """
    return parse_model(JobSpec, data, names=names)


ModelT = TypeVar("ModelT", bound=BaseModel)


def parse_model(
    model: type[ModelT], data: dict[str, object], *, names: Mapping[str, str] | None = None
) -> ModelT:
    """Validate ``data`` as ``model`` at a front end; `SpecError` in the user's words."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SpecError(validation_message(exc.errors()[0], names)) from None
