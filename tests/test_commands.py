"""ffmpeg argv builders and the binary's resolution order."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from farm.errors import FfmpegFailed, SpecError
from farm.media.audio import RawAudio
from farm.media.commands import mux_argv
from farm.media.ffmpeg import ffmpeg_binary, run_ffmpeg
from farm.media.probe import ColorTags


def test_mux_argv_copies_video_encodes_audio_once_and_restores_tags() -> None:
    argv = mux_argv(
        "ffmpeg",
        Path("v.mp4"),
        RawAudio(Path("a.f32"), 48000, 6, "5.1", 1000),
        Path("o.mp4"),
        container="mp4",
        rotation=90,
        color=ColorTags(1, 1, 1, 1),
        metadata={"syncfarm_job_id": "abc"},
    )
    assert argv == [
        "ffmpeg",
        "-display_rotation",
        "90",
        "-i",
        "v.mp4",
        "-f",
        "f32le",
        "-ar",
        "48000",
        "-ch_layout",
        "5.1",
        "-i",
        "a.f32",
        "-map",
        "0:v:0",
        "-map",
        "1:a:0",
        "-f",
        "mp4",
        "-b:a",
        "192k",
        "-c:a",
        "aac",
        "-c:v",
        "copy",
        "-color_primaries",
        "1",
        "-color_range",
        "1",
        "-color_trc",
        "1",
        "-colorspace",
        "1",
        "-metadata:g:0",
        "syncfarm_job_id=abc",
        "-movflags",
        "+faststart+use_metadata_tags",
        "o.mp4",
        "-y",
    ]


def test_mux_argv_without_audio_or_tags() -> None:
    argv = mux_argv(
        "ff", Path("v.mp4"), None, Path("o.mkv"), container="matroska", color=ColorTags(0, 2, 2, 2)
    )
    assert argv == [
        "ff",
        "-i",
        "v.mp4",
        "-map",
        "0:v:0",
        "-f",
        "matroska",
        "-c:v",
        "copy",
        "o.mkv",
        "-y",
    ]


def _fake_binary(path: Path) -> Path:
    path.write_text("#!/bin/sh\necho boom >&2\nexit 3\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_binary_resolution_order(tmp_path: Path) -> None:
    explicit = _fake_binary(tmp_path / "my-ffmpeg")
    assert ffmpeg_binary({"FARM_FFMPEG": str(explicit), "PATH": ""}) == str(explicit)
    system_dir = tmp_path / "bin"
    system_dir.mkdir()
    system = _fake_binary(system_dir / "ffmpeg")
    assert ffmpeg_binary({"PATH": str(system_dir)}) == str(system)
    bundled = ffmpeg_binary({"PATH": str(tmp_path / "nowhere")})
    assert "imageio_ffmpeg" in bundled and os.access(bundled, os.X_OK)
    with pytest.raises(SpecError, match="FARM_FFMPEG"):
        ffmpeg_binary({"FARM_FFMPEG": str(tmp_path / "missing")})


def test_runner_keeps_stderr_in_the_error(tmp_path: Path) -> None:
    binary = _fake_binary(tmp_path / "ffmpeg")
    with pytest.raises(FfmpegFailed) as info:
        run_ffmpeg([str(binary), "-i", "x"])
    assert info.value.returncode == 3
    assert "boom" in str(info.value) and info.value.argv == [str(binary), "-i", "x"]
