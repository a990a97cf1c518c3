"""Running the farm from the command line: batches, kills, Ctrl-C, failures, detached jobs on a
long-lived cluster, and Ray Jobs submission."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import pytest

from cli.cluster import submit_entrypoint
from farm.batch import glob_entries, read_manifest
from farm.errors import SpecError
from farm.spec import JobSpec
from tests.clips import ClipRecipe, make_clip, make_two_talker_clip
from tests.conftest import REPO, farm
from tests.jobs import run_local


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


def test_batch_continues_past_bad_jobs_and_a_failed_one_resumes_from_anywhere(
    tmp_path: Path,
) -> None:
    """A corrupt input fails before any work; a job that fails inside (fault injection: shard
    00002) keeps its default work dir and says how to finish it; the others run. `farm resume`
    then finishes the failed one from another folder (the ledger holds absolute paths)."""
    clips = tmp_path / "clips"
    clips.mkdir()
    good = [make_clip(ClipRecipe(f"b{i}", seconds=1.0, size="160x120"), clips) for i in range(2)]
    corrupt = clips / "corrupt.mp4"
    corrupt.write_bytes(good[0].read_bytes()[:2000])
    half = make_clip(ClipRecipe("half-done", seconds=2.0, size="160x120"), clips)
    out = tmp_path / "out"
    out.mkdir()
    rows = [{"input": str(p), "output": str(out / p.name)} for p in (good[0], corrupt, good[1])]
    failing = {
        "input": str(half),
        "output": str(out / half.name),
        "video": {"max_shard_s": 0.4, "min_shard_s": 0.2},
        "chaos": {"marker_dir": str(tmp_path / "markers"), "fail_unit": "shard 00002",
                  "after_frames": 1},
    }  # fmt: skip
    manifest = tmp_path / "batch.yaml"
    manifest.write_text(  # JSON is YAML
        json.dumps(
            {"defaults": {"passthrough": True, "report": {"judges": False}},
             "jobs": [*rows, failing]}
        )
    )  # fmt: skip
    result = farm("batch", str(manifest), "--concurrency", "2", "--json")
    assert result.returncode != 0
    table = json.loads(result.stdout)
    statuses = [r["status"] for r in table]
    assert statuses == ["succeeded", "failed", "succeeded", "failed"], "the jobs after run"
    assert "corrupt.mp4" in table[1]["error"]
    made = sorted(p.name for p in out.glob("*.mp4"))
    assert made == sorted(p.name for p in good)
    assert "2 of 4 jobs failed" in result.stderr

    work = out / f".{half.name}.farm-work"
    assert "injected failure" in table[3]["error"], table[3]
    assert f"`farm resume {work}`" in table[3]["error"]
    assert not (out / half.name).exists() and (work / "ledger.json").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    resumed = farm("resume", str(work), "--json", cwd=elsewhere)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["shards_reused"], "finished shards were reused"
    assert "resuming an earlier run" in resumed.stderr
    assert (out / half.name).exists() and not work.exists()


# -- a face-swap job killed, interrupted or failing: nothing lost, nothing at the output -----


def _wait_for_done(ledger: Path, count: int, timeout: float = 240) -> set[str]:
    deadline = time.monotonic() + timeout
    done: set[str] = set()
    while time.monotonic() < deadline and len(done) < count:
        time.sleep(0.2)
        if ledger.exists():
            try:
                done = set(json.loads(ledger.read_text())["done"])
            except (ValueError, KeyError):
                continue
    assert len(done) >= count, f"the run never finished {count} shards"
    return done


@pytest.fixture(scope="module")
def face_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_two_talker_clip(tmp_path_factory.mktemp("ops-face"))


def test_killed_driver_resumes_a_face_swap_job_identically(
    face_clip: Path, identity_pack: Path, tmp_path: Path
) -> None:
    common = ["--identity", str(identity_pack), "--max-shard-seconds", "0.25",
              "--min-shard-seconds", "0.1", "--no-report"]  # fmt: skip
    work = tmp_path / "work"
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "run", str(face_clip), "-o", str(out),
         "--work-dir", str(work), "--workers", "1", *common],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    done = _wait_for_done(work / "ledger.json", 3)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, its job actor and the Ray it started
    proc.wait(timeout=30)
    assert not out.exists()
    shards = json.loads((work / "ledger.json").read_text())
    assert len(shards["done"]) < len(shards["shards"]), "killed before the end"

    result = farm("resume", str(work), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert set(summary["shards_reused"]) >= done
    # The reference: the same job (the spec its ledger holds) run whole, in this process.
    reference = tmp_path / "reference.mp4"
    stored = {**shards["spec"], "output": str(reference), "work_dir": None}
    assert run_local(JobSpec.model_validate(stored)).job_id == summary["job_id"]
    assert _packets(out) == _packets(reference)
    # --no-report is kept by the resumed job: no judges, no report page
    assert summary["quality"] is None and summary["quality_report"] is None
    assert not out.with_name(f"{out.name}.report.html").exists()


# What a terminal gives a program: SIGINT at its default. A shell that starts a job in the
# background (`cmd &` without job control, as some CI launchers do) leaves SIGINT ignored, the
# ignore is inherited across exec, and Python then installs no KeyboardInterrupt handler: Ctrl-C
# would never reach `farm run`. Reset it, then exec `python -m MODULE ARGS`.
_WITH_DEFAULT_SIGINT = (
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, '-m', *sys.argv[1:]])",
)


def _start_slow_run(src: Path, out: Path, work: Path) -> subprocess.Popen[str]:
    """`farm run` of a passthrough job on one worker, one-second shards, in its own session."""
    return subprocess.Popen(
        [*_WITH_DEFAULT_SIGINT, "cli.main", "run", str(src), "-o", str(out), "--work-dir",
         str(work), "--passthrough", "--no-report", "--workers", "1", "--max-shard-seconds", "1"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # fmt: skip


def _signal_masks(pid: int) -> str:
    """The process's blocked, ignored and caught signal masks (Linux), for failure messages."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError as exc:
        return f"no /proc status for {pid}: {exc}"
    return " ".join(line for line in lines if line.startswith(("SigBlk", "SigIgn", "SigCgt")))


def test_ctrl_c_cancels_cleanly_and_resume_finishes(tmp_path: Path) -> None:
    src = make_clip(ClipRecipe("interrupted", seconds=12.0, size="320x240"), tmp_path)
    work = tmp_path / "work"
    out = tmp_path / "out.mp4"
    proc = _start_slow_run(src, out, work)
    done = _wait_for_done(work / "ledger.json", 2)
    # How the driver treats SIGINT as it is sent (this test once saw it ignored in a full run).
    disposition = _signal_masks(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, f"{disposition}\n{stderr}"
    assert f"farm resume {work}" in stderr and "cancelled" in stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".partial" in p.name]
    result = farm("resume", str(work), "--json")
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)["shards_reused"]) >= done
    assert out.exists()


def test_a_source_that_vanishes_mid_job_ends_in_one_line(tmp_path: Path) -> None:
    src = make_clip(ClipRecipe("vanishing", seconds=30.0, size="320x240"), tmp_path)
    work = tmp_path / "work"
    out = tmp_path / "out.mp4"
    proc = _start_slow_run(src, out, work)
    _wait_for_done(work / "ledger.json", 2)
    src.unlink()  # the mount went away
    _, stderr = proc.communicate(timeout=240)
    lines = [line for line in stderr.splitlines() if line.startswith("farm:")]
    assert proc.returncode == 1, stderr
    assert len(lines) == 1 and lines[0].startswith("farm: error: shard "), stderr
    assert "failed 3 times" in lines[0] and "No such file or directory" in lines[0]
    assert "Traceback" not in stderr
    assert not out.exists()


# -- a cluster that outlives its clients: detached jobs and Ray Jobs ----------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Head:
    gcs: str
    """Address for `ray.init` / `farm ... --address`."""
    dashboard: str
    """URL of the Ray Jobs API (`farm submit --address`)."""


# A loopback-only test head without token auth (clients then need no token file).
NO_AUTH = {"RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="module")
def ray_head() -> Iterator[Head]:
    ray_bin = Path(sys.executable).with_name("ray")
    dashboard, port = _free_port(), _free_port()
    started = subprocess.run(
        [
            str(ray_bin),
            "start",
            "--head",
            f"--port={port}",
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
        env={**os.environ, "PATH": f"{ray_bin.parent}{os.pathsep}{os.environ['PATH']}", **NO_AUTH},
    )
    assert started.returncode == 0, started.stderr[-2000:]
    head = Head(gcs=f"127.0.0.1:{port}", dashboard=f"http://127.0.0.1:{dashboard}")
    _wait_for_jobs_agent(head.dashboard)
    yield head
    subprocess.run([str(ray_bin), "stop", "--force"], capture_output=True, timeout=120, check=False)


def _wait_for_jobs_agent(address: str, timeout: float = 120) -> None:
    """The dashboard answers before the head's job agent does; a submission in between fails."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            client = JobSubmissionClient(address)
            probe_id = client.submit_job(entrypoint="true")
            while client.get_job_status(probe_id) not in {JobStatus.SUCCEEDED, JobStatus.FAILED}:
                time.sleep(0.5)
            return
        except Exception as exc:  # not up yet: connection refused, no agent, 5xx
            last = exc
            time.sleep(1)
    pytest.fail(f"the Ray Jobs agent never came up: {last}")


def test_detached_job_outlives_its_shell(ray_head: Head, tmp_path: Path) -> None:
    src = make_clip(ClipRecipe("detached", seconds=20.0, size="320x240"), tmp_path)
    out = tmp_path / "detached-out.mp4"
    command = shlex.join(
        [sys.executable, "-m", "cli.main", "run", str(src), "-o", str(out), "--passthrough",
         "--no-report", "--workers", "1", "--max-shard-seconds", "1", "--detach", "--address",
         ray_head.gcs]
    )  # fmt: skip
    shell = subprocess.Popen(
        ["bash", "-c", f"{command} && sleep 600"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, **NO_AUTH},
    )
    assert shell.stdout is not None
    run_id = shell.stdout.readline().strip()  # printed as soon as the job is on the cluster
    assert len(run_id) == 12, run_id
    os.killpg(shell.pid, signal.SIGKILL)  # every process of the submitting shell
    shell.wait(timeout=30)

    listed = farm("jobs", "--address", ray_head.gcs, "--json", env=NO_AUTH)
    assert listed.returncode == 0, listed.stderr
    (status,) = [s for s in json.loads(listed.stdout) if s["run_id"] == run_id]
    assert status["detached"] and status["state"] in {"planning", "running", "reducing"}, status
    watched = farm("watch", run_id, "--address", ray_head.gcs, "--json", env=NO_AUTH)
    assert watched.returncode == 0, watched.stderr
    report = json.loads(watched.stdout)
    assert report["run_id"] == run_id and report["output"] == str(out)
    assert farm("verify", str(out)).returncode == 0
    after = json.loads(farm("jobs", "--address", ray_head.gcs, "--json", env=NO_AUTH).stdout)
    assert [s["state"] for s in after if s["run_id"] == run_id] == ["succeeded"]


def test_cancel_a_detached_job(ray_head: Head, tmp_path: Path) -> None:
    src = make_clip(ClipRecipe("to-cancel", seconds=40.0, size="320x240"), tmp_path)
    work = tmp_path / "work"
    out = tmp_path / "never.mp4"
    submitted = farm(
        "run", str(src), "-o", str(out), "--work-dir", str(work), "--passthrough", "--no-report",
        "--workers", "1", "--max-shard-seconds", "1", "--detach", "--address", ray_head.gcs,
        env=NO_AUTH,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.strip()
    _wait_for_done(work / "ledger.json", 1)
    cancelled = farm("cancel", run_id, "--address", ray_head.gcs, env=NO_AUTH)
    assert cancelled.returncode == 0, cancelled.stderr
    watched = farm("watch", run_id, "--address", ray_head.gcs, env=NO_AUTH)
    assert watched.returncode == 130 and "farm resume" in watched.stderr, watched.stderr
    assert not out.exists() and (work / "ledger.json").exists()


def _wait_status(job_id: str, address: str, wanted: set[str], timeout: float = 240) -> str:
    """Poll the Jobs API in this process (a `farm` process a second would compete with the
    job for the CPU), then ask `farm status` once: what the user sees."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and str(client.get_job_status(job_id)) not in wanted:
        time.sleep(0.5)
    return farm("status", job_id, "--address", address).stdout.strip()


def test_submit_status_logs_and_cancel(ray_head: Head, tmp_path: Path) -> None:
    address = ray_head.dashboard
    src = make_clip(ClipRecipe("submitted", seconds=2.0, size="160x120"), tmp_path)
    out = tmp_path / "submitted-out.mp4"
    submitted = farm(
        "submit", "--address", address, "--", "run", str(src), "-o", str(out), "--passthrough",
        "--no-report",
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert _wait_status(job_id, address, {"SUCCEEDED", "FAILED"}) == "SUCCEEDED", farm(
        "logs", job_id, "--address", address
    ).stdout[-3000:]
    assert out.exists()
    assert "wrote" in farm("logs", job_id, "--address", address).stdout

    long_src = make_clip(ClipRecipe("long-submitted", seconds=60.0, size="320x240"), tmp_path)
    second = farm(
        "submit",
        "--address",
        address,
        "--",
        "run",
        str(long_src),
        "-o",
        str(tmp_path / "never.mp4"),
        "--passthrough", "--no-report",
    ).stdout.strip()
    assert _wait_status(second, address, {"RUNNING"}) == "RUNNING"
    assert farm("cancel", second, "--address", address).returncode == 0
    assert _wait_status(second, address, {"STOPPED", "FAILED"}) == "STOPPED"
    assert not (tmp_path / "never.mp4").exists()

    missing = farm("status", "no-such-job", "--address", address)
    assert missing.returncode != 0 and missing.stderr.startswith("farm: error:")
