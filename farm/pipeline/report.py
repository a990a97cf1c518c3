"""The typed job report: what every front end (CLI, ``--json``, the HTTP API) shows of a job.

`JobReport` is written beside the output as ``OUT.mp4.report.json``. Its JSON schema is checked in
(``report.schema.json`` here) and tested for drift; regenerate it after a deliberate change with
``python -m farm.pipeline.report --write-schema``.
"""

from __future__ import annotations

import argparse
import json
from fractions import Fraction
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from farm.eval.metrics import EvalReport
from farm.voice.model import VoiceReport

SCHEMA_PATH = Path(__file__).with_name("report.schema.json")
REPORT_VERSION = 4
"""2: timestamps, farm version, effective settings, the ffmpeg binary's version, fps as a ratio.
3: the independent judges' findings (``quality``) and the report page's path."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Rational(_Model):
    """An exact ratio, e.g. 30000/1001 frames per second."""

    num: int
    den: int

    @classmethod
    def of(cls, value: Fraction) -> Rational:
        return cls(num=value.numerator, den=value.denominator)

    def fraction(self) -> Fraction:
        return Fraction(self.num, self.den)


class FfmpegReport(_Model):
    path: str
    version: str


class WorkerReport(_Model):
    """One worker that ran units of this job, and where."""

    slot: str = Field(description="the worker's slot in its pool")
    node_id: str
    pid: int
    device: str = Field(description="'cpu' or 'cuda:<ids>' (the GPU ids the cluster assigned)")
    gpu_ids: list[str] = Field(default_factory=list)
    kind: Literal["video", "voice", "any"] = "any"
    units: int = Field(default=0, description="units of this job it finished")
    model_loads: int = Field(default=0, description="models the worker has loaded in its life")


class AudioReport(_Model):
    codec: str
    sample_rate: int
    channels: int
    samples: int


class SyncReport(_Model):
    """Where the output's streams end, next to where the source's end (they must match)."""

    video_frames: int
    source_video_frames: int
    video_end_s: float
    audio_samples: int | None
    source_audio_samples: int | None
    audio_end_s: float | None
    sentences_cut_at_end: list[int] = Field(
        default_factory=list, description="re-voiced sentences trimmed to end with the audio"
    )
    sentences_out_of_band: list[int] = Field(
        default_factory=list, description="sentences stretched or cut beyond the comfort band"
    )


class ProvenanceReport(_Model):
    watermark_payload: str
    operator_key_id: str
    consent_id: str
    c2pa: Literal["signed"] = "signed"
    audit_seq: int = Field(description="the output's entry in the audit log")


class FaceStackReport(_Model):
    """Which face stack rendered the job, resolved from ``auto`` when it was planned."""

    backend: Literal["classic", "onnx"]
    swapper: str | None = None
    detector: str
    face_parser: str | None = None
    enhancer: str | None = None
    models: list[str] = Field(default_factory=list, description="model files it loaded")
    reason: str = Field(description="why this stack (what auto found)")
    execution: list[str] = Field(
        default_factory=list,
        description="what the workers said: execution providers, fallbacks to the CPU",
    )


class JobReport(_Model):
    """Everything a finished job says about itself."""

    report_version: int = REPORT_VERSION
    farm_version: str
    job_id: str = Field(description="the job's identity: same spec content and input, same id")
    run_id: str = Field(description="this submission (every run of a job has its own)")
    started_at: str = Field(default="", description="UTC, ISO 8601")
    finished_at: str = Field(default="", description="UTC, ISO 8601")
    input: str = Field(description="absolute path")
    output: str = Field(description="absolute path")
    output_sha256: str
    settings: dict[str, Any] = Field(
        default_factory=dict, description="the job's effective settings (its JobSpec)"
    )
    frames: int
    fps: Rational
    vfr: bool
    width: int
    height: int
    shards: int
    shards_reused: list[str]
    sentences_reused: list[int] = Field(default_factory=list)
    scene_cuts: list[int]
    shard_ranges: list[list[int]]
    intermediate: str
    join: Literal["copy", "encode"]
    audio: AudioReport | None
    sync: SyncReport
    stage_seconds: dict[str, float]
    shard_stage_seconds: dict[str, float]
    shard_seconds_total: float
    shard_workers: dict[str, str] = Field(description="shard name -> node it ran on")
    frames_changed: int
    device: str = Field(description="what the video workers ran on: 'cpu' or 'cuda'")
    workers: list[WorkerReport]
    retries: int
    ffmpeg: FfmpegReport
    provenance: ProvenanceReport
    voice: VoiceReport | None
    transcript_srt: str | None = Field(
        default=None, description="subtitles of the re-voiced sentences, beside the output"
    )
    face_stack: FaceStackReport | None = Field(default=None, description="None for passthrough")
    quality: EvalReport | None = Field(
        default=None, description="the independent judges (None with --no-report)"
    )
    quality_report: str | None = Field(default=None, description="OUT.mp4.report.html, absolute")
    warnings: list[str]


def farm_version() -> str:
    try:
        return version("syncfarm")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def report_schema() -> dict[str, object]:
    return JobReport.model_json_schema()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The job report's JSON schema.")
    parser.add_argument("--write-schema", action="store_true", help=f"rewrite {SCHEMA_PATH.name}")
    args = parser.parse_args(argv)
    text = json.dumps(report_schema(), indent=2, sort_keys=True) + "\n"
    if args.write_schema:
        SCHEMA_PATH.write_text(text, encoding="utf-8")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
