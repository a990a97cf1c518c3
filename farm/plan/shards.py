"""Shard plans: scenes clamped to a length cap, split where the picture changes most.

::

    frames   0 ......... 120 ..................................... 430 ...... 500
    cuts                  |                                        |
    scenes   [  scene 0  )[            scene 1 (310 > cap 250)     )[ scene 2 )
    shards   [ shard 0   )[   shard 1        )[     shard 2        )[ shard 3 )
                                              ^ forced split at the best content score inside
                                                the window; shard 2 decodes `overlap` frames
                                                before it as tracker context, never emits them

Every index is an integer position on the probed timeline; ranges are half-open ``[start, stop)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    """A view of the source: frames ``[start, stop)``, decoded from ``context_start``."""

    index: int
    start: int
    stop: int
    context_start: int
    starts_at_cut: bool
    """True at frame 0 and at real scene cuts; False at forced splits inside a long scene."""

    @property
    def name(self) -> str:
        """Sortable, zero-padded name used for the shard's files and ledger entry."""
        return f"{self.index:05d}"

    @property
    def frames(self) -> int:
        return self.stop - self.start


def _merge_short_scenes(bounds: list[int], min_frames: int) -> list[int]:
    """Drop boundaries so that no scene is shorter than ``min_frames`` (when the video allows)."""
    merged = list(bounds)
    changed = True
    while changed and len(merged) > 2:
        changed = False
        for i in range(len(merged) - 1):
            if merged[i + 1] - merged[i] < min_frames:
                # Merge the short scene into its shorter neighbour by removing a shared boundary.
                if i == 0:
                    drop = 1
                elif i + 1 == len(merged) - 1:
                    drop = i
                else:
                    left = merged[i] - merged[i - 1]
                    right = merged[i + 2] - merged[i + 1]
                    drop = i if left <= right else i + 1
                del merged[drop]
                changed = True
                break
    return merged


def _split_long_scene(
    start: int, stop: int, max_frames: int, min_frames: int, scores: Sequence[float] | None
) -> list[int]:
    """Interior split points of ``[start, stop)`` so that every piece is at most ``max_frames``.

    Each split is placed at the highest content score inside the window of feasible positions,
    weighted from 1.0 at the even-split position down to 0.5 at the window's edges.
    """
    splits: list[int] = []
    prev = start
    pieces = math.ceil((stop - start) / max_frames)
    for remaining in range(pieces, 1, -1):
        lo = max(prev + min_frames, stop - (remaining - 1) * max_frames, prev + 1)
        hi = min(prev + max_frames, stop - (remaining - 1) * min_frames, stop - 1)
        if lo > hi:  # the minimum cannot be honoured; the cap always is
            lo = hi = min(prev + max_frames, stop - 1)
        ideal = prev + (stop - prev) / remaining
        best, best_value = round(min(max(ideal, lo), hi)), -1.0
        if scores is not None:
            half = max(hi - lo, 1) / 2
            for candidate in range(lo, hi + 1):
                weight = 1.0 - 0.5 * min(abs(candidate - ideal) / half, 1.0)
                value = scores[candidate] * weight
                if value > best_value:
                    best, best_value = candidate, value
        splits.append(best)
        prev = best
    return splits


def plan_shards(
    frame_count: int,
    cuts: Sequence[int],
    *,
    max_frames: int,
    min_frames: int,
    overlap: int = 0,
    scores: Sequence[float] | None = None,
) -> list[Shard]:
    """Cut ``[0, frame_count)`` into shards at scene cuts, capped at ``max_frames`` per shard.

    Scenes shorter than ``min_frames`` are merged into a neighbour. Forced splits get up to
    ``overlap`` frames of context from the same scene.
    """
    if frame_count <= 0:
        raise ValueError("frame_count must be positive")
    if max_frames < 1:
        raise ValueError("max_frames must be at least 1")
    min_frames = max(1, min(min_frames, max_frames))
    if scores is not None and len(scores) != frame_count:
        raise ValueError(f"scores has {len(scores)} entries for {frame_count} frames")
    bounds = sorted({0, frame_count, *(c for c in cuts if 0 < c < frame_count)})
    bounds = _merge_short_scenes(bounds, min_frames)

    shards: list[Shard] = []
    for scene_start, scene_stop in itertools.pairwise(bounds):
        edges = [scene_start]
        if scene_stop - scene_start > max_frames:
            edges += _split_long_scene(scene_start, scene_stop, max_frames, min_frames, scores)
        edges.append(scene_stop)
        for i, (a, b) in enumerate(itertools.pairwise(edges)):
            forced = i > 0
            context = max(scene_start, a - overlap) if forced else a
            shards.append(
                Shard(
                    index=len(shards),
                    start=a,
                    stop=b,
                    context_start=context,
                    starts_at_cut=not forced,
                )
            )
    return shards


def schedule_order(shards: Sequence[Shard]) -> list[Shard]:
    """Longest first, so the tail of the job is short; ties keep timeline order."""
    return sorted(shards, key=lambda s: (-s.frames, s.index))
