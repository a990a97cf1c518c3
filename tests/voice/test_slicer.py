"""The slicer: slicer2 on generated signals (Hypothesis) and on the real speech clips."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from farm.voice.settings import SlicerSettings
from farm.voice.signal import peak_normalise_gain
from farm.voice.slicer import plan_slices, slice_audio
from tests.voice.helpers import bursts, load_mono

RATES = st.sampled_from([8000, 16000, 22050])


def segment_lists(min_gap_ms: int) -> st.SearchStrategy[list[tuple[bool, int]]]:
    pair = st.tuples(st.integers(50, 1500), st.integers(min_gap_ms, 2000))
    lead = st.integers(0, 1500)
    return st.tuples(lead, st.lists(pair, min_size=1, max_size=14)).map(
        lambda lp: [(False, lp[0])] + [seg for b, g in lp[1] for seg in ((True, b), (False, g))]
    )


def _assert_covers_and_cuts_in_silence(
    clips: list[tuple[int, int]], loud: list[tuple[int, int]], n: int
) -> None:
    assert all(isinstance(a, int) and isinstance(b, int) for a, b in clips)
    assert all(0 <= a < b <= n for a, b in clips)
    assert all(b1 <= a2 for (_, b1), (a2, _) in itertools.pairwise(clips)), clips
    covered = np.zeros(n, dtype=bool)
    for a, b in clips:
        covered[a:b] = True
    for a, b in loud:
        assert covered[a:b].all(), f"burst [{a}, {b}) not fully covered by {clips}"
    cuts = {a for a, _ in clips} | {b for _, b in clips}
    for cut in cuts - {0, n}:
        inside = [(a, b) for a, b in loud if a < cut < b]
        assert not inside, f"cut at {cut} falls inside burst {inside}"


@settings(max_examples=40, deadline=None)
@given(
    segments=segment_lists(min_gap_ms=10),
    rate=RATES,
    min_length_ms=st.sampled_from([300, 1000, 4000]),
    max_sil_kept_ms=st.sampled_from([10, 100, 500, 1500]),
)
def test_first_pass_keeps_every_loud_sample_and_cuts_in_silence(
    segments: list[tuple[bool, int]], rate: int, min_length_ms: int, max_sil_kept_ms: int
) -> None:
    audio, loud = bursts(segments, rate)
    cfg = SlicerSettings(
        min_length_ms=min_length_ms, max_sil_kept_ms=max_sil_kept_ms, min_sentence_ms=0
    )
    clips = slice_audio(audio, rate, cfg)
    _assert_covers_and_cuts_in_silence(clips, loud, audio.size)


@settings(max_examples=40, deadline=None)
@given(
    segments=segment_lists(min_gap_ms=60),
    rate=RATES,
    max_sentence_ms=st.sampled_from([3000, 5000, 10000]),
    min_sentence_ms=st.sampled_from([0, 500, 1000]),
)
def test_second_pass_caps_length_merges_fragments_and_loses_nothing(
    segments: list[tuple[bool, int]], rate: int, max_sentence_ms: int, min_sentence_ms: int
) -> None:
    audio, loud = bursts(segments, rate)
    cfg = SlicerSettings(max_sentence_ms=max_sentence_ms, min_sentence_ms=min_sentence_ms)
    clips = plan_slices(audio, rate, cfg)
    _assert_covers_and_cuts_in_silence(clips, loud, audio.size)
    max_len = rate * max_sentence_ms // 1000
    # a clip is only over the cap when a single first-pass clip had no pause to cut at
    assert all(b - a <= max_len + 1 for a, b in clips), [(b - a) / rate for a, b in clips]
    min_len = rate * min_sentence_ms // 1000
    for k, (a, b) in enumerate(clips):
        if b - a < min_len:  # a fragment survives only when no neighbour can take it
            if k > 0:
                assert b - clips[k - 1][0] > max_len
            if k + 1 < len(clips):
                assert clips[k + 1][1] - a > max_len


def test_slicer_reproduces_slicer2_leading_and_middle_cuts() -> None:
    rate = 16000
    # 1 s silence, 5 s tone, 0.4 s silence, 2 s tone, 2 s silence
    audio, _ = bursts(
        [(False, 1000), (True, 5000), (False, 400), (True, 2000), (False, 2000)], rate
    )
    clips = slice_audio(audio, rate, SlicerSettings())
    hop = 160
    assert [a % hop for a, _ in clips] == [0] * len(clips), "cuts are quantised to the hop"
    assert len(clips) == 2
    (a0, b0), (a1, b1) = clips
    # leading silence over max_sil_kept (0.5 s) is dropped down to at most 0.5 s before the tone
    assert 16000 - 8000 - 2 * hop <= a0 <= 16000
    # the 0.4 s pause is a single cut (≤ max_sil_kept) inside it
    assert b0 == a1 and 6 * rate <= a1 <= 6.4 * rate
    # trailing 2 s silence: cut within its first 0.5 s
    assert 8.4 * rate <= b1 <= 8.9 * rate + hop


def test_silent_and_empty_audio_give_no_sentences() -> None:
    assert plan_slices(np.zeros(5 * 16000, np.float32), 16000, SlicerSettings()) == []
    assert plan_slices(np.zeros(0, np.float32), 16000, SlicerSettings()) == []
    hiss = np.random.default_rng(0).normal(0, 1e-3, 16000 * 3).astype(np.float32)
    assert plan_slices(hiss, 16000, SlicerSettings()) == []


@pytest.mark.parametrize(
    ("relative", "speech_s"),
    [
        ("audio/ljspeech_LJ001-0001.wav", None),
        ("audio/ljspeech_LJ001-0003.wav", None),
        ("audio/ljspeech_LJ001-0007.wav", None),
        ("audio/grid_bbaf2n.wav", None),
        ("audio/grid_lwbsza.wav", None),
        ("audio/grid_swiz3n.wav", None),
        ("mix/speech_over_music_mix_12s.wav", (1.0, 10.667)),
    ],
)
def test_slices_cover_the_speech_of_real_clips(
    relative: str, speech_s: tuple[float, float] | None
) -> None:
    audio, rate = load_mono(relative)
    cfg = SlicerSettings()
    vocals = audio * peak_normalise_gain(audio, -9.0, -6.0)
    clips = plan_slices(vocals, rate, cfg)
    assert clips, "speech was found"
    covered = np.zeros(audio.size, dtype=bool)
    for a, b in clips:
        covered[a:b] = True
        assert (b - a) <= rate * cfg.max_sentence_ms // 1000
    # every 10 ms frame of the (normalised) speech louder than −30 dBFS lies inside a slice
    hop = rate // 100
    frames = vocals[: vocals.size // hop * hop].reshape(-1, hop)
    loud = np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)) > 10 ** (-30 / 20)
    if speech_s is not None:  # over music: judge on the speech stem's own frames
        stem, _ = load_mono("mix/stem_speech_LJ001-0003_12s.wav")
        stem = stem * peak_normalise_gain(audio, -9.0, -6.0)
        frames = stem[: stem.size // hop * hop].reshape(-1, hop)
        loud = np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)) > 10 ** (-30 / 20)
        first = int(np.flatnonzero(loud)[0]) * hop / rate
        assert speech_s[0] <= first < speech_s[1]
    loud_samples = np.repeat(loud, hop)
    missed = loud_samples & ~covered[: loud_samples.size]
    assert not missed.any(), f"{missed.sum()} loud samples outside the slices {clips}"
