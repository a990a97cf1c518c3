"""Voice-stage settings, validated once at the edge and carried inside the frozen JobSpec.

Every field has a default, so ``VoiceSettings()`` is a complete, valid voice configuration. Nested
groups (`SlicerSettings`, `FitSettings`, ...) are frozen as well; change them with
``settings.model_copy(update=...)``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from farm.fsutil import AbsolutePath

VoiceMode = Literal["keep", "vc", "tts"]
TtsBackend = Literal["gpt-sovits", "espeak"]
SeparatorName = Literal["none", "stems"]
AsrBackend = Literal["none", "faster-whisper"]


class SlicerSettings(BaseModel):
    """The audio-slicer (openvpi slicer2) RMS algorithm; defaults are the GPT-SoVITS WebUI's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold_db: float = Field(default=-34.0, le=0, description="RMS below this (dBFS) is silence")
    min_length_ms: int = Field(default=4000, ge=1, description="shortest clip the first pass emits")
    min_interval_ms: int = Field(default=300, ge=1, description="shortest silence that may be cut")
    hop_size_ms: int = Field(default=10, ge=1, description="RMS hop; cuts are quantised to it")
    max_sil_kept_ms: int = Field(default=500, ge=1, description="silence kept beside each cut")
    max_sentence_ms: int = Field(
        default=10000,
        ge=500,
        description="second pass: longer clips are split at their quietest frame",
    )
    min_sentence_ms: int = Field(
        default=1000, ge=0, description="second pass: shorter clips merge into a neighbour"
    )

    @model_validator(mode="after")
    def _ordering(self) -> SlicerSettings:
        if not self.min_length_ms >= self.min_interval_ms >= self.hop_size_ms:
            raise ValueError(
                "slicer needs min_length_ms >= min_interval_ms >= hop_size_ms, got "
                f"{self.min_length_ms} >= {self.min_interval_ms} >= {self.hop_size_ms}"
            )
        if self.max_sil_kept_ms < self.hop_size_ms:
            raise ValueError(
                f"slicer needs max_sil_kept_ms ({self.max_sil_kept_ms}) >= hop_size_ms "
                f"({self.hop_size_ms})"
            )
        if self.min_sentence_ms * 2 > self.max_sentence_ms:
            raise ValueError(
                f"min_sentence_ms ({self.min_sentence_ms}) must be at most half of "
                f"max_sentence_ms ({self.max_sentence_ms})"
            )
        return self


class FitSettings(BaseModel):
    """How each synthesized sentence is trimmed, stretched, levelled and placed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stretch_min: float = Field(default=0.8, gt=0.2, le=1.0, description="slowest speed factor")
    stretch_max: float = Field(default=1.25, ge=1.0, lt=5.0, description="fastest speed factor")
    stretch_tolerance: float = Field(
        default=0.01,
        ge=0,
        le=0.1,
        description="|ratio-1| below this pads/trims instead of stretching",
    )
    trim_db: float = Field(
        default=40.0, gt=0, le=80, description="silence trim: frames this far below the peak frame"
    )
    trim_floor_dbfs: float = Field(
        default=-60.0, le=0, description="never call louder frames silence"
    )
    fade_ms: float = Field(default=10.0, ge=0, le=200, description="fade on every trimmed edge")
    min_loudness_s: float = Field(
        default=0.5, ge=0.4, description="shorter sentences are matched by RMS, not LUFS"
    )
    max_peak_dbfs: float = Field(default=-0.5, le=0, description="loudness gain never peaks above")
    background_gain: float = Field(
        default=1.0, ge=0, le=4, description="separated background level"
    )


class VcSettings(BaseModel):
    """The WORLD (pyworld) voice-conversion DSP baseline."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sample_rate: int = Field(default=16000, ge=8000, le=48000, description="analysis rate")
    frame_period_ms: float = Field(default=5.0, ge=1.0, le=20.0)
    f0_floor_hz: float = Field(default=60.0, ge=30.0)
    f0_ceil_hz: float = Field(default=600.0, le=1200.0)
    max_formant_warp: float = Field(
        default=1.25,
        ge=1.0,
        le=1.6,
        description="spectral-envelope warp ratio is clamped to 1/x..x",
    )
    f0_location: Literal["mean", "median"] = Field(
        default="median", description="log-F0 location statistic mapped source → reference"
    )
    max_std_ratio: float = Field(default=2.0, ge=1.0, le=4.0, description="log-F0 std ratio clamp")
    max_reference_s: float = Field(default=30.0, ge=3.0, description="reference audio analysed")

    @model_validator(mode="after")
    def _f0_range(self) -> VcSettings:
        if self.f0_floor_hz >= self.f0_ceil_hz:
            raise ValueError(f"f0_floor_hz ({self.f0_floor_hz}) must be below f0_ceil_hz")
        return self


class GptSovitsSettings(BaseModel):
    """A GPT-SoVITS ``api_v2.py`` server (POST /tts). Reference paths must be visible to it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(default="http://127.0.0.1:9880", description="server base URL")
    timeout_s: float = Field(default=120.0, gt=0, description="per request")
    connect_timeout_s: float = Field(default=5.0, gt=0)
    retries: int = Field(default=2, ge=0, le=10, description="extra tries on 5xx or network errors")
    backoff_s: float = Field(default=0.5, ge=0, le=30, description="first retry delay, doubled")
    prompt_language: str = Field(default="en", description="language of the reference transcript")
    text_split_method: str = "cut0"
    fragment_interval: float = Field(default=0.05, ge=0.01, le=1.0)
    speed_factor: float = Field(default=1.0, ge=0.6, le=1.65)
    top_k: int = Field(default=15, ge=1, le=100)
    top_p: float = Field(default=1.0, ge=0, le=1)
    temperature: float = Field(default=1.0, ge=0, le=1)
    repetition_penalty: float = Field(default=1.35, ge=0)
    reference_dir: AbsolutePath | None = Field(
        default=None,
        description="where trimmed or merged references are written (default: system temp dir); "
        "the server must be able to read it",
    )


class EspeakSettings(BaseModel):
    """Offline text to speech with the espeak-ng binary, followed by the `vc` conversion."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    binary: str = Field(default="espeak-ng", description="name on PATH or absolute path")
    voice: str = "en-us"
    words_per_minute: int = Field(default=160, ge=80, le=450)
    timeout_s: float = Field(default=60.0, gt=0)


class AsrSettings(BaseModel):
    """Speech recognition for `tts` mode when no transcript file is given."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: AsrBackend = "none"
    model_dir: AbsolutePath | None = Field(
        default=None, description="local faster-whisper (CTranslate2) model"
    )
    device: str = "cpu"
    compute_type: str = "int8"
    beam_size: int = Field(default=5, ge=1, le=20)


class VoiceSettings(BaseModel):
    """How the audio is re-voiced. ``keep`` passes the original audio through (one PCM timeline)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: VoiceMode = "keep"
    tts_backend: TtsBackend = "espeak"
    transcript: AbsolutePath | None = None
    language: str = Field(default="en", description="language of the sentences' text")
    separator: SeparatorName = Field(
        default="none", description="'none' keeps no background; 'stems' reads background_stem"
    )
    background_stem: AbsolutePath | None = Field(
        default=None, description="user-supplied background (music and effects) for separator=stems"
    )
    peak_range_dbfs: tuple[float, float] = Field(
        default=(-9.0, -6.0), description="the voice track's peak is brought into this range"
    )
    reference_min_s: float = Field(default=3.0, gt=0, description="shortest usable reference")
    reference_max_s: float = Field(default=10.0, gt=0, description="longest usable reference")
    slicer: SlicerSettings = SlicerSettings()
    fit: FitSettings = FitSettings()
    vc: VcSettings = VcSettings()
    gpt_sovits: GptSovitsSettings = GptSovitsSettings()
    espeak: EspeakSettings = EspeakSettings()
    asr: AsrSettings = AsrSettings()

    @model_validator(mode="after")
    def _ranges(self) -> VoiceSettings:
        low, high = self.peak_range_dbfs
        if not low <= high <= 0:
            raise ValueError(
                f"peak_range_dbfs must be (low, high) with low <= high <= 0, got {low, high}"
            )
        if self.reference_min_s >= self.reference_max_s:
            raise ValueError(
                f"reference_min_s ({self.reference_min_s}) must be below reference_max_s "
                f"({self.reference_max_s})"
            )
        if self.separator == "stems" and self.background_stem is None:
            raise ValueError("separator 'stems' needs background_stem (a WAV of music and effects)")
        return self

    def backend_name(self) -> str:
        """The `VoiceSynth` registry name this configuration uses (``keep`` uses none)."""
        if self.mode == "tts":
            return self.tts_backend
        return self.mode
