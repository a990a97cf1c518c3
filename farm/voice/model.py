"""Value objects of the voice stage: plans, sentences, synthesized audio and reports.

All offsets are integer samples at the source audio's sample rate; ranges are half-open
``[start, stop)``. A sentence on the timeline::

    start_sample      speech_start        speech_stop        stop_sample         slot_stop_sample
        |  kept silence  |==== speech ========|  kept silence  |   gap to the next   |
                         ^ the new voice starts here, exactly     sentence's start ---^

The new voice is fitted to ``speech_stop - speech_start`` and may borrow the gap up to
``slot_stop_sample`` (the next sentence's ``speech_start``, or the end of the video).
Seconds are derived for reports only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

LoudnessMethod = Literal["lufs", "rms", "none"]


@dataclass(frozen=True, slots=True)
class Sentence:
    """One unit of re-voicing: a slice of the source with its text (none in `vc` mode)."""

    index: int
    start_sample: int
    stop_sample: int
    speech_start_sample: int
    speech_stop_sample: int
    slot_stop_sample: int
    text: str | None = None
    language: str = "en"

    @property
    def speech_samples(self) -> int:
        return self.speech_stop_sample - self.speech_start_sample

    @property
    def slot_samples(self) -> int:
        """Room from the speech start to the next sentence (the most the new voice may use)."""
        return self.slot_stop_sample - self.speech_start_sample


@dataclass(frozen=True, eq=False)
class VoicePlan:
    """What the voice stage will do: sentences on the source timeline, plus the audio they need.

    ``vocals`` is the peak-normalised mono voice track (``gain`` is the factor applied to it);
    ``background`` is the separated rest, shape (samples, channels), or None when nothing was
    separated (``separator='none'``).
    """

    sample_rate: int
    channels: int
    total_samples: int
    sentences: tuple[Sentence, ...]
    vocals: np.ndarray
    gain: float
    background: np.ndarray | None
    source_profile: VoiceProfile | None = None
    warnings: tuple[str, ...] = ()

    def sentence_source(self, sentence: Sentence) -> np.ndarray:
        """The normalised mono voice of a sentence's speech: the input of `synthesize_sentence`."""
        return np.ascontiguousarray(
            self.vocals[sentence.speech_start_sample : sentence.speech_stop_sample]
        )

    def sentence_original(self, sentence: Sentence) -> np.ndarray:
        """The sentence's speech at its original level: the loudness target of `fit_sentence`."""
        return self.sentence_source(sentence) / np.float32(self.gain)


SpeakerLabel = Literal["swapped", "other", "unseen"]


@dataclass(frozen=True)
class SentenceSpeaker:
    """Who said one sentence, and the evidence."""

    index: int
    speaker: SpeakerLabel
    swapped_motion: float
    """Largest mouth-opening standard deviation among the swapped person's tracks (0: unseen)."""
    other_motion: float
    """Largest among everyone else's tracks (0: nobody else seen)."""
    frames: int


@dataclass(frozen=True, slots=True)
class VoiceProfile:
    """Speaker statistics used by the `vc` conversion (WORLD analysis at `sample_rate`)."""

    log_f0_mean: float
    log_f0_median: float
    log_f0_std: float
    spectral_centroid_hz: float
    voiced_seconds: float
    sample_rate: int
    log_envelope: tuple[float, ...] = ()
    """Mean natural-log WORLD envelope of the voiced frames, one value per frequency bin
    (the long-term timbre the `vc` conversion maps toward); empty when not measured."""

    @property
    def median_f0_hz(self) -> float:
        return float(np.exp(self.log_f0_median))

    def location(self, statistic: Literal["mean", "median"]) -> float:
        """The log-F0 location the conversion maps between."""
        return self.log_f0_mean if statistic == "mean" else self.log_f0_median


@dataclass(frozen=True, eq=False)
class SentenceAudio:
    """A synthesized sentence: mono float32 at the plan's sample rate, untrimmed."""

    index: int
    samples: np.ndarray
    sample_rate: int
    backend: str
    seed: int
    synth_seconds: float
    keeps_timing: bool = False
    """True when sample k of `samples` corresponds to sample k of the source speech (`vc`)."""


@dataclass(frozen=True, slots=True)
class SentenceReport:
    """What happened to one sentence (goes into the job summary)."""

    index: int
    start_sample: int
    end_sample: int
    start_s: float
    end_s: float
    text: str | None
    backend: str
    seed: int
    length_ratio: float
    """Trimmed synthesized length over the original speech length (before any stretch)."""
    stretch_ratio: float
    """Speed factor applied by the time-stretch (1.0 when none); >1 is faster."""
    in_band: bool
    borrowed_samples: int
    """Samples of the following gap used beyond the original speech end."""
    trimmed_samples: int
    """Samples cut (with a fade) because the voice overran its slot even at the fastest speed."""
    loudness: LoudnessMethod
    gain_db: float
    synth_seconds: float
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class FittedSentence:
    """A sentence ready to place: mono samples starting at `start_sample`, never past its slot."""

    start_sample: int
    samples: np.ndarray
    report: SentenceReport


@dataclass(frozen=True, slots=True)
class StageDecision:
    """Whether the spine should run the voice stage, and why (shown to the user)."""

    run: bool
    reason: str


@dataclass(frozen=True)
class VoiceReport:
    """The voice stage's summary: one entry per sentence, plus job-level facts and warnings."""

    mode: str
    backend: str
    sample_rate: int
    channels: int
    total_samples: int
    sentences: tuple[SentenceReport, ...] = ()
    warnings: tuple[str, ...] = ()
    skipped: bool = False
    clipped_samples: int = 0
    timings_s: dict[str, float] = field(default_factory=dict)
    revoice: str = "all"
    """Whose sentences were re-voiced: ``all``, or ``swapped`` (only the swapped person's)."""
    speakers: tuple[SentenceSpeaker, ...] = ()
    """With ``revoice='swapped'``: who said each sentence; the others kept their audio."""

    @property
    def out_of_band(self) -> tuple[SentenceReport, ...]:
        return tuple(s for s in self.sentences if not s.in_band)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data for the job summary."""
        return asdict(self)
