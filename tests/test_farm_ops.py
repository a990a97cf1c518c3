"""Running the farm: batches, a killed driver resumed, and Ray Jobs submission."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from cli.cluster import submit_entrypoint
from farm.batch import glob_entries, read_manifest
from farm.errors import SpecError
from tests.clips import ClipRecipe, make_clip
from tests.conftest import REPO, farm


def _packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(video=0) if p.size]


# -- manifests (no cluster) ---------------------------------------------------------------


def test_yaml_manifest_with_defaults_and_bad_rows(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(
        "defaults:\n  passthrough: true\n  video: {max_shard_s: 5}\n"
        "jobs:\n"
        "  - {input: a.mp4, output: out/a.mp4}\n"
        "  - {input: b.mp4, output: out/b.mp4, options: {video: {crf: 20}}}\n"
        "  - {input: c.mp4}\n"
    )
    entries = read_manifest(tmp_path / "m.yaml")
    assert [e.name for e in entries] == ["job 1", "job 2", "job 3"]
    assert entries[0].spec is not None and entries[0].spec.video.max_shard_s == 5
    assert entries[1].spec is not None and entries[1].spec.video.crf == 20
    assert entries[1].spec.input == (tmp_path / "b.mp4").resolve()
    assert entries[2].spec is None and "output" in (entries[2].error or "")


def test_csv_manifest_and_glob(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("input,output,passthrough\na.mp4,o/a.mp4,true\n")
    (entry,) = read_manifest(tmp_path / "m.csv")
    assert entry.spec is not None and entry.spec.passthrough
    for name in ("x.mp4", "y.mp4"):
        (tmp_path / name).write_bytes(b"")
    entries = glob_entries(str(tmp_path / "*.mp4"), tmp_path / "out", {"passthrough": True})
    assert [Path(e.output).name for e in entries] == ["x.mp4", "y.mp4"]
    with pytest.raises(SpecError, match="no input matches"):
        glob_entries(str(tmp_path / "*.mkv"), tmp_path / "out", {})
    (tmp_path / "bad.yaml").write_text("- just a list\n")
    with pytest.raises(SpecError, match="jobs"):
        read_manifest(tmp_path / "bad.yaml")


def test_submit_entrypoint_joins_the_jobs_cluster() -> None:
    assert submit_entrypoint(["run", "in.mp4", "-o", "out b.mp4", "--passthrough"]) == (
        "python -m cli.main run in.mp4 -o 'out b.mp4' --passthrough --address auto"
    )
    with pytest.raises(SpecError):
        submit_entrypoint(["rm", "-rf"])


# -- a batch with one corrupt input --------------------------------------------------------


def test_batch_continues_past_a_corrupt_input(tmp_path: Path) -> None:
    clips = tmp_path / "clips"
    clips.mkdir()
    good = [make_clip(ClipRecipe(f"b{i}", seconds=1.0, size="160x120"), clips) for i in range(4)]
    corrupt = clips / "corrupt.mp4"
    corrupt.write_bytes(good[0].read_bytes()[:2000])
    rows = [*good[:2], corrupt, *good[2:]]
    manifest = tmp_path / "batch.yaml"
    manifest.write_text(
        "defaults: {passthrough: true}\njobs:\n"
        + "".join(f"  - {{input: {p}, output: {tmp_path / 'out' / p.name}}}\n" for p in rows)
    )
    (tmp_path / "out").mkdir()
    result = farm("batch", str(manifest), "--concurrency", "2", "--json")
    assert result.returncode != 0
    table = json.loads(result.stdout)
    assert len(table) == 5
    statuses = [r["status"] for r in table]
    assert statuses == ["succeeded", "succeeded", "failed", "succeeded", "succeeded"]
    assert "corrupt.mp4" in table[2]["error"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.mp4")) == sorted(p.name for p in good)
    assert "1 of 5 jobs failed" in result.stderr


# -- SIGKILL of the driver, then farm resume -------------------------------------------------


def test_killed_driver_resumes_with_finished_shards(tmp_path: Path) -> None:
    src = make_clip(
        ClipRecipe("killme", fps="25", seconds=40.0, size="320x240", scene_seconds=None), tmp_path
    )
    common = [
        "--passthrough",
        "--max-shard-seconds",
        "1",
        "--min-shard-seconds",
        "0.2",
        "--workers",
        "1",
    ]
    reference = tmp_path / "reference.mp4"
    assert farm("run", str(src), "-o", str(reference), *common).returncode == 0

    work = tmp_path / "work"
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli.main",
            "run",
            str(src),
            "-o",
            str(out),
            "--work-dir",
            str(work),
            *common,
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    ledger = work / "ledger.json"
    deadline = time.monotonic() + 240
    done: set[str] = set()
    while time.monotonic() < deadline and len(done) < 4:
        time.sleep(0.2)
        if ledger.exists():
            try:
                done = set(json.loads(ledger.read_text())["done"])
            except (ValueError, KeyError):
                continue
    assert len(done) >= 4, "the first run never finished four shards"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started
    proc.wait(timeout=30)
    assert not out.exists()
    shards = json.loads(ledger.read_text())
    assert len(shards["done"]) < len(shards["shards"]), "killed before the end"

    result = farm("resume", str(work), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert set(summary["shards_reused"]) >= done
    assert _packets(out) == _packets(reference)


# -- Ray Jobs: submit, status, logs, cancel --------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> str:
    ray_bin = Path(sys.executable).with_name("ray")
    dashboard = _free_port()
    started = subprocess.run(
        [
            str(ray_bin),
            "start",
            "--head",
            f"--port={_free_port()}",
            "--num-cpus=2",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            "--disable-usage-stats",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=REPO,
        # Job drivers run `python -m cli.main`: this venv's python must come first on PATH.
        # A loopback-only test head without token auth (clients then need no token file).
        env={
            **os.environ,
            "PATH": f"{ray_bin.parent}{os.pathsep}{os.environ['PATH']}",
            "RAY_AUTH_MODE": "disabled",
        },
    )
    assert started.returncode == 0, started.stderr[-2000:]
    address = f"http://127.0.0.1:{dashboard}"
    yield address
    subprocess.run([str(ray_bin), "stop", "--force"], capture_output=True, timeout=120, check=False)


def _wait_status(job_id: str, address: str, wanted: set[str], timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = farm("status", job_id, "--address", address).stdout.strip()
        if state in wanted:
            return state
        time.sleep(1)
    return state


def test_submit_status_logs_and_cancel(ray_head: str, tmp_path: Path) -> None:
    src = make_clip(ClipRecipe("submitted", seconds=2.0, size="160x120"), tmp_path)
    out = tmp_path / "submitted-out.mp4"
    submitted = farm(
        "submit", "--address", ray_head, "--", "run", str(src), "-o", str(out), "--passthrough"
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert _wait_status(job_id, ray_head, {"SUCCEEDED", "FAILED"}) == "SUCCEEDED", farm(
        "logs", job_id, "--address", ray_head
    ).stdout[-3000:]
    assert out.exists()
    assert "wrote" in farm("logs", job_id, "--address", ray_head).stdout

    long_src = make_clip(ClipRecipe("long-submitted", seconds=60.0, size="320x240"), tmp_path)
    second = farm(
        "submit",
        "--address",
        ray_head,
        "--",
        "run",
        str(long_src),
        "-o",
        str(tmp_path / "never.mp4"),
        "--passthrough",
    ).stdout.strip()
    assert _wait_status(second, ray_head, {"RUNNING"}) == "RUNNING"
    assert farm("cancel", second, "--address", ray_head).returncode == 0
    assert _wait_status(second, ray_head, {"STOPPED", "FAILED"}) == "STOPPED"
    assert not (tmp_path / "never.mp4").exists()

    missing = farm("status", "no-such-job", "--address", ray_head)
    assert missing.returncode != 0 and missing.stderr.startswith("farm: error:")
