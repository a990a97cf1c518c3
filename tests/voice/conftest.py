"""Fixtures the voice tests share."""

from __future__ import annotations

import pytest

from farm.voice.asr import FasterWhisperTranscriber, create_segment_transcriber
from farm.voice.settings import AsrSettings


@pytest.fixture(scope="session")
def whisper() -> FasterWhisperTranscriber:
    """Whisper tiny.en from its wheel, loaded once for every test that transcribes."""
    transcriber = create_segment_transcriber(AsrSettings(cpu_threads=2))
    assert transcriber is not None
    return transcriber
