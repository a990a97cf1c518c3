"""Fitting and assembly: exact placement, exact length, stretch band, loudness (Hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from farm.voice.fit import assemble_timeline, fit_sentence, loudness_gain_db
from farm.voice.model import FittedSentence, Sentence, SentenceAudio, SentenceReport
from farm.voice.settings import FitSettings
from farm.voice.signal import voice_channel_gains


def _report(index: int, start: int, n: int) -> SentenceReport:
    return SentenceReport(
        index=index,
        start_sample=start,
        end_sample=start + n,
        start_s=0.0,
        end_s=0.0,
        text=None,
        backend="test",
        seed=0,
        length_ratio=1.0,
        stretch_ratio=1.0,
        in_band=True,
        borrowed_samples=0,
        trimmed_samples=0,
        loudness="none",
        gain_db=0.0,
        synth_seconds=0.0,
    )


@st.composite
def timelines(draw: st.DrawFn) -> tuple[int, int, list[tuple[int, int]], bool]:
    total = draw(st.integers(0, 50_000))
    channels = draw(st.sampled_from([1, 2, 6, 8, 3]))
    gaps = draw(st.lists(st.tuples(st.integers(0, 5000), st.integers(1, 8000)), max_size=8))
    placed: list[tuple[int, int]] = []
    pos = 0
    for gap, length in gaps:
        pos += gap
        placed.append((pos, length))
        pos += length
    return total, channels, placed, draw(st.booleans())


@settings(max_examples=60, deadline=None)
@given(case=timelines())
def test_every_sentence_lands_on_its_start_sample_and_the_length_is_exact(
    case: tuple[int, int, list[tuple[int, int]], bool],
) -> None:
    total, channels, placed, with_background = case
    rng = np.random.default_rng(len(placed) + total)
    fitted = [
        FittedSentence(start, rng.uniform(0.05, 0.4, n).astype(np.float32), _report(k, start, n))
        for k, (start, n) in enumerate(placed)
        if start < total or k % 2  # also sentences wholly past the end
    ]
    background = (
        rng.uniform(-0.3, 0.3, (total + 17, channels)).astype(np.float32)
        if with_background
        else None
    )
    out, reports = assemble_timeline(total, channels, 48000, fitted, background)
    assert out.shape == (total, channels) and out.dtype == np.float32
    expected = (
        np.zeros((total, channels), np.float32) if background is None else background[:total].copy()
    )
    gains = voice_channel_gains(channels)
    for item in fitted:
        stop = min(item.start_sample + item.samples.size, total)
        if stop > item.start_sample:
            expected[item.start_sample : stop] += (
                item.samples[: stop - item.start_sample, None] * gains
            )
    np.testing.assert_array_equal(out, np.clip(expected, -1, 1))
    assert len(reports) == len(fitted)
    for item, rep in zip(sorted(fitted, key=lambda f: f.start_sample), reports, strict=True):
        overrun = item.start_sample + item.samples.size > total
        assert rep.in_band == (not overrun), "a sentence cut at the video end is reported"
        assert rep.end_sample <= max(total, item.start_sample)


def test_centre_channel_layouts_put_the_voice_in_front_centre_only() -> None:
    fitted = [FittedSentence(10, np.full(5, 0.5, np.float32), _report(0, 10, 5))]
    out, _ = assemble_timeline(100, 6, 48000, fitted, None)
    assert np.count_nonzero(out[:, 2]) == 5 and np.count_nonzero(np.delete(out, 2, axis=1)) == 0
    out, _ = assemble_timeline(100, 2, 48000, fitted, None)
    np.testing.assert_array_equal(out[10:15], np.full((5, 2), 0.5, np.float32))


def _speech(n: int, rate: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    return (0.3 * np.sin(2 * np.pi * 180 * t) + 0.02 * rng.standard_normal(n)).astype(np.float32)


@settings(max_examples=30, deadline=None)
@given(
    target_ms=st.integers(200, 3000),
    ratio=st.floats(0.5, 2.0),
    gap_ms=st.integers(0, 1500),
    lead_ms=st.integers(0, 300),
)
def test_fit_stays_in_its_slot_and_reports_every_ratio_outside_the_band(
    target_ms: int, ratio: float, gap_ms: int, lead_ms: int
) -> None:
    rate = 16000
    cfg = FitSettings()
    target = rate * target_ms // 1000
    start = 1234
    sentence = Sentence(
        index=3,
        start_sample=start - 50,
        stop_sample=start + target + 10,
        speech_start_sample=start,
        speech_stop_sample=start + target,
        slot_stop_sample=start + target + rate * gap_ms // 1000,
    )
    voiced = _speech(int(target * ratio), rate, target_ms)
    lead = np.zeros(rate * lead_ms // 1000, np.float32)
    synth = SentenceAudio(3, np.concatenate([lead, voiced, lead]), rate, "test", 9, 0.1)
    fitted = fit_sentence(sentence, synth, _speech(target, rate, 1), rate, cfg)
    rep = fitted.report
    assert fitted.start_sample == sentence.speech_start_sample
    assert 0 < fitted.samples.size <= sentence.slot_samples
    assert rep.start_sample == start and rep.end_sample == start + fitted.samples.size
    assert abs(rep.length_ratio - ratio) < 0.02 + 0.02 * ratio  # silence trimmed before measuring
    in_band = cfg.stretch_min <= rep.length_ratio <= cfg.stretch_max
    assert rep.in_band == in_band or abs(rep.length_ratio - 1) <= cfg.stretch_tolerance
    assert cfg.stretch_min <= rep.stretch_ratio <= cfg.stretch_max
    if rep.in_band:
        assert fitted.samples.size == target and not rep.notes
    else:
        assert rep.notes, "out-of-band sentences say what was done"
        if rep.length_ratio > cfg.stretch_max:
            assert rep.borrowed_samples > 0 or sentence.slot_samples == target
            assert rep.trimmed_samples > 0 or fitted.samples.size < sentence.slot_samples + 1
        else:
            assert fitted.samples.size < target


def test_silent_synthesis_is_reported_not_placed() -> None:
    sentence = Sentence(0, 0, 1000, 0, 1000, 2000)
    synth = SentenceAudio(0, np.zeros(3000, np.float32), 16000, "test", 0, 0.0)
    fitted = fit_sentence(sentence, synth, _speech(1000, 16000, 0), 16000, FitSettings())
    assert fitted.samples.size == 0 and not fitted.report.in_band
    assert "silent" in fitted.report.notes[0]


@pytest.mark.parametrize(("seconds", "method"), [(2.0, "lufs"), (0.2, "rms")])
def test_loudness_is_matched_to_the_original(seconds: float, method: str) -> None:
    rate = 22050
    n = int(seconds * rate)
    original = 0.5 * _speech(n, rate, 1)
    voice = 0.05 * _speech(n, rate, 2)
    gain_db, used = loudness_gain_db(voice, original, rate, FitSettings())
    assert used == method
    assert gain_db == pytest.approx(20.0, abs=0.5)
