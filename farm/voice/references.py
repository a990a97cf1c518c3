"""Pick a GPT-SoVITS reference clip of 3–10 s from the identity's voice clips.

GPT-SoVITS rejects references outside 3–10 s (checked on its 16 kHz reload, dubbing.md §1.4).
In order of preference:

1. a clip already inside the range (clips with a known transcript first, then the one nearest
   6.5 s);
2. the first clip that is too long, cut at its quietest 10 ms frame before the limit;
3. consecutive short clips joined with 0.2 s of silence until the minimum is reached.

Derived clips are written once, content-addressed, to ``gpt_sovits.reference_dir`` (default: the
system temp dir), which the server must be able to read. A transcript is taken from a sidecar file
with the same stem (``clip.txt`` or ``clip.lab``); derived clips keep it only when it still matches
(merging known texts) and drop it when the audio was cut.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from farm.errors import MediaError, plain_reason
from farm.voice.settings import VoiceSettings
from farm.voice.signal import frame_rms, read_wav_mono

_MARGIN_S = 0.1
_JOIN_SILENCE_S = 0.2
_PREFERRED_S = 6.5


@dataclass(frozen=True, slots=True)
class ReferenceClip:
    """The reference sent to the TTS server."""

    path: Path
    text: str
    seconds: float
    derived: bool = False


def reference_transcript(path: Path) -> str:
    """The clip's transcript from ``<stem>.txt`` or ``<stem>.lab`` beside it, else ""."""
    for suffix in (".txt", ".lab"):
        side = path.with_suffix(suffix)
        if side.is_file():
            try:
                return " ".join(side.read_text(encoding="utf-8").split())
            except (OSError, UnicodeDecodeError):
                return ""
    return ""


def clip_seconds(path: Path) -> float:
    try:
        info = sf.info(str(path))
    except (OSError, RuntimeError, sf.LibsndfileError) as exc:
        raise MediaError(
            f"cannot read voice reference {path}: {plain_reason(exc)}; give a WAV file"
        ) from exc
    return float(info.frames) / float(info.samplerate)


def _write_derived(
    kind: str, sources: Sequence[Path], audio: np.ndarray, rate: int, directory: Path | None
) -> Path:
    digest = hashlib.sha256()
    digest.update(kind.encode())
    for src in sources:
        stat = src.stat()
        digest.update(f"{src.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    out_dir = directory if directory is not None else Path(tempfile.gettempdir()) / "syncfarm-refs"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"ref-{kind}-{digest.hexdigest()[:16]}.wav"
    if not path.exists():
        fd, tmp = tempfile.mkstemp(suffix=".wav", dir=out_dir)
        os.close(fd)
        sf.write(tmp, audio, rate, subtype="PCM_16")
        os.replace(tmp, path)
    return path


def choose_reference(paths: Sequence[Path], settings: VoiceSettings) -> ReferenceClip:
    """A 3–10 s reference (see the module doc); MediaError when the clips cannot make one."""
    if not paths:
        raise MediaError("no voice references given; the identity pack must hold WAV clips")
    lo, hi = settings.reference_min_s, settings.reference_max_s
    durations = [clip_seconds(p) for p in paths]
    inside = [(p, d) for p, d in zip(paths, durations, strict=True) if lo <= d <= hi]
    if inside:
        path, seconds = min(
            inside, key=lambda pd: (reference_transcript(pd[0]) == "", abs(pd[1] - _PREFERRED_S))
        )
        return ReferenceClip(path=path, text=reference_transcript(path), seconds=seconds)
    out_dir = settings.gpt_sovits.reference_dir
    long_clips = [p for p, d in zip(paths, durations, strict=True) if d > hi]
    if long_clips:
        src = long_clips[0]
        audio, rate = read_wav_mono(src)
        hop = max(1, rate // 100)
        rms = frame_rms(audio, 2 * hop, hop)
        first = int((lo + _MARGIN_S) * rate) // hop
        last = int((hi - _MARGIN_S) * rate) // hop
        cut = (first + int(rms[first : last + 1].argmin())) * hop
        path = _write_derived("trim", [src], audio[:cut], rate, out_dir)
        return ReferenceClip(path=path, text="", seconds=cut / rate, derived=True)
    # every clip is short: join neighbours until the minimum is reached
    for begin in range(len(paths)):
        total = 0.0
        for end in range(begin, len(paths)):
            total += durations[end] + (_JOIN_SILENCE_S if end > begin else 0.0)
            if total > hi - _MARGIN_S:
                break
            if total >= lo + _MARGIN_S:
                group = list(paths[begin : end + 1])
                pieces: list[np.ndarray] = []
                rate = 0
                for member in group:
                    audio, sr = read_wav_mono(member)
                    if rate == 0:
                        rate = sr
                    elif sr != rate:
                        raise MediaError(
                            f"voice references {group[0].name} ({rate} Hz) and {member.name} "
                            f"({sr} Hz) differ in sample rate; cannot merge them into a reference"
                        )
                    if pieces:
                        pieces.append(np.zeros(int(_JOIN_SILENCE_S * rate), dtype=np.float32))
                    pieces.append(audio)
                joined = np.concatenate(pieces)
                texts = [reference_transcript(m) for m in group]
                text = " ".join(texts) if all(texts) else ""
                path = _write_derived("merge", group, joined, rate, out_dir)
                return ReferenceClip(path=path, text=text, seconds=joined.size / rate, derived=True)
    listing = ", ".join(f"{p.name} {d:.2f} s" for p, d in zip(paths, durations, strict=True))
    raise MediaError(
        f"no GPT-SoVITS reference of {lo:.0f}–{hi:.0f} s can be made from the voice clips "
        f"({listing}); add a clip of {lo:.0f}–{hi:.0f} s of the identity speaking"
    )
