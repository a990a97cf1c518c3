"""A GPT-SoVITS training set from an identity's consented voice recordings (the paper's data prep).

Per recording: optional separation, mono, 32 kHz (GPT-SoVITS's rate), the whole recording's peak
brought into the band (so the slicer's absolute threshold means the same on every input), slicing
(slicer2 with the GPT-SoVITS WebUI defaults, then the second pass that caps clips at ``max_clip_s``
by cutting at the quietest frame and merges fragments shorter than ``min_clip_s``), each clip's
peak brought into −9…−6 dBFS, ASR (faster-whisper, deterministic), then cleaning. A clip is dropped,
with its reason, when it is

* ``too-short`` / ``too-long``: outside ``min_clip_s``…``max_clip_s`` (defaults 1 s and 15 s:
  GPT-SoVITS learns little from sub-second clips, and long ones cost training memory);
* ``clipped``: more than ``max_clipped_fraction`` (0.1 %) of its samples sit at full scale
  (≥ ``full_scale``) in the recording as given, before any gain;
* ``empty-text``: the recogniser heard no words;
* ``no-speech``: Whisper's ``no_speech_prob`` above ``max_no_speech_prob`` (0.6, Whisper's own);
* ``low-confidence``: the duration-weighted ``avg_logprob`` below ``min_avg_logprob`` (−1.0,
  Whisper's own fallback threshold).

Output (built in a temporary folder beside ``DIR``, then renamed; nothing partial is left)::

    DIR/wavs/<name>_<start>_<end>.wav   int16 mono 32 kHz; start/end: 32 kHz sample offsets in
                                        the recording (GPT-SoVITS slice_audio's naming)
    DIR/<speaker>.list                  absolute_wav_path|speaker|language|text, one kept clip a
                                        line (language as GPT-SoVITS v2 codes: en, zh, ja, ko, yue)
    DIR/summary.json                    `DatasetSummary`

The same inputs and settings give the same bytes (no times or temporary paths are recorded).
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import soundfile as sf
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from farm.errors import ConsentError, MediaError, SpecError
from farm.fsutil import sha256_file
from farm.voice.asr import ASR_SAMPLE_RATE, AsrSegment, SegmentTranscriber, segments_text
from farm.voice.settings import SeparatorName, SlicerSettings
from farm.voice.signal import (
    gain_to_db,
    peak_normalise_gain,
    read_audio,
    resample,
    speech_mixdown,
)
from farm.voice.slicer import plan_slices

if TYPE_CHECKING:
    from farm.provenance.consent import ConsentRecord
    from farm.provenance.keys import TrustList
    from farm.voice.separate import Separator

DATASET_SAMPLE_RATE = 32000
"""GPT-SoVITS slices and trains at 32 kHz."""
AUDIO_SUFFIXES = (".wav", ".flac")
GPT_SOVITS_LANGUAGES = ("en", "zh", "ja", "ko", "yue")
"""The languages GPT-SoVITS's text front end cleans (its v2 codes)."""
SUMMARY_NAME = "summary.json"
WAVS = "wavs"
PEAK_MARGIN_DB = 0.05
"""Clips are levelled this far inside the band, so int16 rounding cannot push a peak out."""
_INT16_SCALE = 32767.0

DropReason = Literal[
    "too-short", "too-long", "clipped", "empty-text", "no-speech", "low-confidence"
]
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class DatasetSettings(BaseModel):
    """How a voice dataset is cut and cleaned; every field has a default but ``speaker``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    speaker: str = Field(min_length=1, max_length=100, description="the list's speaker field")
    language: str = Field(default="en", description="spoken language (GPT-SoVITS code)")
    separator: SeparatorName = "none"
    min_clip_s: float = Field(default=1.0, gt=0, description="shorter clips are dropped")
    max_clip_s: float = Field(default=15.0, le=60, description="longer clips are split")
    peak_range_dbfs: tuple[float, float] = (-9.0, -6.0)
    full_scale: float = Field(default=0.999, gt=0.5, le=1.0, description="a clipped sample")
    max_clipped_fraction: float = Field(default=0.001, ge=0, le=1)
    min_avg_logprob: float = Field(default=-1.0, le=0)
    max_no_speech_prob: float = Field(default=0.6, ge=0, le=1)
    slicer: SlicerSettings = Field(
        default=SlicerSettings(),
        description="slicer2 first pass (WebUI defaults); its second-pass limits are replaced "
        "by min_clip_s and max_clip_s",
    )

    @field_validator("speaker")
    @classmethod
    def _plain_speaker(cls, value: str) -> str:
        value = value.strip()
        if not value or value.startswith(".") or re.search(r"[|/\\\x00-\x1f]", value):
            raise ValueError(
                f"speaker {value!r} must be a plain name (no '|', '/', '\\', control characters "
                "or leading '.'): it names the .list file and fills its speaker field"
            )
        return value

    @field_validator("language")
    @classmethod
    def _known_language(cls, value: str) -> str:
        code = value.strip().lower()
        if code not in GPT_SOVITS_LANGUAGES:
            raise ValueError(
                f"language {value!r} is not one GPT-SoVITS trains on; use one of "
                f"{', '.join(GPT_SOVITS_LANGUAGES)}"
            )
        return code

    @model_validator(mode="after")
    def _ranges(self) -> DatasetSettings:
        if self.min_clip_s * 2 > self.max_clip_s:
            raise ValueError(
                f"min_clip_s ({self.min_clip_s}) must be at most half of max_clip_s "
                f"({self.max_clip_s})"
            )
        low, high = self.peak_range_dbfs
        if not low + 2 * PEAK_MARGIN_DB <= high <= 0:
            raise ValueError(
                f"peak_range_dbfs must be (low, high) with low < high <= 0: {low, high}"
            )
        if self.separator == "stems":
            raise ValueError(
                "separator 'stems' needs one background file per recording; use none or a "
                "separation model"
            )
        return self

    def slicing(self) -> SlicerSettings:
        """The slicer with its second pass capped at max_clip_s and merging below min_clip_s."""
        return SlicerSettings.model_validate(
            self.slicer.model_dump()
            | {
                "max_sentence_ms": round(self.max_clip_s * 1000),
                "min_sentence_ms": round(self.min_clip_s * 1000),
            }
        )


class ConsentInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    sha256: str
    consent_id: str
    subject: str
    expires: str


class SourceInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="the clip-name prefix")
    path: str
    sha256: str
    sample_rate: int
    channels: int
    duration_s: float
    gain_db: float = Field(description="recording gain before slicing")


class AsrInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: str
    model: str
    sha256: str


class KeptClip(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str
    source: str
    start: int = Field(description="32 kHz sample offset in the recording")
    end: int
    duration_s: float
    peak_dbfs: float
    clipped_fraction: float
    text: str
    avg_logprob: float
    no_speech_prob: float


class DroppedClip(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    start: int
    end: int
    duration_s: float
    reason: DropReason
    detail: str
    text: str | None = None


class DatasetSummary(BaseModel):
    """summary.json: what was kept, what was dropped and why, from which consented recordings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal[1] = 1
    speaker: str
    language: str
    sample_rate: int = DATASET_SAMPLE_RATE
    list_file: str
    kept_clips: int
    dropped_clips: int
    kept_seconds: float
    kept_hours: float
    dropped_by_reason: dict[str, int]
    identity_pack: str | None
    consent: ConsentInfo
    asr: AsrInfo
    separator: str
    sources: list[SourceInfo]
    clips: list[KeptClip]
    dropped: list[DroppedClip]
    settings: DatasetSettings


@dataclass(frozen=True)
class ConsentedVoices:
    """Recordings cleared for voice use: the consent gate has passed for every one of them."""

    recordings: tuple[Path, ...]
    consent: ConsentInfo
    identity_pack: Path | None = None


def _consent_info(path: Path, sha256: str, record: ConsentRecord) -> ConsentInfo:
    return ConsentInfo(
        path=str(path),
        sha256=sha256,
        consent_id=record.consent_id,
        subject=record.subject,
        expires=record.expires.isoformat(),
    )


def voices_from_pack(pack_dir: Path, trust: TrustList) -> ConsentedVoices:
    """An identity pack's voice references, after the pack's signature and its consent
    (voice scope, covering every reference) are verified."""
    from farm.face.identity import load_identity
    from farm.provenance.consent import check_consent

    pack = load_identity(pack_dir, trust=trust)
    if not pack.voice_refs:
        raise MediaError(
            f"identity pack {pack_dir} has no voice recordings; re-create it with "
            "`farm identity create --voice WAV`"
        )
    record = check_consent(
        pack.consent.path, scope={"voice"}, voice_files=list(pack.voice_refs), trust=trust
    )
    return ConsentedVoices(
        recordings=tuple(p.resolve() for p in pack.voice_refs),
        consent=_consent_info(pack.consent.path.resolve(), pack.consent.sha256, record),
        identity_pack=pack_dir.resolve(),
    )


def voices_from_clips(clips: Sequence[Path], consent: Path, trust: TrustList) -> ConsentedVoices:
    """WAV/FLAC clips, after the consent record is verified to cover each one for voice use."""
    from farm.provenance.consent import check_consent

    if not clips:
        raise SpecError("give at least one WAV/FLAC recording, or an identity pack directory")
    for clip in clips:
        if clip.suffix.lower() not in AUDIO_SUFFIXES:
            raise SpecError(f"recording {clip} is not a .wav or .flac file; convert it first")
        if not clip.is_file():
            raise MediaError(f"recording {clip} does not exist")
    record = check_consent(consent, scope={"voice"}, voice_files=list(clips), trust=trust)
    return ConsentedVoices(
        recordings=tuple(c.resolve() for c in clips),
        consent=_consent_info(consent.resolve(), sha256_file(consent), record),
    )


def check_output_dir(out_dir: Path, *, force: bool) -> None:
    """Refuse a file, or a non-empty folder unless ``force`` (it is then replaced whole)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise SpecError(f"dataset output {out_dir} is a file; give a new folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise SpecError(
            f"dataset output {out_dir} is not empty; pick a new folder or pass --force to "
            "replace it"
        )


def source_names(recordings: Sequence[Path]) -> list[str]:
    """A file-safe, unique clip-name prefix per recording (its stem)."""
    names = [_UNSAFE_NAME.sub("_", p.stem).strip("._") or "clip" for p in recordings]
    seen: dict[str, Path] = {}
    for name, path in zip(names, recordings, strict=True):
        if name in seen:
            raise SpecError(
                f"recordings {seen[name]} and {path} would both make clips named {name}_…; "
                "rename one of them"
            )
        seen[name] = path
    return names


@dataclass(frozen=True)
class _Clip:
    source: str
    start: int
    end: int
    pcm: np.ndarray | None
    """int16 samples of a kept clip."""
    record: KeptClip | DroppedClip


def _read(path: Path) -> tuple[np.ndarray, int]:
    return read_audio(path, "recording")


def _int16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio * _INT16_SCALE), -32768, 32767).astype(np.int16)


def _pcm_peak_dbfs(pcm: np.ndarray) -> float:
    top = int(np.max(np.abs(pcm.astype(np.int32)))) if pcm.size else 0
    return gain_to_db(top / 32768.0)  # how soundfile reads int16 back


def _confidence(segs: Sequence[AsrSegment]) -> tuple[float, float]:
    """Duration-weighted mean avg_logprob and the highest no_speech_prob of the segments."""
    if not segs:
        return 0.0, 1.0
    weights = np.array([max(s.end - s.start, 1e-3) for s in segs])
    logprob = float(np.dot(weights, [s.avg_logprob for s in segs]) / weights.sum())
    return logprob, max(s.no_speech_prob for s in segs)


def _clean_text(text: str) -> str:
    return " ".join(text.replace("|", " ").split())


def _slice_recording(
    name: str,
    path: Path,
    settings: DatasetSettings,
    transcriber: SegmentTranscriber,
    separator: Separator | None,
) -> tuple[SourceInfo, list[_Clip]]:
    data, rate = _read(path)
    full = (np.abs(data) >= settings.full_scale).any(axis=1)
    voice = separator.separate(data, rate).voice if separator is not None else data
    audio = resample(speech_mixdown(voice), rate, DATASET_SAMPLE_RATE)
    low, high = settings.peak_range_dbfs
    gain = peak_normalise_gain(audio, low, high)
    audio = audio * np.float32(gain)
    info = SourceInfo(
        name=name,
        path=str(path),
        sha256=sha256_file(path),
        sample_rate=rate,
        channels=int(data.shape[1]),
        duration_s=round(data.shape[0] / rate, 4),
        gain_db=round(gain_to_db(gain), 3),
    )
    clips: list[_Clip] = []
    for start, end in plan_slices(audio, DATASET_SAMPLE_RATE, settings.slicing()):
        clips.append(_judge_clip(name, audio, start, end, full, rate, settings, transcriber))
    return info, clips


def _judge_clip(
    name: str,
    audio: np.ndarray,
    start: int,
    end: int,
    full: np.ndarray,
    rate: int,
    settings: DatasetSettings,
    transcriber: SegmentTranscriber,
) -> _Clip:
    duration = (end - start) / DATASET_SAMPLE_RATE
    lo = math.floor(start * rate / DATASET_SAMPLE_RATE)
    hi = max(lo + 1, math.ceil(end * rate / DATASET_SAMPLE_RATE))
    around = full[lo:hi]
    clipped = float(around.mean()) if around.size else 0.0

    def dropped(reason: DropReason, detail: str, text: str | None = None) -> _Clip:
        record = DroppedClip(
            source=name,
            start=start,
            end=end,
            duration_s=round(duration, 4),
            reason=reason,
            detail=detail,
            text=text,
        )
        return _Clip(name, start, end, None, record)

    if duration < settings.min_clip_s:
        return dropped("too-short", f"{duration:.2f} s < {settings.min_clip_s:g} s")
    if duration > settings.max_clip_s:
        return dropped("too-long", f"{duration:.2f} s > {settings.max_clip_s:g} s")
    if clipped > settings.max_clipped_fraction:
        return dropped(
            "clipped",
            f"{clipped:.2%} of samples at full scale (> {settings.max_clipped_fraction:.2%})",
        )
    low, high = settings.peak_range_dbfs
    piece = audio[start:end]
    piece = piece * np.float32(
        peak_normalise_gain(piece, low + PEAK_MARGIN_DB, high - PEAK_MARGIN_DB)
    )
    pcm = _int16(piece)
    float_pcm = pcm.astype(np.float32) / 32768.0
    segments = transcriber.transcribe_segments(
        resample(float_pcm, DATASET_SAMPLE_RATE, ASR_SAMPLE_RATE), settings.language
    )
    text = _clean_text(segments_text(segments))
    logprob, no_speech = _confidence(segments)
    if not text:
        return dropped("empty-text", "the recogniser heard no words")
    if no_speech > settings.max_no_speech_prob:
        return dropped(
            "no-speech", f"no_speech_prob {no_speech:.2f} > {settings.max_no_speech_prob}", text
        )
    if logprob < settings.min_avg_logprob:
        return dropped(
            "low-confidence", f"avg_logprob {logprob:.2f} < {settings.min_avg_logprob}", text
        )
    record = KeptClip(
        file=f"{WAVS}/{name}_{start:010d}_{end:010d}.wav",
        source=name,
        start=start,
        end=end,
        duration_s=round(duration, 4),
        peak_dbfs=round(_pcm_peak_dbfs(pcm), 3),
        clipped_fraction=round(clipped, 6),
        text=text,
        avg_logprob=round(logprob, 4),
        no_speech_prob=round(no_speech, 4),
    )
    return _Clip(name, start, end, pcm, record)


def _summary(
    voices: ConsentedVoices,
    settings: DatasetSettings,
    transcriber: SegmentTranscriber,
    separator: Separator | None,
    sources: list[SourceInfo],
    clips: list[_Clip],
) -> DatasetSummary:
    kept = [c.record for c in clips if isinstance(c.record, KeptClip)]
    dropped = [c.record for c in clips if isinstance(c.record, DroppedClip)]
    seconds = sum(c.end - c.start for c in clips if c.pcm is not None) / DATASET_SAMPLE_RATE
    reasons: dict[str, int] = {}
    for d in dropped:
        reasons[d.reason] = reasons.get(d.reason, 0) + 1
    return DatasetSummary(
        speaker=settings.speaker,
        language=settings.language,
        list_file=f"{settings.speaker}.list",
        kept_clips=len(kept),
        dropped_clips=len(dropped),
        kept_seconds=round(seconds, 3),
        kept_hours=round(seconds / 3600, 6),
        dropped_by_reason=dict(sorted(reasons.items())),
        identity_pack=str(voices.identity_pack) if voices.identity_pack is not None else None,
        consent=voices.consent,
        asr=AsrInfo(
            backend=transcriber.name,
            model=str(transcriber.model_path.parent),
            sha256=transcriber.model_sha256,
        ),
        separator=separator.name if separator is not None else "none",
        sources=sources,
        clips=kept,
        dropped=dropped,
        settings=settings,
    )


def _write(out_dir: Path, staging: Path, summary: DatasetSummary, clips: list[_Clip]) -> None:
    (staging / WAVS).mkdir()
    lines = []
    for clip in clips:
        if clip.pcm is None or not isinstance(clip.record, KeptClip):
            continue
        sf.write(
            str(staging / clip.record.file),
            clip.pcm,
            DATASET_SAMPLE_RATE,
            subtype="PCM_16",
            format="WAV",
        )
        wav = out_dir / clip.record.file
        lines.append(f"{wav}|{summary.speaker}|{summary.language}|{clip.record.text}\n")
    (staging / summary.list_file).write_text("".join(lines), encoding="utf-8")
    (staging / SUMMARY_NAME).write_text(summary.model_dump_json(indent=2) + "\n", encoding="utf-8")


def _replace(staging: Path, out_dir: Path) -> None:
    """Put ``staging`` at ``out_dir``; an existing folder is swapped out first, then removed."""
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
    old = aside / "old"
    out_dir.rename(old)
    try:
        staging.rename(out_dir)
    except OSError:
        old.rename(out_dir)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def build_voice_dataset(
    voices: ConsentedVoices,
    out_dir: Path,
    settings: DatasetSettings,
    transcriber: SegmentTranscriber,
    *,
    separator: Separator | None = None,
    force: bool = False,
) -> DatasetSummary:
    """Slice, level, transcribe and clean the consented recordings into ``out_dir``.

    Raises:
        SpecError: ``out_dir`` is a file or a non-empty folder (without ``force``), or two
            recordings share a name.
        MediaError: a recording cannot be read, or no clip survives cleaning.
        ConsentError: no recordings were cleared.
    """
    if not voices.recordings:
        raise ConsentError("no consented voice recordings were given")
    check_output_dir(out_dir, force=force)
    out_dir = out_dir.resolve()
    names = source_names(voices.recordings)
    sources: list[SourceInfo] = []
    clips: list[_Clip] = []
    for name, path in zip(names, voices.recordings, strict=True):
        info, found = _slice_recording(name, path, settings, transcriber, separator)
        sources.append(info)
        clips.extend(found)
    summary = _summary(voices, settings, transcriber, separator, sources, clips)
    if not summary.kept_clips:
        why = ", ".join(f"{n} {r}" for r, n in summary.dropped_by_reason.items()) or "no speech"
        raise MediaError(
            f"no clip of the {len(voices.recordings)} recording(s) survived cleaning ({why}); "
            "give longer, unclipped recordings of clear speech"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the set from a training container
        _write(out_dir, staging, summary, clips)
        _replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary
