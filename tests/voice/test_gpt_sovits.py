"""The GPT-SoVITS client against a fake api_v2 server on 127.0.0.1.

These tests check the wire contract (request fields, retries, 400 JSON errors, WAV bodies), not
voice quality: the fake server returns a buzz, not speech.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from farm.errors import MediaError, ShardFailed, SpecError
from farm.voice.model import Sentence
from farm.voice.references import ReferenceClip, choose_reference
from farm.voice.settings import GptSovitsSettings, VoiceSettings
from farm.voice.stage import plan_voice, sentence_seed, synthesize_sentence
from farm.voice.synth.gpt_sovits import (
    GptSovitsRejected,
    GptSovitsUnavailable,
    build_tts_request,
)
from tests.conftest import media_path
from tests.voice.fake_gpt_sovits import OUTPUT_RATE, FakeServer
from tests.voice.helpers import load_mono, revoice, write_tone


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer().start()
    yield fake
    fake.stop()


@pytest.fixture
def refs(tmp_path: Path) -> list[Path]:
    """Two GRID clips (2.98 s each, too short alone) with sidecar transcripts."""
    out = []
    for name, text in [
        ("grid_bbaf2n", "bin blue at f two now"),
        ("grid_swiz3n", "set white in z three now"),
    ]:
        dst = tmp_path / f"{name}.wav"
        shutil.copy(media_path(f"audio/{name}.wav"), dst)
        dst.with_suffix(".txt").write_text(text, encoding="utf-8")
        out.append(dst)
    return out


def _settings(url: str, tmp_path: Path, **gpt: object) -> VoiceSettings:
    cfg = GptSovitsSettings(url=url, reference_dir=tmp_path / "refs", backoff_s=0.0, **gpt)  # type: ignore[arg-type]
    return VoiceSettings(mode="tts", tts_backend="gpt-sovits", gpt_sovits=cfg)


def _sentence(text: str | None = "Printing, in the only sense.") -> Sentence:
    return Sentence(
        index=4,
        start_sample=0,
        stop_sample=22050,
        speech_start_sample=0,
        speech_stop_sample=22050,
        slot_stop_sample=30000,
        text=text,
    )


def test_request_follows_the_sentence_level_template(
    server: FakeServer, refs: list[Path], tmp_path: Path
) -> None:
    cfg = _settings(server.url, tmp_path)
    seed = sentence_seed(1234, 4)
    out = synthesize_sentence(_sentence(), np.zeros(22050, np.float32), 22050, refs, cfg, seed)
    (req,) = server.behaviour.requests
    assert req["text"] == "Printing, in the only sense."
    assert req["text_lang"] == "en" and req["prompt_lang"] == "en"
    assert req["text_split_method"] == "cut0"
    assert 0 < req["fragment_interval"] <= 0.1
    assert req["seed"] == seed and 0 <= seed < 2**32 - 1
    assert req["media_type"] == "wav" and req["streaming_mode"] is False
    # the two short clips were merged into one 3–10 s reference, with both transcripts
    ref = Path(req["ref_audio_path"])
    assert ref.parent == tmp_path / "refs"
    assert req["prompt_text"] == "bin blue at f two now set white in z three now"
    # the 32 kHz WAV came back resampled to the timeline's rate, mono float32
    assert out.sample_rate == 22050 and out.samples.dtype == np.float32
    expected = (len(req["text"]) * 0.06 + req["fragment_interval"]) * 22050
    assert abs(out.samples.size - expected) < 0.01 * 22050
    assert out.backend == "gpt-sovits" and out.seed == seed


def test_same_job_and_sentence_reproduce_the_same_take(
    server: FakeServer, refs: list[Path], tmp_path: Path
) -> None:
    cfg = _settings(server.url, tmp_path)
    a = synthesize_sentence(
        _sentence(), np.zeros(10, np.float32), OUTPUT_RATE, refs, cfg, sentence_seed(7, 4)
    )
    b = synthesize_sentence(
        _sentence(), np.zeros(10, np.float32), OUTPUT_RATE, refs, cfg, sentence_seed(7, 4)
    )
    np.testing.assert_array_equal(a.samples, b.samples)
    assert sentence_seed(7, 4) != sentence_seed(7, 5) != sentence_seed(8, 4)


def test_server_errors_and_dropped_connections_are_retried(
    server: FakeServer, refs: list[Path], tmp_path: Path
) -> None:
    cfg = _settings(server.url, tmp_path, retries=2)
    server.behaviour.fail_next = 1
    server.behaviour.drop_next = 1
    out = synthesize_sentence(_sentence(), np.zeros(10, np.float32), OUTPUT_RATE, refs, cfg, 5)
    assert len(server.behaviour.requests) == 3 and out.samples.size > 0
    assert all(r["seed"] == 5 for r in server.behaviour.requests), "a retry sends the same seed"


def test_persistent_server_errors_fail_retryably_after_the_retries(
    server: FakeServer, refs: list[Path], tmp_path: Path
) -> None:
    cfg = _settings(server.url, tmp_path, retries=1)
    server.behaviour.fail_next = 5
    with pytest.raises(GptSovitsUnavailable, match=r"after 2 tries \(http://.*HTTP 500") as err:
        synthesize_sentence(_sentence(), np.zeros(10, np.float32), OUTPUT_RATE, refs, cfg, 5)
    assert err.value.retryable and len(server.behaviour.requests) == 2


def test_a_400_is_reported_with_the_servers_message_and_not_retried(
    server: FakeServer, refs: list[Path], tmp_path: Path
) -> None:
    cfg = _settings(server.url, tmp_path, retries=3).model_copy(update={"language": "xx"})
    with pytest.raises(GptSovitsRejected, match="text_lang: xx is not supported") as err:
        sentence = Sentence(0, 0, 10, 0, 10, 10, text="hello", language="xx")
        synthesize_sentence(sentence, np.zeros(10, np.float32), OUTPUT_RATE, refs, cfg, 1)
    assert not err.value.retryable and len(server.behaviour.requests) == 1


def test_a_reference_outside_3_to_10_s_is_rejected_by_the_server(
    server: FakeServer, tmp_path: Path
) -> None:
    """Bypass our reference selection to see the server's own 3–10 s check come back clearly."""
    short = ReferenceClip(path=media_path("audio/grid_bbaf2n.wav"), text="", seconds=2.98)
    body = build_tts_request("hello", "en", short, GptSovitsSettings(), 1)
    from farm.voice.synth.gpt_sovits_pool import GptSovitsPool

    pool = GptSovitsPool(GptSovitsSettings(url=server.url, backoff_s=0.0))
    try:
        with pytest.raises(GptSovitsRejected, match="3~10"):
            pool.tts(body, 0)
    finally:
        pool.close()


def test_the_prompt_text_is_the_references_transcript_or_reference_free_is_asked_for(
    server: FakeServer, refs: list[Path], tmp_path: Path
) -> None:
    lone = tmp_path / "lone.wav"
    shutil.copy(media_path("audio/ljspeech_LJ001-0001.wav"), lone)
    cfg = _settings(server.url, tmp_path)
    with pytest.raises(SpecError, match=r"lone\.wav has no transcript.*reference_free"):
        synthesize_sentence(_sentence(), np.zeros(10, np.float32), OUTPUT_RATE, [lone], cfg, 1)
    assert server.behaviour.calls == []
    free = _settings(server.url, tmp_path, reference_free=True)
    synthesize_sentence(_sentence(), np.zeros(10, np.float32), OUTPUT_RATE, [lone], free, 1)
    assert server.behaviour.requests[-1]["prompt_text"] == ""
    lone.with_suffix(".lab").write_text("Printing,  in the only\nsense", encoding="utf-8")
    synthesize_sentence(_sentence(), np.zeros(10, np.float32), OUTPUT_RATE, [lone], cfg, 1)
    assert server.behaviour.requests[-1]["prompt_text"] == "Printing, in the only sense"
    assert server.behaviour.requests[-1]["ref_audio_path"] == str(lone)


def test_unreachable_server_names_the_url_and_how_to_start_it(
    refs: list[Path], tmp_path: Path
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = _settings(f"http://127.0.0.1:{port}", tmp_path, retries=1, connect_timeout_s=0.5)
    with pytest.raises(GptSovitsUnavailable, match=f"127.0.0.1:{port}.*api_v2.py") as err:
        synthesize_sentence(_sentence(), np.zeros(10, np.float32), OUTPUT_RATE, refs, cfg, 1)
    assert isinstance(err.value, ShardFailed) and err.value.retryable


def test_a_slow_server_times_out(server: FakeServer, refs: list[Path], tmp_path: Path) -> None:
    server.behaviour.delay_s = 0.6
    cfg = _settings(server.url, tmp_path, retries=0, timeout_s=0.2)
    with pytest.raises(GptSovitsUnavailable, match="ReadTimeout"):
        synthesize_sentence(_sentence(), np.zeros(10, np.float32), OUTPUT_RATE, refs, cfg, 1)


def test_a_non_wav_answer_is_a_clear_error(
    server: FakeServer, refs: list[Path], tmp_path: Path
) -> None:
    server.behaviour.garbage = True
    with pytest.raises(MediaError, match="not a WAV"):
        synthesize_sentence(
            _sentence(),
            np.zeros(10, np.float32),
            OUTPUT_RATE,
            refs,
            _settings(server.url, tmp_path),
            1,
        )


def test_a_sentence_without_text_is_refused_before_any_request(
    server: FakeServer, refs: list[Path], tmp_path: Path
) -> None:
    with pytest.raises(SpecError, match="no text"):
        synthesize_sentence(
            _sentence(None),
            np.zeros(10, np.float32),
            OUTPUT_RATE,
            refs,
            _settings(server.url, tmp_path),
            1,
        )
    assert server.behaviour.requests == []


def test_reference_selection_keeps_trims_or_merges(refs: list[Path], tmp_path: Path) -> None:
    cfg = VoiceSettings(gpt_sovits=GptSovitsSettings(reference_dir=tmp_path / "r"))
    inside = media_path("audio/ljspeech_LJ001-0001.wav")
    picked = choose_reference([refs[0], inside], cfg)
    assert picked.path == inside and not picked.derived
    long_clip = write_tone(tmp_path / "long.wav", 14.0)
    trimmed = choose_reference([long_clip], cfg)
    assert trimmed.derived and 3.0 < trimmed.seconds < 10.0 and trimmed.text == ""
    merged = choose_reference(refs, cfg)
    assert merged.derived and 3.0 < merged.seconds < 10.0
    assert choose_reference(refs, cfg).path == merged.path, "derived clips are content-addressed"
    with pytest.raises(MediaError, match="no GPT-SoVITS reference of 3–10 s"):
        choose_reference([refs[0]], cfg)


def test_tts_over_subtitles_places_each_cue_at_its_sample(
    server: FakeServer, refs: list[Path], tmp_path: Path
) -> None:
    """The whole tts path through the fake server: cues → requests → fitted timeline."""
    audio, rate = load_mono("audio/ljspeech_LJ001-0001.wav")
    srt = tmp_path / "lj.srt"
    srt.write_text(
        "1\n00:00:00,100 --> 00:00:04,300\nPrinting, in the only sense\n\n"
        "2\n00:00:04,500 --> 00:00:09,500\nwith which we are at present concerned\n",
        encoding="utf-8",
    )
    cfg = _settings(server.url, tmp_path).model_copy(update={"transcript": srt})
    total = audio.size
    plan = plan_voice(audio[:, None], rate, cfg, srt, total)
    out, report = revoice(audio[:, None], rate, cfg, refs, tmp_path / "work")
    assert out.shape == (total, 1)
    assert [r.start_sample for r in report.sentences] == [
        s.speech_start_sample for s in plan.sentences
    ]
    assert plan.sentences[0].start_sample == 100 * rate // 1000
    assert plan.sentences[1].start_sample == 4500 * rate // 1000
    assert [r["text"] for r in server.behaviour.requests] == [s.text for s in plan.sentences]
    for rep in report.sentences:
        lo, hi = cfg.fit.stretch_min, cfg.fit.stretch_max
        assert (lo <= rep.stretch_ratio <= hi) and (rep.in_band or rep.notes)
