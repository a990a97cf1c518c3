"""The frozen job specification: validated once at the edge, passed down unchanged.

A `JobSpec` is everything a job's outcome depends on. Workers receive it by value, so one worker
actor can serve two jobs with different settings one after the other. Change it with
``spec.model_copy(update=...)``, never in place.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from farm.chaos import ChaosSettings
from farm.errors import SpecError
from farm.face.settings import FaceSettings
from farm.provenance.settings import ProvenanceSettings
from farm.voice.settings import VoiceSettings

Intermediate = Literal["fast", "lossless"]
VideoCodec = Literal["h264", "hevc"]


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

    @model_validator(mode="after")
    def _shard_lengths(self) -> VideoSettings:
        if self.min_shard_s >= self.max_shard_s:
            raise ValueError(
                f"min_shard_s ({self.min_shard_s}) must be below max_shard_s ({self.max_shard_s})"
            )
        return self


class ClusterSettings(BaseModel):
    """How the job uses the Ray cluster. Resource requests come from here, never from code."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str | None = Field(
        default=None, description="join this Ray cluster instead of starting one"
    )
    video_workers: int | None = Field(default=None, ge=1, description="default: one per CPU")
    cpus_per_worker: float = Field(default=1.0, gt=0)
    gpus_per_worker: float = Field(default=0.0, ge=0, description="whole or fractional GPUs")
    max_inflight_per_worker: int = Field(default=2, ge=1)
    shard_timeout_s: float = Field(
        default=600.0, gt=0, description="a shard taking longer is re-run"
    )
    max_attempts: int = Field(default=3, ge=1, description="tries per shard before the job fails")
    voice_workers: int = Field(default=1, ge=1, description="sentence workers when re-voicing")
    actor_start_timeout_s: float = Field(
        default=60.0, gt=0, description="a replacement worker not placed by then is dropped"
    )


class JobSpec(BaseModel):
    """One job: an input video, what to do to it, and where the result goes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: Path
    output: Path
    work_dir: Path | None = Field(default=None, description="keeps intermediates and the ledger")
    passthrough: bool = False
    face: FaceSettings | None = None
    voice: VoiceSettings = VoiceSettings()
    video: VideoSettings = VideoSettings()
    cluster: ClusterSettings = ClusterSettings()
    models_dir: Path | None = None
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    chaos: ChaosSettings | None = Field(default=None, description="fault injection (tests only)")
    provenance: ProvenanceSettings | None = Field(
        default=None, description="filled by the job from its id and the operator key"
    )

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
        chain = ["identity"] if self.face is None else ["classic-swap"]
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
            exclude={"output", "work_dir", "metrics_port", "cluster", "chaos", "provenance"},
        )
        blob = json.dumps(relevant, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def parse_spec(data: dict[str, object]) -> JobSpec:
    """Validate a job description; raise `SpecError` naming the field and the problem."""
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "job"
        raise SpecError(f"invalid job setting {field}: {first['msg']}") from None
