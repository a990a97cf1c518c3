"""The CLI's progress view, fed the orchestrator's events."""

from __future__ import annotations

import io

from rich.console import Console

from cli.progress import JobProgress


def test_bars_follow_the_job_and_its_active_shards() -> None:
    view = JobProgress(Console(file=io.StringIO(), force_terminal=True), enabled=True)
    with view:
        view(
            {
                "event": "planned",
                "job_id": "j",
                "frames": 100,
                "shards": [("00000", 60), ("00001", 40)],
                "reused": ["00001"],
            }
        )
        view({"event": "progress", "active": {"00000": 30}})
        tasks = {t.description.strip(): t for t in view.progress.tasks}
        assert tasks["shard 00000"].completed == 30 and tasks["shard 00000"].total == 60
        assert tasks["job j"].completed == 70  # 40 reused + 30 in flight
        view({"event": "shard_done", "shard": "00000", "frames": 60, "seconds": 1.0})
        view({"event": "progress", "active": {"00000": 60}})  # a stale report after the end
        descriptions = [t.description.strip() for t in view.progress.tasks]
        assert descriptions == ["job j"]
        assert view.progress.tasks[0].completed == 100
