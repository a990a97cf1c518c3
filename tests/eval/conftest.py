"""Evaluation fixtures: a short real clip with two talkers and a cut, and its passthrough."""

from __future__ import annotations

from pathlib import Path

import pytest

from farm.media.ffmpeg import ffmpeg_binary, run_ffmpeg
from farm.spec import JobSpec
from tests.conftest import media_path
from tests.jobs import run_local


@pytest.fixture(scope="session")
def grid_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("grid") / "grid4s.mp4"
    run_ffmpeg(
        [ffmpeg_binary(), "-loglevel", "error", "-y", "-i",
         str(media_path("video/grid_hardcuts_4_speakers_12s.mp4")), "-frames:v", "100", "-t", "4",
         "-c:v", "libx264", "-crf", "16", "-c:a", "aac", str(out)]
    )  # fmt: skip
    return out


@pytest.fixture(scope="session")
def passthrough(grid_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pass") / "pass.mp4"
    spec = JobSpec.model_validate({"input": grid_clip, "output": out, "passthrough": True})
    run_local(spec, judges=False)
    return out
