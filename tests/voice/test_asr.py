"""The pipeline's pip-only ASR: Whisper tiny.en from its wheel, segments with word times, SRT."""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from farm.devices import Device
from farm.errors import SpecError
from farm.eval.words import edit_distance, normalise_text
from farm.voice import asr as asr_module
from farm.voice.asr import (
    ASR_SAMPLE_RATE,
    WHEEL_WHISPER_SHA256,
    AsrSegment,
    FasterWhisperTranscriber,
    create_transcriber,
    segments_text,
    wheel_whisper_dir,
)
from farm.voice.settings import AsrSettings
from farm.voice.signal import resample
from farm.voice.transcript import read_transcript, write_srt
from tests.voice.helpers import load_mono

# LJ001-0001 up to its first pause (4.34 s), as SOURCES.md transcribes it.
LJ_HEAD_S = 4.34
LJ_HEAD_TEXT = "Printing, in the only sense with which we are at present concerned"


@pytest.fixture(scope="module")
def lj_head() -> np.ndarray:
    audio, rate = load_mono("audio/ljspeech_LJ001-0001.wav")
    return resample(audio[: round(LJ_HEAD_S * rate)], rate, ASR_SAMPLE_RATE)


def test_lj_clip_is_transcribed_near_verbatim_with_ordered_word_times(
    whisper: FasterWhisperTranscriber, lj_head: np.ndarray
) -> None:
    segments = whisper.transcribe_segments(lj_head, "en")
    assert segments and all(isinstance(s, AsrSegment) for s in segments)
    ref, hyp = normalise_text(LJ_HEAD_TEXT).split(), normalise_text(segments_text(segments)).split()
    assert edit_distance(ref, hyp) / len(ref) <= 0.1, segments_text(segments)
    duration = lj_head.size / ASR_SAMPLE_RATE
    words = [w for s in segments for w in s.words]
    assert len(words) >= len(ref) - 1
    assert all(0.0 <= w.start <= w.end <= duration + 0.05 for w in words)
    assert all(a.start <= b.start and a.end <= b.end for a, b in itertools.pairwise(words))
    assert all(0.0 <= w.probability <= 1.0 and w.word for w in words)
    for s in segments:
        assert 0.0 <= s.start <= s.end <= duration + 0.05
        assert s.avg_logprob > -1.0 and 0.0 <= s.no_speech_prob < 0.6
    # the plain-text call (no word alignment) decodes the same words
    assert normalise_text(whisper.transcribe(lj_head, "en")) == " ".join(hyp)
    assert whisper.transcribe_segments(np.zeros(0, np.float32), "en") == []


def test_auto_backend_loads_the_wheel_model_checked_by_sha256(
    whisper: FasterWhisperTranscriber,
) -> None:
    from farm.eval.models import WHISPER_TINY_EN, judge_manifest

    assert AsrSettings().backend == "auto"
    assert whisper.model_path == wheel_whisper_dir() / "model.bin"
    assert whisper.model_sha256 == WHEEL_WHISPER_SHA256
    # the judges pin the same file on their own; the two pins must not drift apart
    assert judge_manifest().entry(WHISPER_TINY_EN).sha256 == WHEEL_WHISPER_SHA256
    assert create_transcriber(AsrSettings(backend="none")) is None
    with pytest.raises(SpecError, match=r"English-only.*multilingual Whisper model"):
        whisper.transcribe_segments(np.zeros(1600, np.float32), "fr")


def test_device_and_threads_reach_faster_whisper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []

    class FakeModel:
        def __init__(self, path: str, **kwargs: Any) -> None:
            calls.append({"path": path, **kwargs})
            self.model = SimpleNamespace(is_multilingual=True)

    (tmp_path / "model.bin").write_bytes(b"x")
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setattr(
        asr_module.importlib, "import_module", lambda name: SimpleNamespace(WhisperModel=FakeModel)
    )
    settings = AsrSettings(model_dir=tmp_path, cpu_threads=3, compute_type="float16")
    on_gpu = FasterWhisperTranscriber(settings, device=Device.from_gpu_ids(["5"]))
    assert calls[-1] == {
        "path": str(tmp_path),
        "device": "cuda",
        "device_index": 0,  # Ray's GPU 5 is ordinal 0 inside the worker
        "compute_type": "float16",
        "cpu_threads": 3,
        "local_files_only": True,
    }
    assert on_gpu.device == "cuda:0" and on_gpu.multilingual
    FasterWhisperTranscriber(settings, device=Device.cpu())
    assert calls[-1]["device"] == "cpu"
    FasterWhisperTranscriber(settings.model_copy(update={"device": "cuda", "device_index": 1}))
    assert (calls[-1]["device"], calls[-1]["device_index"]) == ("cuda", 1)


def test_srt_is_written_from_segments_or_cues(tmp_path: Path) -> None:
    segments = [
        AsrSegment(start=0.0, end=1.25, text="Hello there.", avg_logprob=-0.2, no_speech_prob=0.0),
        AsrSegment(start=1.5, end=2.0, text="  ", avg_logprob=-0.2, no_speech_prob=0.0),
    ]
    path = write_srt([*segments, (2.5, 3.0, "General  Kenobi")], tmp_path / "out.srt")
    cues = read_transcript(path).cues
    assert [(c.start_ms, c.end_ms, c.text) for c in cues] == [
        (0, 1250, "Hello there."),
        (2500, 3000, "General Kenobi"),
    ]
