"""The `farm` command line: bad input gives one line on stderr, a non-zero exit, no output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clips import RECIPES, make_clip
from tests.conftest import REPO, farm


def _assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("farm: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


def _no_output(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if ".partial" in p.name]


@pytest.fixture(scope="module")
def good_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(RECIPES["fps25"], tmp_path_factory.mktemp("cli-clips"))


def test_missing_input(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    _assert_one_line_error(
        farm("run", str(tmp_path / "nope.mp4"), "-o", str(out), "--passthrough"), "does not exist"
    )
    _no_output(out)


def test_text_file_named_mp4(tmp_path: Path) -> None:
    fake = tmp_path / "notes.mp4"
    fake.write_text("these are not frames\n" * 20)
    out = tmp_path / "out.mp4"
    _assert_one_line_error(
        farm("run", str(fake), "-o", str(out), "--passthrough"), "not a readable video"
    )
    _no_output(out)


def test_truncated_mp4(good_clip: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.mp4"
    data = good_clip.read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    out = tmp_path / "out.mp4"
    _assert_one_line_error(farm("run", str(cut), "-o", str(out), "--passthrough"), str(cut))
    _no_output(out)


def test_zero_frame_video(tmp_path: Path) -> None:
    import av

    empty = tmp_path / "empty.mkv"  # Matroska keeps a video track that holds no frame
    with av.open(str(empty), "w") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()
    out = tmp_path / "out.mp4"
    _assert_one_line_error(farm("run", str(empty), "-o", str(out), "--passthrough"), str(empty))
    _no_output(out)


def test_unwritable_output_directory(good_clip: Path, tmp_path: Path) -> None:
    out = Path("/proc/farm-cannot-write-here.mp4")  # not writable even for root
    _assert_one_line_error(
        farm("run", str(good_clip), "-o", str(out), "--passthrough"), "not writable"
    )
    assert not out.exists()
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        _assert_one_line_error(
            farm("run", str(good_clip), "-o", str(locked / "o.mp4"), "--passthrough"),
            "not writable",
        )


def test_missing_output_directory_and_bad_settings(good_clip: Path, tmp_path: Path) -> None:
    _assert_one_line_error(
        farm("run", str(good_clip), "-o", str(tmp_path / "no" / "o.mp4"), "--passthrough"),
        "does not exist",
    )
    _assert_one_line_error(
        farm("run", str(good_clip), "-o", str(tmp_path / "o.mp4")), "--identity", "--passthrough"
    )
    _assert_one_line_error(
        farm(
            "run",
            str(good_clip),
            "-o",
            str(tmp_path / "o.mp4"),
            "--passthrough",
            "--intermediate",
            "best",
        ),
        "intermediate",
    )


def test_face_stack_settings_that_cannot_run_are_one_line(
    good_clip: Path, identity_pack: Path, tmp_path: Path
) -> None:
    out = tmp_path / "o.mp4"
    base = ("run", str(good_clip), "-o", str(out), "--identity", str(identity_pack))
    _assert_one_line_error(
        farm(*base, "--face-backend", "classic", "--enhancer", "gfpgan_1.4"),
        "--enhancer",
        "--face-backend onnx",
    )
    # A neural swapper without its file: the file, its sha256, licence and where to get it.
    missing = farm(*base, "--face-backend", "onnx", "--models-dir", str(tmp_path))
    _assert_one_line_error(
        missing, "inswapper_128.onnx", "e4a3f08c753cb72d", "non-commercial", "huggingface.co"
    )
    _no_output(out)


def test_resume_of_a_directory_without_ledger(tmp_path: Path) -> None:
    _assert_one_line_error(farm("resume", str(tmp_path)), "ledger.json")


def test_run_end_to_end_with_json_summary(good_clip: Path, tmp_path: Path) -> None:
    import json

    out = tmp_path / "out.mp4"
    result = farm(
        "run",
        str(good_clip),
        "-o",
        str(out),
        "--passthrough",
        "--json",
        "--max-shard-seconds",
        "1",
        "--min-shard-seconds",
        "0.2",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["output"] == str(out.resolve()) and out.exists()
    assert summary["frames"] == 75 and summary["shards"] >= 3
    for stage in ("probe_s", "plan_s", "render_s", "join_s", "mux_s", "job_s"):
        assert stage in summary["stage_seconds"]
    assert json.loads((tmp_path / "out.mp4.report.json").read_text())["job_id"] == summary["job_id"]
    import jsonschema

    from farm.pipeline.report import SCHEMA_PATH

    jsonschema.validate(summary, json.loads(SCHEMA_PATH.read_text()))
    assert not (tmp_path / ".out.mp4.farm-work").exists(), "default work dir removed on success"
    # the judges ran by default: a report page beside the output, their findings in the report
    assert summary["quality_report"] == str(tmp_path / "out.mp4.report.html")
    assert 'id="metrics"' in (tmp_path / "out.mp4.report.html").read_text(encoding="utf-8")
    quality = summary["quality"]
    assert quality["fidelity"]["ssim_source_output"] > 0.9
    assert quality["provenance"]["verdict"] == "labelled"
    assert quality["skipped"]["identity"] == "no face was found in the input"


def test_help_loads_no_heavy_stack() -> None:
    """`farm --help` must answer at once: Ray, PyAV, OpenCV, SciPy and dlib load in commands."""
    heavy = ("ray", "av", "cv2", "scipy", "dlib", "numpy")
    probe = f"import sys, cli.main; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert loaded.stdout.strip() == "[]", loaded.stdout
    help_text = farm("--help")
    assert help_text.returncode == 0
    for command in (
        "run", "resume", "jobs", "watch", "cancel", "batch", "verify", "eval", "models"
    ):
        assert command in help_text.stdout
