"""The CLI's progress view, fed the orchestrator's events (with a fake clock: no sleeps)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from rich.console import Console
from rich.progress import Task

from cli.progress import PLANNING_TEXT, REDUCING_TEXT, JobProgress


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class View:
    """A `JobProgress` on a recording terminal console, with its clock."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.console = Console(record=True, file=io.StringIO(), force_terminal=True, width=120)
        self.progress = JobProgress(self.console, enabled=True, get_time=self.clock)

    def at(self, seconds: float, event: dict[str, Any]) -> None:
        """Feed ``event`` ``seconds`` after the start, then draw a frame onto the console."""
        self.clock.now = 1000.0 + seconds
        self.progress(event)
        self.progress.progress.refresh()

    def tasks(self) -> dict[str, Task]:
        return {t.description.strip(): t for t in self.progress.progress.tasks}

    def frame(self) -> str:
        """The bars as they are drawn now."""
        console = Console(record=True, file=io.StringIO(), width=120)
        console.print(self.progress.progress.get_renderable())
        return console.export_text()

    def row(self, description: str) -> str:
        rows = [line for line in self.frame().splitlines() if description in line]
        assert len(rows) == 1, self.frame()
        return rows[0]

    def recorded(self) -> str:
        return self.console.export_text(clear=False)


PLANNED = {
    "event": "planned",
    "job_id": "3f2a9c0d11ab",
    "frames": 300,
    "shards": [["00000", 100], ["00001", 100], ["00002", 100]],
    "reused": ["00002"],
    "sentences": 5,
    "sentences_reused": [0, 1],
    "work_dir": "/tmp/work",
}


def progress(active: dict[str, int], video: int = 0, voice: int = 0) -> dict[str, Any]:
    return {
        "event": "progress",
        "active": active,
        "queued": {"video": 0, "voice": 2},
        "inflight": {"video": video, "voice": voice},
    }


@pytest.fixture
def view() -> Iterator[View]:
    view = View()
    with view.progress:
        yield view


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


def test_planning_shows_until_the_plan_is_made(view: View) -> None:
    view.at(0, {"event": "planning"})
    view.clock.now += 8
    assert list(view.tasks()) == ["planning"]
    row = view.row("planning")
    assert PLANNING_TEXT in row and "0:00:08" in row  # it spins and its clock runs
    assert not view.tasks()["planning"].finished

    view.at(12, PLANNED)
    planning = view.tasks()["planning"]
    assert planning.finished and planning.finished_time == pytest.approx(12.0)
    assert "3 shards, 5 sentences" in view.row("planning")
    recorded = view.recorded()
    assert PLANNING_TEXT in recorded
    assert recorded.index(PLANNING_TEXT) < recorded.index("job 3f2a9c0d11ab")


def test_every_active_shard_has_its_own_timed_bar_with_its_fps(view: View) -> None:
    view.at(0, PLANNED)
    job = view.tasks()["job 3f2a9c0d11ab"]
    assert job.completed == 100 and job.total == 300  # the reused shard counts as done
    assert "waiting for workers" in view.row("job 3f2a9c0d11ab")
    view.at(1, {"event": "workers", "workers": [{}, {}, {}]})

    view.at(2, progress({"00000": 10, "00001": 5}, video=2))
    view.at(4, progress({"00000": 50, "00001": 25}, video=2))
    tasks = view.tasks()
    assert {"shard 00000", "shard 00001"} <= set(tasks)
    first, second = tasks["shard 00000"], tasks["shard 00001"]
    assert first.completed == 50 and first.total == 100
    assert first.elapsed == pytest.approx(2.0)  # since it was first seen active
    assert first.speed == pytest.approx(20.0) and second.speed == pytest.approx(10.0)
    row = view.row("shard 00000")
    assert "50/100" in row and "20.0 fps" in row and "0:00:02" in row
    assert "10.0 fps" in view.row("shard 00001")
    assert tasks["job 3f2a9c0d11ab"].completed == 100 + 50 + 25
    assert "3 workers · 2 shards running" in view.row("job 3f2a9c0d11ab")
    assert "fps" in view.row("job 3f2a9c0d11ab")

    view.clock.now += 3  # no new report: the clock still runs
    assert view.tasks()["shard 00000"].elapsed == pytest.approx(5.0)
    assert "0:00:05" in view.row("shard 00000")


def test_a_done_shard_stays_gone_and_counts_once(view: View) -> None:
    view.at(0, PLANNED)
    view.at(1, progress({"00000": 40, "00001": 20}, video=2))
    view.at(2, {"event": "shard_done", "shard": "00000", "frames": 100, "seconds": 2.0})
    view.at(2.5, progress({"00000": 100, "00001": 60}, video=1))  # the board still lists it
    view.at(3, {"event": "shard_done", "shard": "00000", "frames": 100, "seconds": 2.0})
    tasks = view.tasks()
    assert "shard 00000" not in tasks and "shard 00000" not in view.frame()
    assert tasks["shard 00001"].completed == 60
    assert tasks["job 3f2a9c0d11ab"].completed == 100 + 100 + 60


def test_the_voice_bar_counts_sentences_reused_ones_included(view: View) -> None:
    view.at(0, PLANNED)
    voice = view.tasks()["voice"]
    assert (voice.completed, voice.total) == (2, 5)
    assert voice.elapsed is None  # its clock waits for the first voice work
    assert "2/5" in view.row("voice")

    view.at(1, progress({}, voice=1))
    assert "1 running, 2 queued" in view.row("voice")
    for seconds, index in ((3, 2), (5, 3)):
        view.at(seconds, {"event": "sentence_done", "sentence": index, "seconds": 2.0})
    voice = view.tasks()["voice"]
    assert voice.completed == 4 and voice.elapsed == pytest.approx(4.0)
    assert voice.speed == pytest.approx(0.5)
    row = view.row("voice")
    assert "4/5" in row and "0.50 sent/s" in row
    view.at(6, {"event": "sentence_done", "sentence": 4, "seconds": 1.0})
    assert view.tasks()["voice"].finished


def test_no_voice_bar_without_sentences(view: View) -> None:
    view.at(0, {**PLANNED, "sentences": 0, "sentences_reused": []})
    assert "voice" not in view.tasks()


def test_retries_and_warnings_print_above_the_bars(view: View) -> None:
    view.at(0, PLANNED)
    view.at(1, progress({"00000": 40, "00001": 20}, video=2))
    view.at(2, {"event": "retry", "unit": "shard 00001", "reason": "worker died"})
    view.at(2, {"event": "warning", "message": "the output disk is nearly full"})
    recorded = view.recorded()
    assert "retrying shard 00001: worker died" in recorded
    assert "warning: the output disk is nearly full" in recorded
    assert "shard 00001" not in view.tasks()  # that attempt is over
    assert view.tasks()["job 3f2a9c0d11ab"].completed == 140
    view.at(3, progress({"00000": 60, "00001": 4}, video=2))  # the next attempt reports
    shard = view.tasks()["shard 00001"]
    assert shard.completed == 4 and shard.elapsed == pytest.approx(0.0)


def test_reducing_then_finished(view: View) -> None:
    view.at(0, {"event": "planning"})
    view.at(2, PLANNED)
    view.at(3, progress({"00000": 50, "00001": 50}, video=2))
    view.at(5, {"event": "shard_done", "shard": "00000", "frames": 100, "seconds": 2.0})
    view.at(6, {"event": "shard_done", "shard": "00001", "frames": 100, "seconds": 3.0})
    for index in (2, 3, 4):
        view.at(6, {"event": "sentence_done", "sentence": index, "seconds": 1.0})
    view.at(7, {"event": "reducing"})
    view.clock.now += 2
    assert REDUCING_TEXT in view.row("reducing") and "0:00:02" in view.row("reducing")
    assert not view.tasks()["reducing"].finished
    view.at(10, {"event": "finished", "output": "out.mp4", "report": {}})
    tasks = view.tasks()
    assert list(tasks) == ["planning", "job 3f2a9c0d11ab", "voice", "reducing"]
    assert all(t.finished for t in tasks.values())
    assert tasks["reducing"].finished_time == pytest.approx(3.0)
    assert "✓" in view.row("job 3f2a9c0d11ab") and "300/300" in view.row("job 3f2a9c0d11ab")


@pytest.mark.parametrize("how", ["failed", "cancelled"])
def test_a_failed_or_cancelled_job_leaves_its_bars_stopped(view: View, how: str) -> None:
    view.at(0, PLANNED)
    view.at(1, progress({"00000": 40}, video=1))
    view.at(3, {"event": how, "error": "a shard failed", "work_dir": "/tmp/work"})
    view.at(4, progress({"00000": 80}, video=1))  # nothing moves after the end
    view.clock.now += 60
    tasks = view.tasks()
    assert list(tasks) == ["job 3f2a9c0d11ab", "voice"]
    job = tasks["job 3f2a9c0d11ab"]
    assert job.completed == 140 and not job.finished
    assert job.elapsed == pytest.approx(3.0)  # its clock stopped with the job
    assert tasks["voice"].elapsed == 0 and tasks["voice"].started  # it never ran; no pulse
    row = view.row("job 3f2a9c0d11ab")
    assert "✗" in row and how in row and "0:00:03" in row


def test_a_failure_while_planning_stops_the_spinner(view: View) -> None:
    view.at(0, {"event": "planning"})
    view.at(4, {"event": "failed", "error": "no such input"})
    view.clock.now += 10
    row = view.row("planning")
    assert "✗" in row and "failed" in row and "0:00:04" in row


def test_a_disabled_view_draws_nothing() -> None:
    console = Console(record=True, file=io.StringIO(), force_terminal=True, width=120)
    with JobProgress(console, enabled=False) as view:
        view({"event": "planning"})
        view(PLANNED)
        view(progress({"00000": 40}, video=1))
    assert console.export_text() == ""
