"""Prometheus metrics of jobs, in their own registry (no module-level state).

The process that follows a job (`farm run`, `farm batch`, the Ray Job entrypoint) counts from the
same events the progress display gets (`FarmMetrics.record`), and serves them with
prometheus-client when asked.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

SHARD_SECONDS_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)


class FarmMetrics:
    """Counters, gauges and histograms for one driver process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.frames = Counter(
            "farm_frames_total",
            "Frames rendered into finished shards",
            ["stage"],
            registry=self.registry,
        )
        self.shards = Counter(
            "farm_shards_total", "Shards by final status", ["status"], registry=self.registry
        )
        self.shard_seconds = Histogram(
            "farm_shard_seconds",
            "Wall time to render one shard",
            ["stage"],
            buckets=SHARD_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.job_seconds = Histogram(
            "farm_job_seconds",
            "Wall time of whole jobs",
            buckets=(5, 10, 30, 60, 120, 300, 600, 1800, 3600),
            registry=self.registry,
        )
        self.inflight = Gauge(
            "farm_tasks_inflight",
            "Tasks submitted and not finished",
            ["stage"],
            registry=self.registry,
        )
        self.retries = Counter(
            "farm_retries_total",
            "Tasks submitted again after a failure",
            ["stage", "reason"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "farm_queue_depth", "Tasks waiting for a worker", ["stage"], registry=self.registry
        )
        self.jobs = Counter(
            "farm_jobs_total", "Jobs by outcome", ["status"], registry=self.registry
        )

    def record(self, event: dict[str, Any]) -> None:
        """Count one job event (see `farm.pipeline.progress` for the vocabulary)."""
        kind = event.get("event")
        if kind == "planned":
            self.shards.labels("reused").inc(len(event.get("reused", [])))
        elif kind == "shard_done":
            self.shards.labels("done").inc()
            self.frames.labels("video").inc(int(event["frames"]))
            self.shard_seconds.labels("video").observe(float(event["seconds"]))
        elif kind == "sentence_done":
            self.frames.labels("voice").inc()
            self.shard_seconds.labels("voice").observe(float(event.get("seconds", 0.0)))
        elif kind == "retry":
            stage = "voice" if str(event.get("unit", "")).startswith("sentence") else "video"
            self.retries.labels(stage, str(event.get("reason", "unknown"))).inc()
        elif kind == "progress":
            for stage, count in (event.get("queued") or {}).items():
                self.queue_depth.labels(stage).set(int(count))
            for stage, count in (event.get("inflight") or {}).items():
                self.inflight.labels(stage).set(int(count))
        elif kind == "finished":
            self.jobs.labels("succeeded").inc()
            seconds = (event.get("report") or {}).get("stage_seconds", {}).get("job_s")
            if seconds is not None:
                self.job_seconds.observe(float(seconds))
        elif kind in ("failed", "cancelled"):
            self.jobs.labels(kind).inc()

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
