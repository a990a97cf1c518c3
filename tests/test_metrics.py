"""What a job's events do to its metrics (the exporter-independent part of farm.metrics)."""

from __future__ import annotations

from typing import Any

import pytest

from farm.metrics import FarmMetrics, end_drift_s


def _report(**changes: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "fps": {"num": 25, "den": 1},
        "audio": {"sample_rate": 48000},
        "stage_seconds": {"job_s": 12.5},
        "sync": {
            "video_frames": 300,
            "source_video_frames": 300,
            "audio_samples": 576000,
            "source_audio_samples": 576000,
        },
        "quality": {
            "speaker": {"mean_to_reference": 0.71},
            "identity_similarity": {"mean_to_identity": 0.42},
        },
    }
    report.update(changes)
    return report


EVENTS: list[dict[str, Any]] = [
    {"event": "planning"},
    {"event": "planned", "job_id": "abc123", "frames": 300, "shards": [], "reused": ["s0"]},
    {
        "event": "progress",
        "queued": {"video": 3, "voice": 1},
        "inflight": {"video": 2},
        "oldest_s": 4.5,
        "timeout_s": 600.0,
    },
    {"event": "shard_done", "shard": "s1", "frames": 120, "seconds": 3.0},
    {
        "event": "sentence_done",
        "sentence": 0,
        "seconds": 0.4,
        "stretch_ratio": 1.08,
        "in_band": True,
    },
    {
        "event": "sentence_done",
        "sentence": 1,
        "seconds": 0.5,
        "stretch_ratio": 1.6,
        "in_band": False,
    },
    {"event": "retry", "unit": "shard 00002", "reason": "worker died"},
    {"event": "retry", "unit": "sentence 1", "reason": "timeout"},
]


def _value(metrics: FarmMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_job_is_counted_by_its_id_and_leaves_nothing_running() -> None:
    metrics = FarmMetrics()
    for event in EVENTS:
        metrics.record(event)
    job = {"job_id": "abc123"}
    assert _value(metrics, "farm_job_state", **job, state="running") == 1
    assert _value(metrics, "farm_queue_depth", **job, stage="video") == 3
    assert _value(metrics, "farm_oldest_unit_seconds", **job) == 4.5
    assert _value(metrics, "farm_unit_timeout_seconds", **job) == 600
    assert _value(metrics, "farm_shards_total", **job, status="reused") == 1
    assert _value(metrics, "farm_frames_total", **job, stage="video") == 120
    assert _value(metrics, "farm_sentences_total", **job, band="in") == 1
    assert _value(metrics, "farm_sentences_total", **job, band="out") == 1
    assert _value(metrics, "farm_sentence_stretch_ratio_bucket", **job, le="1.1") == 1
    assert _value(metrics, "farm_sentence_stretch_ratio_count", **job) == 2
    assert _value(metrics, "farm_retries_total", **job, stage="video", reason="worker died") == 1
    assert _value(metrics, "farm_retries_total", **job, stage="voice", reason="timeout") == 1

    metrics.record({"event": "reducing"})
    assert _value(metrics, "farm_job_state", **job, state="running") == 0
    assert _value(metrics, "farm_job_state", **job, state="reducing") == 1
    metrics.record({"event": "finished", "report": _report()})
    assert _value(metrics, "farm_jobs_total", status="succeeded") == 1
    assert _value(metrics, "farm_job_state", **job, state="reducing") == 0
    assert _value(metrics, "farm_queue_depth", **job, stage="video") == 0
    assert _value(metrics, "farm_tasks_inflight", **job, stage="video") == 0
    assert _value(metrics, "farm_oldest_unit_seconds", **job) == 0
    assert _value(metrics, "farm_job_seconds_sum") == 12.5
    assert _value(metrics, "farm_end_drift_seconds_bucket", **job, le="0.001") == 1
    assert _value(metrics, "farm_speaker_similarity_sum", **job) == pytest.approx(0.71)
    assert _value(metrics, "farm_identity_similarity_sum", **job) == pytest.approx(0.42)


@pytest.mark.parametrize("kind", ["failed", "cancelled"])
def test_a_job_that_did_not_finish_is_counted_by_how_it_ended(kind: str) -> None:
    metrics = FarmMetrics()
    for event in EVENTS[:3]:
        metrics.record(event)
    metrics.record({"event": kind, "error": "boom"})
    assert _value(metrics, "farm_jobs_total", status=kind) == 1
    assert _value(metrics, "farm_jobs_total", status="succeeded") == 0
    assert _value(metrics, "farm_job_state", job_id="abc123", state="running") == 0
    assert _value(metrics, "farm_end_drift_seconds_count", job_id="abc123") == 0


def test_end_drift_is_zero_when_the_streams_end_with_the_source() -> None:
    assert end_drift_s(_report()) == 0.0
    late = _report(
        sync={
            "video_frames": 301,
            "source_video_frames": 300,
            "audio_samples": 576000 + 480,
            "source_audio_samples": 576000,
        }
    )
    assert end_drift_s(late) == pytest.approx(0.04 + 0.01)
    silent = _report(
        sync={
            "video_frames": 300,
            "source_video_frames": 300,
            "audio_samples": None,
            "source_audio_samples": None,
        },
    )
    assert end_drift_s(silent) == 0.0
    assert end_drift_s({}) is None


def test_one_exporter_keeps_the_runs_of_many_jobs_apart() -> None:
    """The cluster's exporter hears every job actor: each run is counted under its own job."""
    metrics = FarmMetrics()
    assert _value(metrics, "farm_jobs_total", status="failed") == 0  # exported before any job
    for run, job in (("r1", "job1"), ("r2", "job2")):
        metrics.record({"event": "planning"}, run)
        metrics.record({"event": "planned", "job_id": job, "reused": []}, run)
    metrics.record({"event": "shard_done", "shard": "s", "frames": 10, "seconds": 1.0}, "r2")
    metrics.record({"event": "failed", "error": "boom"}, "r1")
    assert _value(metrics, "farm_frames_total", job_id="job2", stage="video") == 10
    assert _value(metrics, "farm_frames_total", job_id="job1", stage="video") == 0
    assert _value(metrics, "farm_job_state", job_id="job1", state="running") == 0
    assert _value(metrics, "farm_job_state", job_id="job2", state="running") == 1
    assert _value(metrics, "farm_jobs_total", status="failed") == 1


def test_the_exporter_port_comes_from_the_environment() -> None:
    from actors.metrics import exporter_port
    from farm.errors import SpecError

    assert exporter_port({}) is None
    assert exporter_port({"FARM_METRICS_PORT": " "}) is None
    assert exporter_port({"FARM_METRICS_PORT": "9100"}) == 9100
    for bad in ("http", "0", "70000", "-1"):
        with pytest.raises(SpecError, match="FARM_METRICS_PORT must be a port number"):
            exporter_port({"FARM_METRICS_PORT": bad})
