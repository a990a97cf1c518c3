"""Sentence text from a transcript file: timed subtitles (SRT/VTT/ASS via pysubs2) or plain text.

Timed cues become the sentences themselves (their times converted to samples once). Plain text
carries no times, so it is spread over the slicer's clips (`align_text`).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pysubs2

from farm.errors import MediaError, SpecError

SUBTITLE_FORMATS = {".srt": "srt", ".vtt": "vtt", ".ass": "ass", ".ssa": "ssa"}
PLAIN_SUFFIXES = (".txt", ".text", ".lab")


@dataclass(frozen=True, slots=True)
class Cue:
    """A timed subtitle line, in milliseconds as written in the file."""

    start_ms: int
    end_ms: int
    text: str


@dataclass(frozen=True)
class Transcript:
    """Either timed cues (subtitle files) or untimed lines (plain text)."""

    path: Path
    cues: tuple[Cue, ...] = ()
    lines: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def timed(self) -> bool:
        return bool(self.cues)


def _decode(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read transcript {path}: {exc.strerror or exc}") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"transcript {path} is not UTF-8 (bad byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start}); re-save it as UTF-8, e.g. `iconv -f latin1 -t utf-8`"
        ) from None


def read_transcript(path: Path) -> Transcript:
    """Parse a transcript file; SpecError names the file and what is wrong with it."""
    suffix = path.suffix.lower()
    if suffix not in SUBTITLE_FORMATS and suffix not in PLAIN_SUFFIXES:
        known = ", ".join([*SUBTITLE_FORMATS, *PLAIN_SUFFIXES])
        raise SpecError(f"transcript {path}: unknown kind {suffix!r}; use one of {known}")
    text = _decode(path)
    if suffix in PLAIN_SUFFIXES:
        lines = tuple(" ".join(line.split()) for line in text.splitlines() if line.strip())
        if not lines:
            raise SpecError(
                f"transcript {path} is empty; give the spoken text, one sentence a line"
            )
        return Transcript(path=path, lines=lines)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            subs = pysubs2.SSAFile.from_string(text, format_=SUBTITLE_FORMATS[suffix])
    except (pysubs2.Pysubs2Error, ValueError, KeyError, IndexError) as exc:
        raise SpecError(
            f"subtitle file {path} is malformed ({type(exc).__name__}: {exc}); check it opens in "
            "a subtitle editor"
        ) from None
    cues: list[Cue] = []
    notes = [f"{path.name}: {w.message}" for w in caught]
    for number, event in enumerate(subs, start=1):
        if event.is_comment:
            continue
        line = " ".join(event.plaintext.split())
        if not line:
            notes.append(f"{path.name}: cue {number} has no text; ignored")
            continue
        if event.end <= event.start:
            notes.append(
                f"{path.name}: cue {number} ({line[:40]!r}) ends at {event.end} ms, not after its "
                f"start {event.start} ms; ignored"
            )
            continue
        cues.append(Cue(start_ms=max(0, int(event.start)), end_ms=int(event.end), text=line))
    if not cues:
        raise SpecError(
            f"subtitle file {path} has no usable cues (is it malformed or empty?); expected "
            f"{SUBTITLE_FORMATS[suffix].upper()} cues with start/end times and text"
        )
    cues.sort(key=lambda c: (c.start_ms, c.end_ms))
    return Transcript(path=path, cues=tuple(cues), warnings=tuple(notes))


_SENTENCE_END = re.compile(r"(?<=[.!?;。！？])\s+")


def align_text(lines: tuple[str, ...], durations: list[int]) -> list[str]:
    """Spread untimed text over clips of the given lengths (samples), in order, losing nothing.

    One line per clip when the counts agree; else one sentence per clip when those agree; else
    the words are dealt out in proportion to the clip durations.
    """
    if not durations:
        return []
    if len(lines) == len(durations):
        return list(lines)
    sentences = [s for line in lines for s in _SENTENCE_END.split(line) if s.strip()]
    if len(sentences) == len(durations):
        return sentences
    words = " ".join(lines).split()
    total_chars = sum(len(w) + 1 for w in words)
    total = float(sum(durations))
    bounds: list[float] = []
    acc = 0.0
    for d in durations:
        acc += d
        bounds.append(acc / total)
    out: list[list[str]] = [[] for _ in durations]
    pos = 0.0
    k = 0
    for word in words:
        mid = (pos + (len(word) + 1) / 2) / total_chars
        while k < len(durations) - 1 and mid > bounds[k]:
            k += 1
        out[k].append(word)
        pos += len(word) + 1
    return [" ".join(ws) for ws in out]


class TimedText(Protocol):
    """Anything with start/end seconds and text (an `farm.voice.asr.AsrSegment`)."""

    @property
    def start(self) -> float: ...

    @property
    def end(self) -> float: ...

    @property
    def text(self) -> str: ...


def write_srt(cues: Sequence[TimedText | tuple[float, float, str]], path: Path) -> Path:
    """Write timed text (seconds) as an SRT file with pysubs2; empty texts are skipped."""
    subs = pysubs2.SSAFile()
    for cue in cues:
        start, end, text = cue if isinstance(cue, tuple) else (cue.start, cue.end, cue.text)
        line = " ".join(str(text).split())
        if not line:
            continue
        start_ms = max(0, round(float(start) * 1000))
        end_ms = max(start_ms + 1, round(float(end) * 1000))
        subs.append(pysubs2.SSAEvent(start=start_ms, end=end_ms, text=line))
    subs.sort()
    try:
        path.write_text(subs.to_string("srt"), encoding="utf-8")
    except OSError as exc:
        raise MediaError(
            f"cannot write subtitles {path}: {exc.strerror or exc}; check the folder is writable"
        ) from exc
    return path
