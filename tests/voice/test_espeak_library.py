"""The `espeak` backend through libespeak-ng from the espeakng-loader wheel (no binary, no apt)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from farm.errors import ModelError, SpecError
from farm.eval.models import WHISPER_TINY_EN, judge_manifest
from farm.eval.words import WhisperAsr, word_error_rate
from farm.voice.settings import EspeakSettings, VoiceSettings
from farm.voice.signal import resample
from farm.voice.synth import SynthRequest, create_synth
from farm.voice.synth import espeak as espeak_module
from farm.voice.synth.espeak import choose_engine, open_engine
from tests.conftest import media_path
from tests.voice.helpers import median_f0

TEXT = "Please call me back when you get home tonight."  # everyday words
LIBRARY = EspeakSettings(engine="library")


def test_library_engine_is_deterministic_non_silent_and_22050_hz() -> None:
    name, engine = open_engine(LIBRARY)
    assert name == "library"
    first, rate = engine.speak(TEXT)
    second, _ = engine.speak(TEXT)
    assert rate == 22050 and first.dtype == np.float32
    np.testing.assert_array_equal(first, second)  # same text, same samples
    assert 1.5 < first.size / rate < 5.0
    assert float(np.sqrt(np.mean(first**2))) > 0.02 and float(np.max(np.abs(first))) <= 1.0


def test_threads_share_the_one_library_without_mixing_utterances() -> None:
    engines = [open_engine(EspeakSettings(engine="library", voice=v))[1] for v in ("en-us", "fr")]
    serial = [engine.speak(TEXT)[0] for engine in engines]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: engines[i % 2].speak(TEXT)[0], range(8)))
    for i, audio in enumerate(results):
        np.testing.assert_array_equal(audio, serial[i % 2])


def test_speed_setting_changes_duration() -> None:
    _, slow = open_engine(EspeakSettings(engine="library", words_per_minute=110))
    _, fast = open_engine(EspeakSettings(engine="library", words_per_minute=330))
    slow_audio, _ = slow.speak(TEXT)
    fast_audio, _ = fast.speak(TEXT)
    assert slow_audio.size > 2.0 * fast_audio.size


SENTENCES = (
    TEXT,
    "The weather is cold and the river is frozen.",
    "She bought three apples and a loaf of bread.",
    "Open the window, the room is too warm.",
    "The children played in the garden after school.",
)


def test_whisper_understands_the_library_output() -> None:
    # Several sentences, judged together: one short sentence is one noisy sample (Whisper's
    # int8 kernels differ by CPU, and "tonight" became "to hide" on one machine).
    _, engine = open_engine(LIBRARY)
    asr = WhisperAsr(judge_manifest().verified_path(WHISPER_TINY_EN).parent)
    heard = []
    for sentence in SENTENCES:
        audio, rate = engine.speak(sentence)
        heard.append(asr.transcribe(resample(audio, rate, 16000)))
    rates = [word_error_rate(said, got) for said, got in zip(SENTENCES, heard, strict=True)]
    assert sum(rates) / len(rates) <= 0.2, list(zip(rates, heard, strict=True))


def test_full_synth_converts_the_library_speech_toward_the_reference() -> None:
    settings = VoiceSettings(mode="tts", espeak=LIBRARY)
    synth = create_synth("espeak", settings, [media_path("audio/ljspeech_LJ001-0003.wav")])
    assert getattr(synth, "engine", None) == "library"
    request = SynthRequest(
        index=0,
        text=TEXT,
        language="en",
        source=np.zeros(16000, np.float32),
        sample_rate=16000,
        seed=0,
    )
    out, rate = synth.synthesize(request)
    raw, _ = open_engine(LIBRARY)[1].speak(TEXT)
    assert rate == 22050 and out.dtype == np.float32 and np.isfinite(out).all()
    assert abs(out.size - raw.size) <= rate // 10 and float(np.max(np.abs(out))) > 0.05
    assert median_f0(out, rate) > 1.3 * median_f0(raw, rate)  # espeak's male voice -> LJ (female)


def test_auto_falls_back_to_the_library_and_names_the_fixes_without_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    missing = EspeakSettings(binary="espeak-ng-not-installed")
    assert choose_engine(missing) == "library" and open_engine(missing)[0] == "library"
    monkeypatch.setattr(espeak_module, "wheel_paths", lambda: None)
    with pytest.raises(ModelError, match=r"pip install 'syncfarm\[gpl-tts\]'.*apt-get install"):
        choose_engine(missing)
    with pytest.raises(ModelError, match=r"engine=library needs .*syncfarm\[gpl-tts\]"):
        choose_engine(LIBRARY)


def test_unknown_voice_is_a_spec_error_and_a_timeout_leaves_the_engine_usable() -> None:
    _, engine = open_engine(EspeakSettings(engine="library", voice="xx-no-such-voice"))
    with pytest.raises(SpecError, match="no voice 'xx-no-such-voice'"):
        engine.speak(TEXT)
    assert open_engine(EspeakSettings(engine="library", voice="en-gb"))[1].speak(TEXT)[0].size
    _, hasty = open_engine(EspeakSettings(engine="library", timeout_s=1e-9))
    with pytest.raises(ModelError, match="took over"):
        hasty.speak(TEXT)
    _, engine = open_engine(LIBRARY)
    np.testing.assert_array_equal(engine.speak(TEXT)[0], engine.speak(TEXT)[0])
