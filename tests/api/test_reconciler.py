"""The `Reconciler` when a job's actor is gone: finished from a committed output, resumed from
its ledger (up to max_resumes), else failed with the reason; and each end recorded once, with
its webhook enqueued. A fake launcher stands in for the cluster; the records are real (SQLite)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deploy.db.store import RecordStore
from deploy.launcher import ClusterUnavailable
from deploy.records import JobRecord, utc_now
from deploy.service import FarmService, Reconciler
from deploy.settings import load_settings
from farm.pipeline.plan import report_path
from farm.pipeline.progress import JobStatus
from farm.plan.ledger import LEDGER_NAME
from farm.spec import JobSpec, parse_spec
from tests.conftest import media_path

CLIP = "video/grid_jumpcut_same_speaker_6s.mp4"


class GoneLauncher:
    """A cluster on which no job actor answers (they all died); launches are recorded."""

    def __init__(self, *, unavailable: bool = False) -> None:
        self.launched: list[tuple[JobSpec, str]] = []
        self.unavailable = unavailable

    def launch(self, spec: JobSpec, run_id: str) -> None:
        self.launched.append((spec, run_id))

    def status(self, run_id: str) -> JobStatus | None:
        if self.unavailable:
            raise ClusterUnavailable("the cluster does not answer")
        return None

    def events(self, run_id: str, after: int, timeout_s: float) -> None:
        return None

    def cancel(self, run_id: str) -> bool:
        return False

    def ping(self) -> None:
        return None


def _reconciler(tmp_path: Path, launcher: GoneLauncher) -> Reconciler:
    settings = load_settings({"home": str(tmp_path / "api"), "max_resumes": 1}, environ={})
    service = FarmService(settings, RecordStore(settings.records_url), launcher, pepper=b"p" * 32)
    return Reconciler(service, worker="test-replica")


def _job(reconciler: Reconciler, tmp_path: Path, **fields: Any) -> JobRecord:
    job_dir = tmp_path / "jobs" / "job_1"
    spec = parse_spec(
        {
            "input": str(media_path(CLIP)),
            "output": str(job_dir / "output.mp4"),
            "work_dir": str(job_dir / "work"),
            "passthrough": True,
        }
    )
    now = utc_now()
    record = JobRecord(
        job_id="job_1",
        owner="tok1",
        run_id="run_old",
        spec=spec.model_dump(mode="json"),
        request_sha256="a" * 64,
        input_path=str(spec.input),
        output_path=str(spec.output),
        work_dir=str(spec.work_dir),
        webhook_url="https://hooks.example/farm",
        created_at=now,
        updated_at=now,
        **{"state": "running", **fields},
    )
    reconciler.service.store.add_job(record)
    (job_dir / "work").mkdir(parents=True)
    return record


def _step(reconciler: Reconciler) -> JobRecord:
    for record in reconciler.service.store.claim_jobs(reconciler.worker, lease_s=60):
        reconciler.follow(record)
    after = reconciler.service.store.get_job("job_1")
    assert after is not None
    return after


def test_a_job_whose_actor_died_after_planning_is_resumed_from_its_ledger(
    tmp_path: Path,
) -> None:
    launcher = GoneLauncher()
    reconciler = _reconciler(tmp_path, launcher)
    record = _job(reconciler, tmp_path, status={"state": "running", "shards_done": 2})
    (Path(record.work_dir) / LEDGER_NAME).write_text("{}")

    resumed = _step(reconciler)
    assert resumed.state == "queued" and resumed.resumes == 1 and resumed.error is None
    ((spec, run_id),) = launcher.launched
    assert resumed.run_id == run_id != "run_old"
    assert spec == JobSpec.model_validate(record.spec)  # the same job, so its ledger applies

    # It dies again: max_resumes (1) is spent, so it fails and says why.
    failed = _step(reconciler)
    assert failed.state == "failed" and len(launcher.launched) == 1
    assert failed.error is not None and "resumed 1 time(s) already" in failed.error
    assert failed.finished_at is not None
    (delivery,) = reconciler.service.store.list_deliveries("job_1")
    assert json.loads(delivery.body)["event"] == "job.failed"


def test_a_job_whose_actor_died_before_planning_fails_with_the_reason(tmp_path: Path) -> None:
    launcher = GoneLauncher()
    reconciler = _reconciler(tmp_path, launcher)
    _job(reconciler, tmp_path)

    failed = _step(reconciler)
    assert failed.state == "failed" and not launcher.launched
    assert failed.error is not None
    assert "run_old" in failed.error and "before it had planned" in failed.error
    assert _step(reconciler) == failed  # ended once: nothing more happens
    assert len(reconciler.service.store.list_deliveries("job_1")) == 1


def test_an_output_without_a_readable_report_is_not_taken_as_finished(tmp_path: Path) -> None:
    launcher = GoneLauncher()
    reconciler = _reconciler(tmp_path, launcher)
    record = _job(reconciler, tmp_path)
    output = Path(record.output_path)
    output.write_bytes(b"mp4")
    report_path(output).write_text("not a report")
    failed = _step(reconciler)
    assert failed.state == "failed" and failed.error is not None and not launcher.launched


def test_a_queued_job_is_given_time_for_its_actor_to_start(tmp_path: Path) -> None:
    import datetime as dt

    from deploy.service import LAUNCH_GRACE_S

    launcher = GoneLauncher()
    reconciler = _reconciler(tmp_path, launcher)
    record = _job(reconciler, tmp_path, state="queued")
    # Just recorded, its launch still under way: not lost.
    assert _step(reconciler).state == "queued"
    # No actor long after its launch must have ended: lost.
    later = record.updated_at + dt.timedelta(seconds=LAUNCH_GRACE_S + 1)
    reconciler.clock = lambda: later
    failed = _step(reconciler)
    assert failed.state == "failed" and failed.error is not None
    assert "before it had planned" in failed.error


def test_an_unreachable_cluster_changes_nothing(tmp_path: Path) -> None:
    launcher = GoneLauncher(unavailable=True)
    reconciler = _reconciler(tmp_path, launcher)
    record = _job(reconciler, tmp_path)
    (Path(record.work_dir) / LEDGER_NAME).write_text("{}")
    after = _step(reconciler)
    assert (after.state, after.run_id, after.resumes, after.error) == (
        "running",
        "run_old",
        0,
        None,
    )
    assert not launcher.launched


@pytest.fixture(autouse=True)
def _own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FARM_HOME", str(tmp_path / "home"))
