"""`farm eval`: a report and metrics for any output, and one clear line for what cannot be judged.

Run through the CLI's own `main` in this process (`farm_cli`); the fast judges only, except where a
test is about the files written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from farm.media.ffmpeg import ffmpeg_binary, run_ffmpeg
from tests.conftest import farm_cli, media_path

FAST = ("--judge", "coverage", "--judge", "fidelity")


def _one_line_error(result: object, *words: str) -> None:
    code, err = result.returncode, result.stderr  # type: ignore[attr-defined]
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("farm: error:"), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], lines[0]


def test_eval_writes_the_page_and_the_metrics(
    grid_clip: Path, passthrough: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    result = farm_cli(
        "eval", str(grid_clip), str(passthrough), "-o", str(out), "--samples", "10",
        "--judge", "identity", *FAST, "--judge", "lip_sync",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["coverage"]["faces_changed"] == 0
    assert metrics["identity_similarity"]["mean_to_identity"] is None  # no --identity
    assert metrics["lip_sync"]["offset_ms"] is not None
    assert abs(metrics["lip_sync"]["offset_ms"]) <= 40
    assert metrics["provenance"]["verdict"] == "labelled"
    page = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="contact-sheet"' in page and 'id="metrics"' in page
    assert "SSIM source-output" in result.stdout and "lip sync" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "report.html"]


def test_eval_defaults_to_a_folder_beside_the_output(
    grid_clip: Path, passthrough: Path, tmp_path: Path
) -> None:
    output = tmp_path / "copy.mp4"
    output.write_bytes(passthrough.read_bytes())
    result = farm_cli("eval", str(grid_clip), str(output), *FAST, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["frames"] == 100
    assert (tmp_path / "copy.mp4.eval" / "report.html").is_file()


@pytest.fixture(scope="module")
def shorter(grid_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("short") / "short.mp4"
    run_ffmpeg([ffmpeg_binary(), "-loglevel", "error", "-y", "-i", str(grid_clip),
                "-frames:v", "60", "-c:v", "libx264", "-an", str(out)])  # fmt: skip
    return out


@pytest.fixture(scope="module")
def faceless(grid_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The clip's length and size, showing a grey field: no face anywhere."""
    out = tmp_path_factory.mktemp("faceless") / "grey.mp4"
    run_ffmpeg([ffmpeg_binary(), "-loglevel", "error", "-y", "-i", str(grid_clip),
                "-vf", "lutrgb=r=128:g=128:b=128", "-c:v", "libx264", "-c:a", "copy",
                str(out)])  # fmt: skip
    return out


def test_bad_inputs_are_one_line_each(
    grid_clip: Path, passthrough: Path, shorter: Path, faceless: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "nope.mp4"
    _one_line_error(farm_cli("eval", str(missing), str(passthrough)), "input", "does not exist")
    _one_line_error(farm_cli("eval", str(grid_clip), str(missing)), "output", "does not exist")
    text = tmp_path / "notes.txt"
    text.write_text("not a video")
    _one_line_error(farm_cli("eval", str(grid_clip), str(text)), str(text))
    _one_line_error(
        farm_cli("eval", str(grid_clip), str(shorter), *FAST), "60 frames", "100", "frame for frame"
    )
    _one_line_error(
        farm_cli("eval", str(grid_clip), str(faceless), *FAST), "no face", "not a face swap"
    )
    _one_line_error(farm_cli("eval", str(grid_clip), str(passthrough), "--pairs", "0"), "--pairs")
    _one_line_error(
        farm_cli("eval", str(grid_clip), str(passthrough), "--judge", "beauty"), "--judge"
    )
    _one_line_error(
        farm_cli("eval", str(grid_clip), str(passthrough), "--identity", str(tmp_path)),
        str(tmp_path),
    )
    blocked = tmp_path / "file"
    blocked.write_text("")
    _one_line_error(
        farm_cli("eval", str(grid_clip), str(passthrough), *FAST, "-o", str(blocked)), "--out-dir"
    )
    assert not list(tmp_path.glob("*.eval"))


@pytest.mark.parametrize(("moved", "expected_ms"), [("audio", 120), ("video", -120)])
def test_a_track_moved_by_itsoffset_is_measured_where_it_plays(
    grid_clip: Path, tmp_path: Path, moved: str, expected_ms: int
) -> None:
    """``-itsoffset`` moves timestamps only (the samples stay as they were): the evaluation must
    place the audio by its start time, as a player does."""
    out = tmp_path / f"{moved}-later.mp4"
    late, early = ("1", "0") if moved == "audio" else ("0", "1")
    run_ffmpeg([ffmpeg_binary(), "-loglevel", "error", "-y", "-i", str(grid_clip),
                "-itsoffset", "0.12", "-i", str(grid_clip), "-map", f"{early}:v",
                "-map", f"{late}:a", "-c", "copy", str(out)])  # fmt: skip
    result = farm_cli("eval", str(grid_clip), str(out), "--judge", "lip_sync", "--json")
    assert result.returncode == 0, result.stderr
    offset = json.loads(result.stdout)["lip_sync"]["offset_ms"]
    assert abs(offset - expected_ms) <= 40, offset


def test_a_mouth_that_does_not_follow_the_speech_gets_no_offset(
    grid_clip: Path, tmp_path: Path
) -> None:
    """Someone else's speech under the talkers: the correlation has no real peak, so no offset is
    claimed (an offset read off noise would send a reviewer chasing a sync problem)."""
    out = tmp_path / "dubbed-over.mp4"
    speech = media_path("audio/ljspeech_LJ001-0001.wav")
    run_ffmpeg([ffmpeg_binary(), "-loglevel", "error", "-y", "-i", str(grid_clip), "-i",
                str(speech), "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac",
                "-shortest", str(out)])  # fmt: skip
    result = farm_cli("eval", str(grid_clip), str(out), "--judge", "lip_sync", "--json")
    assert result.returncode == 0, result.stderr
    sync = json.loads(result.stdout)["lip_sync"]
    assert sync["offset_ms"] is None and sync["confidence"] < sync["min_confidence"], sync
    assert sync["source_offset_ms"] is not None and abs(sync["source_offset_ms"]) <= 40
