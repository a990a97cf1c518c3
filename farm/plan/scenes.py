"""Scene cuts with PySceneDetect on a downscaled decode, as frame indices of the timeline."""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

from farm.errors import MediaError, plain_reason
from farm.media.probe import VideoInfo

log = logging.getLogger(__name__)

SCORE_KEY = "content_val"


@dataclass(frozen=True)
class SceneCuts:
    """Where scenes start (frame indices > 0) and the per-frame content score used to place splits.

    ``scores[i]`` is how different frame ``i`` is from frame ``i - 1`` (0 for frame 0).
    """

    cuts: tuple[int, ...]
    scores: tuple[float, ...]


def _index_at_seconds(video: VideoInfo, seconds: float) -> int:
    """Nearest timeline index to a time measured from the first frame (works for VFR too)."""
    target = video.frame_pts[0] + Fraction(seconds) / video.time_base
    pts = video.frame_pts
    i = bisect.bisect_left(pts, target)
    if i == 0:
        return 0
    if i >= len(pts):
        return len(pts) - 1
    return i if pts[i] - target < target - pts[i - 1] else i - 1


def detect_cuts(
    path: Path,
    video: VideoInfo,
    detector: Literal["adaptive", "content"] = "content",
    min_scene_frames: int = 15,
) -> SceneCuts:
    """Run PySceneDetect over the whole video (auto-downscaled) and return cuts and scores."""
    from scenedetect import (
        AdaptiveDetector,
        ContentDetector,
        SceneManager,
        StatsManager,
        open_video,
    )

    try:
        stream = open_video(str(path), backend="opencv")
    except Exception as exc:  # scenedetect raises several unrelated types for unreadable files
        raise MediaError(
            f"{path}: scene detection could not open the video: {plain_reason(exc)}"
        ) from None
    stats = StatsManager()
    manager = SceneManager(stats_manager=stats)
    manager.auto_downscale = True
    min_len = max(1, min_scene_frames)
    if detector == "adaptive":
        manager.add_detector(AdaptiveDetector(min_scene_len=min_len))
    else:
        manager.add_detector(ContentDetector(min_scene_len=min_len))
    manager.detect_scenes(stream)

    cuts: set[int] = set()
    for timecode in manager.get_cut_list():
        index = (
            _index_at_seconds(video, timecode.seconds) if video.is_vfr else int(timecode.frame_num)
        )
        if 0 < index < video.frame_count:
            cuts.add(index)
    scores = [0.0] * video.frame_count
    for i in range(1, video.frame_count):
        if stats.metrics_exist(i, [SCORE_KEY]):
            value = stats.get_metrics(i, [SCORE_KEY])[0]
            scores[i] = float(value) if value is not None else 0.0
    log.info("scene detection: %d cuts in %d frames", len(cuts), video.frame_count)
    return SceneCuts(cuts=tuple(sorted(cuts)), scores=tuple(scores))
