"""Object storage: s3:// inputs, outputs and work dirs against moto's S3 server on 127.0.0.1.

The same job with its input, work dir and output in a bucket gives the same job id and the same
video stream as on local paths; its finished shards survive in the bucket and are reused; bad
URLs are one line. Nothing here reaches AWS: the endpoint is moto's, and the instance metadata
service and shared credential files are switched off.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest

from farm.chaos import ChaosSettings
from farm.errors import FarmError, SpecError, StorageError
from farm.pipeline.report import JobReport
from farm.spec import JobSpec, parse_spec
from tests.clips import ClipRecipe, make_clip
from tests.conftest import farm, farm_cli
from tests.jobs import run_local

pytestmark = [pytest.mark.timeout(300)]

BUCKET = "farm"
VIDEO = {"max_shard_s": 0.5, "min_shard_s": 0.2}
CLI_VIDEO = ("--max-shard-seconds", "0.5", "--min-shard-seconds", "0.2")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server with bucket ``farm``; the AWS variables point at it for this module
    (set in os.environ: `farm` subprocesses and their Ray workers inherit them)."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    none = str(tmp_path_factory.mktemp("no-aws") / "absent")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            patch.delenv(name, raising=False)
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_SHARED_CREDENTIALS_FILE": none,
            "AWS_CONFIG_FILE": none,
        }.items():
            patch.setenv(name, value)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    server.stop()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(
        ClipRecipe("s3clip", seconds=2.0, size="160x120", scene_seconds=1.0),
        tmp_path_factory.mktemp("s3-clips"),
    )


@pytest.fixture(scope="module")
def s3_input(s3: str, clip: Path) -> str:
    from farm.objectstore import upload

    url = f"s3://{BUCKET}/in/{clip.name}"
    upload(clip, url)
    return url


@pytest.fixture(scope="module")
def local_job(clip: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[JobReport, Path]:
    """The reference: the same job on local paths."""
    out = tmp_path_factory.mktemp("s3-local") / "local.mp4"
    spec = JobSpec.model_validate(
        {"input": clip, "output": out, "passthrough": True, "video": VIDEO}
    )
    return run_local(spec), out


def _packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(video=0) if p.size]


def _get(url: str, local: Path) -> Path:
    from farm.objectstore import download

    download(url, local)
    return local


def _exists(url: str) -> bool:
    from farm.objectstore import filesystem

    fs, path = filesystem(url)
    return bool(fs.exists(path))


def _remote_spec(s3_input: str, name: str, **extra: Any) -> JobSpec:
    return parse_spec(
        {
            "input": s3_input,
            "output": f"s3://{BUCKET}/out/{name}.mp4",
            "work_dir": f"s3://{BUCKET}/work/{name}",
            "passthrough": True,
            "video": VIDEO,
            **extra,
        }
    )


def _one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("farm: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


# -- URLs in a spec ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("foo://bucket/in.mp4", "unknown storage protocol 'foo'"),
        ("s3://", "names no bucket"),
        ("s3:///in.mp4", "names no bucket"),
        ("s3://bucket", "no object key"),
    ],
)
def test_bad_urls_name_the_field(value: str, needle: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec({"input": value, "output": "/tmp/o.mp4", "passthrough": True})
    assert info.value.one_line().startswith(f"input {value}")
    assert needle in info.value.one_line()


def test_urls_become_node_local_stand_ins_outside_the_jobs_identity(tmp_path: Path) -> None:
    from farm.objectstore import bind_remote, staging_root

    spec = parse_spec(
        {
            "input": "s3://b/clips/in.mp4",
            "output": "s3://b/out/o.mp4",
            "work_dir": "s3://b/work/w/",
            "passthrough": True,
        }
    )
    root = staging_root().resolve()
    assert spec.remote is not None
    assert (spec.remote.input, spec.remote.output, spec.remote.work_dir) == (
        "s3://b/clips/in.mp4",
        "s3://b/out/o.mp4",
        "s3://b/work/w",
    )
    assert spec.input.parent.parent == root / "inputs" and spec.input.name == "in.mp4"
    assert spec.output.name == "o.mp4" and spec.work_dir is not None
    local = parse_spec(
        {"input": tmp_path / "x.mp4", "output": tmp_path / "y.mp4", "passthrough": True}
    )
    assert local.remote is None
    assert spec.content_hash() == local.content_hash()
    # A spec read back on a node with another staging root gets that node's stand-ins.
    moved = bind_remote(spec.model_dump(mode="json"), tmp_path / "other")
    assert moved["input"] == (tmp_path / "other").resolve() / spec.input.relative_to(root)
    assert moved["remote"]["output"] == "s3://b/out/o.mp4"
    assert JobSpec.model_validate(spec.model_dump(mode="json")) == spec
    # No work dir: one beside the output URL, like the local default, removed when done.
    default = parse_spec({"input": "/tmp/a.mp4", "output": "s3://b/o.mov", "passthrough": True})
    assert default.remote is not None and default.remote.default_work_dir
    assert default.remote.work_dir == "s3://b/.o.mov.farm-work" and default.work_dir is None
    with pytest.raises(SpecError, match="must not overwrite the input"):
        parse_spec({"input": "s3://b/a.mp4", "output": "s3://b/a.mp4", "passthrough": True})


def test_without_s3fs_an_s3_url_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "s3fs" else real(name, *a)
    )
    with pytest.raises(SpecError) as info:
        parse_spec({"input": "s3://b/in.mp4", "output": "/tmp/o.mp4", "passthrough": True})
    assert "pip install 'syncfarm[s3]'" in info.value.one_line()


# -- the staging cache ----------------------------------------------------------------------


def test_staging_cache_is_atomic_reused_and_follows_the_object(
    s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from farm import objectstore

    source = tmp_path / "a.bin"
    source.write_bytes(b"first" * 100)
    url = f"s3://{BUCKET}/cache/a.bin"
    objectstore.upload(source, url)
    local = tmp_path / "stage" / "a.bin"
    downloads: list[str] = []
    real_download = objectstore.download

    def counting(u: str, path: Path) -> None:
        downloads.append(u)
        real_download(u, path)

    monkeypatch.setattr(objectstore, "download", counting)
    _, version = objectstore.stage_object(url, local)
    assert local.read_bytes() == b"first" * 100 and len(downloads) == 1
    assert objectstore.stage_object(url, local) == (local, version) and len(downloads) == 1
    source.write_bytes(b"second" * 100)
    objectstore.upload(source, url)
    _, changed = objectstore.stage_object(url, local)
    assert changed != version and local.read_bytes() == b"second" * 100 and len(downloads) == 2
    with pytest.raises(StorageError, match="changed after the job was planned"):
        objectstore.stage_object(url, local, expect=version)
    # A download that breaks half-way leaves neither a partial copy nor its temporary file.
    fresh = tmp_path / "fresh" / "a.bin"

    def broken_get(rpath: str, lpath: str, **kwargs: Any) -> None:
        Path(lpath).write_bytes(b"half")
        raise ConnectionError("connection reset")

    fs, _ = objectstore.filesystem(url)
    monkeypatch.setattr(fs, "get_file", broken_get)  # fsspec makes sync methods per instance
    with pytest.raises(StorageError) as info:
        objectstore.stage_object(url, fresh)
    assert info.value.retryable and "did not answer" in info.value.one_line()
    assert list(fresh.parent.iterdir()) == []


def test_the_storage_check_reaches_the_bucket(s3: str) -> None:
    from farm.pipeline.storage import StorageAccess, check_access, storage_error

    fine = StorageAccess(read=(), write=(), remote_write=(f"s3://{BUCKET}/work/check",))
    assert check_access(fine) == []
    missing = StorageAccess(read=(), write=(), remote_read=("s3://no-such-bucket/in.mp4",))
    error = storage_error("n1", check_access(missing))
    assert isinstance(error, FarmError) and not error.retryable
    assert "node n1 cannot read s3://no-such-bucket/in.mp4: its bucket does not exist" in str(error)


# -- whole jobs -----------------------------------------------------------------------------


def test_farm_run_on_s3_gives_the_local_jobs_id_and_video_stream(
    s3_input: str, local_job: tuple[JobReport, Path], tmp_path: Path
) -> None:
    """`farm run` (Ray, a job actor, worker actors) with every location in the bucket."""
    local_report, local_out = local_job
    out_url, work_url = f"s3://{BUCKET}/out/cli.mp4", f"s3://{BUCKET}/work/cli"
    result = farm(
        "run", s3_input, "-o", out_url, "--work-dir", work_url, "--passthrough", "--json",
        "--no-report", *CLI_VIDEO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["job_id"] == local_report.job_id
    assert (report["input"], report["output"]) == (s3_input, out_url)
    assert report["settings"]["work_dir"] == work_url and report["shards_reused"] == []
    assert report["output_sha256"] != "" and report["shards"] == local_report.shards >= 3
    output = _get(out_url, tmp_path / "cli.mp4")
    assert _packets(output) == _packets(local_out)
    uploaded = json.loads(_get(f"{out_url}.report.json", tmp_path / "r.json").read_text())
    assert uploaded["job_id"] == report["job_id"] and uploaded["output"] == out_url
    from farm.objectstore import list_files

    remote_work = list_files(work_url)
    assert "ledger.json" in remote_work
    assert sum(name.startswith("shards/") for name in remote_work) == report["shards"], remote_work
    # `farm resume` by URL, from nothing local: every shard comes back from the bucket.
    from farm.objectstore import filesystem

    fs, path = filesystem(out_url)
    fs.rm_file(path)
    resumed = farm("resume", work_url, "--json")
    assert resumed.returncode == 0, resumed.stderr
    again = json.loads(resumed.stdout)
    assert len(again["shards_reused"]) == report["shards"] and again["job_id"] == report["job_id"]
    assert _packets(_get(out_url, tmp_path / "again.mp4")) == _packets(local_out)


def test_finished_shards_in_the_bucket_survive_a_failure_and_are_reused(
    s3_input: str, local_job: tuple[JobReport, Path], tmp_path: Path
) -> None:
    from farm.objectstore import list_files, staging_root

    local_report, local_out = local_job
    shards = local_report.shard_ranges
    # The last unit in schedule order (longest first, ties in timeline order) fails, after
    # every other shard is done.
    last = sorted(range(len(shards)), key=lambda i: (shards[i][0] - shards[i][1], i))[-1]
    chaos = ChaosSettings(marker_dir=tmp_path / "chaos", fail_unit=f"shard {last:05d}")
    spec = _remote_spec(s3_input, "resume", chaos=chaos)
    assert spec.remote is not None
    with pytest.raises(FarmError, match="injected failure"):
        run_local(spec)
    assert not _exists(spec.remote.output or ""), "nothing at the output URL after a failure"
    ledger = json.loads(
        _get(f"{spec.remote.work_dir}/ledger.json", tmp_path / "l.json").read_text()
    )
    done = sorted(ledger["done"])
    assert len(done) == len(shards) - 1
    files = {record["path"] for record in ledger["done"].values()}
    assert files <= set(list_files(spec.remote.work_dir or "")), "each done shard is uploaded"
    # Another node: nothing staged locally, everything comes from the bucket.
    import shutil

    shutil.rmtree(staging_root() / "work", ignore_errors=True)
    shutil.rmtree(staging_root() / "inputs", ignore_errors=True)
    report = run_local(_remote_spec(s3_input, "resume"))
    assert report.shards_reused == done
    assert report.job_id == local_report.job_id
    assert _packets(_get(report.output, tmp_path / "resumed.mp4")) == _packets(local_out)


def test_bad_locations_are_one_line_before_any_cluster(
    s3: str, s3_input: str, clip: Path, tmp_path: Path
) -> None:
    out = str(tmp_path / "o.mp4")
    _one_line_error(
        farm_cli("run", "ftp2://host/in.mp4", "-o", out, "--passthrough"),
        "unknown storage protocol 'ftp2'",
    )
    _one_line_error(
        farm_cli("run", "s3://no-such-bucket/in.mp4", "-o", out, "--passthrough"),
        "s3://no-such-bucket/in.mp4",
        "bucket does not exist",
    )
    _one_line_error(
        farm_cli("run", str(clip), "-o", "s3://no-such-bucket/o.mp4", "--passthrough"),
        "bucket does not exist",
    )
    _one_line_error(
        farm_cli("run", str(clip), "-o", out, "--work-dir", "s3://", "--passthrough"),
        "--work-dir",
        "names no bucket",
    )
    _one_line_error(farm_cli("resume", f"s3://{BUCKET}/no-job"), "ledger.json")
    # A fresh process (credentials are read once per process): none set, none found.
    _one_line_error(
        farm(
            "run", s3_input, "-o", out, "--passthrough",
            env={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""},
        ),
        "no credentials",
        "AWS_ACCESS_KEY_ID",
    )  # fmt: skip
    assert not Path(out).exists()
