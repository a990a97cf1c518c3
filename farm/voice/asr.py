"""Speech recognition behind the `Transcriber` protocol (only needed in `tts` mode without text).

The faster-whisper backend reads a local CTranslate2 model directory; nothing is downloaded.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from farm.errors import ModelError, SpecError
from farm.voice.settings import AsrSettings

ASR_SAMPLE_RATE = 16000


class Transcriber(Protocol):
    """Turns one clip of speech (mono float32 at 16 kHz) into its text."""

    name: ClassVar[str]

    def transcribe(self, audio: np.ndarray, language: str | None) -> str: ...


class FasterWhisperTranscriber:
    """faster-whisper (CTranslate2) with a model directory on local disk."""

    name: ClassVar[str] = "faster-whisper"

    def __init__(self, settings: AsrSettings) -> None:
        if importlib.util.find_spec("faster_whisper") is None:
            raise ModelError(
                "ASR backend faster-whisper is not installed; reinstall syncfarm (it depends on "
                "faster-whisper), or give a transcript file with --transcript"
            )
        model_dir = settings.model_dir
        if model_dir is None:
            raise SpecError(
                "voice.asr.model_dir is required for faster-whisper (a local model dir)"
            )
        check_model_dir(model_dir)
        module: Any = importlib.import_module("faster_whisper")
        self._beam_size = settings.beam_size
        try:
            self._model = module.WhisperModel(
                str(model_dir), device=settings.device, compute_type=settings.compute_type
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelError(f"faster-whisper could not load {model_dir}: {exc}") from exc

    def transcribe(self, audio: np.ndarray, language: str | None) -> str:
        segments, _info = self._model.transcribe(
            np.asarray(audio, dtype=np.float32),
            language=language,
            beam_size=self._beam_size,
            condition_on_previous_text=False,
        )
        return " ".join(seg.text.strip() for seg in segments).strip()


def check_model_dir(model_dir: Path) -> None:
    """Raise ModelError unless `model_dir` looks like a CTranslate2 Whisper model."""
    if not model_dir.is_dir():
        raise ModelError(
            f"faster-whisper model directory {model_dir} does not exist; convert or copy a "
            "CTranslate2 Whisper model there (it holds model.bin and config.json)"
        )
    missing = [name for name in ("model.bin", "config.json") if not (model_dir / name).is_file()]
    if missing:
        raise ModelError(
            f"faster-whisper model directory {model_dir} lacks {', '.join(missing)}; it must be "
            "a CTranslate2 Whisper model"
        )


def create_transcriber(settings: AsrSettings) -> Transcriber | None:
    """The configured transcriber, or None when ``backend='none'``."""
    if settings.backend == "none":
        return None
    if settings.backend == "faster-whisper":
        return FasterWhisperTranscriber(settings)
    raise SpecError(f"unknown ASR backend {settings.backend!r}; available: none, faster-whisper")
