"""Job metrics, counted from jobs' events with prometheus-client (no module-level state).

`FarmMetrics.record` turns the events of a job (see `farm.pipeline.progress` for the vocabulary)
into counters, gauges and histograms named ``farm_*``, in a registry of its own. Two processes
serve them:

* the one that follows a job from a terminal (``farm run --metrics-port``);
* on a cluster, the metrics exporter actor (``actors.metrics``): one long-lived process on the
  head node that every job actor sends its events to, whoever submitted the job (CLI, batch, the
  HTTP API). One process, so counters run on across jobs; Ray's own ``ray.util.metrics`` would
  give each job actor series of its own that start at their final value, which ``increase()``
  never sees.

The ``job_id`` label is the job's id (stable across runs and resumes), set once the job is
planned; not ``job``, which Prometheus gives every target (a metric's own ``job`` would be
renamed ``exported_job``). Live gauges (state, queue depth, in-flight units, the oldest unit's
age) go back to 0 when the job ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

SHARD_SECONDS_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
JOB_SECONDS_BUCKETS = (5, 10, 30, 60, 120, 300, 600, 1800, 3600)
STRETCH_RATIO_BUCKETS = (0.5, 0.75, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.25, 1.5, 2.0)
END_DRIFT_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.1, 0.5, 1.0)
SIMILARITY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
STAGES = ("video", "voice")
OUTCOMES = ("succeeded", "failed", "cancelled")


@dataclass
class _RunState:
    job_id: str = ""
    state: str = ""


def end_drift_s(report: Mapping[str, Any]) -> float | None:
    """How far the output's streams end from where the source's end, in seconds (0 when exact).

    The reducer refuses an output whose audio would drift, so anything but 0 is a regression."""
    sync = report.get("sync") or {}
    fps = report.get("fps") or {}
    if not sync or not fps.get("num"):
        return None
    drift = abs(int(sync["video_frames"]) - int(sync["source_video_frames"])) * (
        float(fps["den"]) / float(fps["num"])
    )
    audio = report.get("audio") or {}
    if sync.get("audio_samples") is not None and sync.get("source_audio_samples") is not None:
        rate = float(audio.get("sample_rate") or 0)
        if rate > 0:
            drift += abs(int(sync["audio_samples"]) - int(sync["source_audio_samples"])) / rate
    return drift


class FarmMetrics:
    """The instruments, and how each job's events move them."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.jobs = Counter("farm_jobs", "Jobs by outcome", ["status"], registry=r)
        for outcome in OUTCOMES:  # from 0, so increase() sees the first failure too
            self.jobs.labels(outcome)
        self.job_seconds = Histogram(
            "farm_job_seconds", "Wall time of whole jobs", buckets=JOB_SECONDS_BUCKETS, registry=r
        )
        self.job_state = Gauge(
            "farm_job_state",
            "1 while the job is in this state (planning, running, reducing)",
            ["job_id", "state"],
            registry=r,
        )
        self.frames = Counter(
            "farm_frames", "Frames rendered into finished shards", ["job_id", "stage"], registry=r
        )
        self.shards = Counter(
            "farm_shards", "Shards by final status", ["job_id", "status"], registry=r
        )
        self.shard_seconds = Histogram(
            "farm_shard_seconds",
            "Wall time to render one unit (a shard, a sentence)",
            ["job_id", "stage"],
            buckets=SHARD_SECONDS_BUCKETS,
            registry=r,
        )
        self.sentences = Counter(
            "farm_sentences",
            "Sentences re-voiced, inside or outside the stretch band",
            ["job_id", "band"],
            registry=r,
        )
        self.stretch_ratio = Histogram(
            "farm_sentence_stretch_ratio",
            "Time-stretch applied to fit a sentence to its slot",
            ["job_id"],
            buckets=STRETCH_RATIO_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "farm_retries",
            "Units submitted again after a failure",
            ["job_id", "stage", "reason"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "farm_queue_depth", "Units waiting for a worker", ["job_id", "stage"], registry=r
        )
        self.inflight = Gauge(
            "farm_tasks_inflight",
            "Units submitted and not finished",
            ["job_id", "stage"],
            registry=r,
        )
        self.oldest_unit = Gauge(
            "farm_oldest_unit_seconds",
            "Age of the job's oldest unit in flight (0 when none)",
            ["job_id"],
            registry=r,
        )
        self.unit_timeout = Gauge(
            "farm_unit_timeout_seconds",
            "When the job re-runs a unit that has not finished",
            ["job_id"],
            registry=r,
        )
        self.end_drift = Histogram(
            "farm_end_drift_seconds",
            "How far a finished output's streams end from the source's",
            ["job_id"],
            buckets=END_DRIFT_SECONDS_BUCKETS,
            registry=r,
        )
        self.speaker_similarity = Histogram(
            "farm_speaker_similarity",
            "Judge: the output voice's mean d-vector cosine to the identity",
            ["job_id"],
            buckets=SIMILARITY_BUCKETS,
            registry=r,
        )
        self.identity_similarity = Histogram(
            "farm_identity_similarity",
            "Judge: the output faces' mean SFace cosine to the identity",
            ["job_id"],
            buckets=SIMILARITY_BUCKETS,
            registry=r,
        )
        self._runs: dict[str, _RunState] = {}

    def _enter(self, run: _RunState, state: str) -> None:
        if run.state:
            self.job_state.labels(run.job_id, run.state).set(0)
        run.state = state
        if state:
            self.job_state.labels(run.job_id, state).set(1)

    def record(self, event: Mapping[str, Any], run_id: str = "") -> None:
        """Count one event of the run ``run_id`` (a follower of one job may leave it out)."""
        kind = event.get("event")
        run = self._runs.setdefault(run_id, _RunState())
        job = run.job_id
        if kind == "planning":
            self._enter(run, "planning")
        elif kind == "planned":
            self._enter(run, "")
            run.job_id = job = str(event.get("job_id") or "")
            self._enter(run, "running")
            # Series from 0, so that increase() sees a job's first unit, sentence and result.
            self.frames.labels(job, "video")
            self.shards.labels(job, "done")
            self.shard_seconds.labels(job, "video")
            self.end_drift.labels(job)
            if int(event.get("sentences") or 0):
                self.shard_seconds.labels(job, "voice")
                self.stretch_ratio.labels(job)
                for band in ("in", "out"):
                    self.sentences.labels(job, band)
            reused = len(event.get("reused", []))
            if reused:
                self.shards.labels(job, "reused").inc(reused)
        elif kind == "shard_done":
            self.shards.labels(job, "done").inc()
            self.frames.labels(job, "video").inc(int(event["frames"]))
            self.shard_seconds.labels(job, "video").observe(float(event["seconds"]))
        elif kind == "sentence_done":
            band = "in" if event.get("in_band", True) else "out"
            self.sentences.labels(job, band).inc()
            self.shard_seconds.labels(job, "voice").observe(float(event.get("seconds", 0.0)))
            if event.get("stretch_ratio") is not None:
                self.stretch_ratio.labels(job).observe(float(event["stretch_ratio"]))
        elif kind == "retry":
            stage = "voice" if str(event.get("unit", "")).startswith("sentence") else "video"
            self.retries.labels(job, stage, str(event.get("reason", "unknown"))).inc()
        elif kind == "progress":
            for stage, count in (event.get("queued") or {}).items():
                self.queue_depth.labels(job, str(stage)).set(int(count))
            for stage, count in (event.get("inflight") or {}).items():
                self.inflight.labels(job, str(stage)).set(int(count))
            if event.get("oldest_s") is not None:
                self.oldest_unit.labels(job).set(float(event["oldest_s"]))
            if event.get("timeout_s") is not None:
                self.unit_timeout.labels(job).set(float(event["timeout_s"]))
        elif kind == "reducing":
            self._enter(run, "reducing")
        elif kind == "finished":
            self._end(run_id, "succeeded")
            self._record_report(job, event.get("report") or {})
        elif kind in ("failed", "cancelled"):
            self._end(run_id, str(kind))

    def _end(self, run_id: str, status: str) -> None:
        run = self._runs.pop(run_id)
        self._enter(run, "")
        for stage in STAGES:
            self.queue_depth.labels(run.job_id, stage).set(0)
            self.inflight.labels(run.job_id, stage).set(0)
        self.oldest_unit.labels(run.job_id).set(0)
        self.jobs.labels(status).inc()

    def _record_report(self, job: str, report: Mapping[str, Any]) -> None:
        seconds = (report.get("stage_seconds") or {}).get("job_s")
        if seconds is not None:
            self.job_seconds.observe(float(seconds))
        drift = end_drift_s(report)
        if drift is not None:
            self.end_drift.labels(job).observe(drift)
        quality = report.get("quality") or {}
        speaker = (quality.get("speaker") or {}).get("mean_to_reference")
        if speaker is not None:
            self.speaker_similarity.labels(job).observe(float(speaker))
        identity = (quality.get("identity_similarity") or {}).get("mean_to_identity")
        if identity is not None:
            self.identity_similarity.labels(job).observe(float(identity))

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
