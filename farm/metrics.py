"""Prometheus metrics of a job, in their own registry (no module-level state).

The driver that owns a job (the `farm run` process or the Ray Job entrypoint) counts from the same
events the progress display gets, and serves them with prometheus-client when asked.
"""

from __future__ import annotations

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

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
