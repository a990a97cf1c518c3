"""Shard plans: property tests over random cut lists and lengths."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from farm.plan.shards import plan_shards, schedule_order


@st.composite
def plans(draw: st.DrawFn) -> tuple[int, list[int], int, int, int]:
    frames = draw(st.integers(1, 3000))
    cuts = draw(st.lists(st.integers(0, frames), max_size=40))
    max_frames = draw(st.integers(1, 400))
    min_frames = draw(st.integers(0, 60))
    overlap = draw(st.integers(0, 8))
    return frames, cuts, max_frames, min_frames, overlap


@settings(max_examples=300, deadline=None)
@given(plans())
def test_shards_tile_the_timeline_and_respect_the_cap(
    case: tuple[int, list[int], int, int, int],
) -> None:
    frames, cuts, max_frames, min_frames, overlap = case
    shards = plan_shards(
        frames, cuts, max_frames=max_frames, min_frames=min_frames, overlap=overlap
    )
    assert shards[0].start == 0 and shards[-1].stop == frames
    for a, b in itertools.pairwise(shards):
        assert a.stop == b.start, "no gap, no overlap of emitted frames"
    assert [s.index for s in shards] == list(range(len(shards)))
    for s in shards:
        assert 1 <= s.frames <= max_frames
        assert s.context_start <= s.start
        if s.starts_at_cut:
            assert s.context_start == s.start, "nothing is carried across a scene cut"
        else:
            assert s.start - s.context_start <= overlap
    # Context never reaches back over a real cut.
    real_starts = [s.start for s in shards if s.starts_at_cut]
    for s in shards:
        previous_cut = max(c for c in real_starts if c <= s.start)
        assert s.context_start >= previous_cut


@settings(max_examples=200, deadline=None)
@given(st.integers(50, 2000), st.data())
def test_well_spaced_cuts_become_shard_edges(frames: int, data: st.DataObject) -> None:
    min_frames = 10
    cuts = sorted(data.draw(st.sets(st.integers(min_frames, frames - min_frames), max_size=20)))
    spaced = [c for i, c in enumerate(cuts) if i == 0 or c - cuts[i - 1] >= min_frames]
    spaced = [c for i, c in enumerate(spaced) if i == 0 or c - spaced[i - 1] >= min_frames]
    shards = plan_shards(frames, spaced, max_frames=frames, min_frames=min_frames)
    edges = {s.start for s in shards if s.starts_at_cut}
    for cut in spaced:
        if all(abs(cut - other) >= min_frames for other in spaced if other != cut):
            assert cut in edges


def test_split_goes_to_the_strongest_change_in_the_window() -> None:
    scores = [0.0] * 300
    scores[130] = 50.0  # a soft cut inside a 300-frame scene, not at the midpoint
    shards = plan_shards(300, [], max_frames=250, min_frames=10, overlap=4, scores=scores)
    assert [(s.start, s.stop) for s in shards] == [(0, 130), (130, 300)]
    assert not shards[1].starts_at_cut and shards[1].context_start == 126


def test_short_scenes_merge_and_order_is_longest_first() -> None:
    shards = plan_shards(100, [5, 50], max_frames=100, min_frames=10)
    assert [(s.start, s.stop) for s in shards] == [(0, 50), (50, 100)]
    ordered = schedule_order(plan_shards(100, [20, 90], max_frames=100, min_frames=1))
    assert [s.frames for s in ordered] == [70, 20, 10]
