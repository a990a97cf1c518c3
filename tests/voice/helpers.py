"""Generated signals and small utilities shared by the voice tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyworld as pw
import soundfile as sf

from farm.pipeline.voice import voice_track_in_process
from farm.voice.model import VoiceReport
from farm.voice.settings import VoiceSettings
from tests.conftest import media_path


def load_mono(relative: str) -> tuple[np.ndarray, int]:
    """A file under shared/media as mono float32 (fails, never skips, when missing)."""
    data, rate = sf.read(str(media_path(relative)), dtype="float32", always_2d=True)
    return data.mean(axis=1), int(rate)


def bursts(
    segments: list[tuple[bool, int]], sample_rate: int, amplitude: float = 0.3, freq: float = 220.0
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Concatenate loud sine bursts (True) and digital silence (False) of the given lengths (ms).

    Returns the signal and the [start, stop) sample ranges of the bursts.
    """
    pieces: list[np.ndarray] = []
    loud: list[tuple[int, int]] = []
    pos = 0
    for is_loud, ms in segments:
        n = sample_rate * ms // 1000
        if is_loud:
            t = np.arange(n) / sample_rate
            pieces.append((amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32))
            loud.append((pos, pos + n))
        else:
            pieces.append(np.zeros(n, dtype=np.float32))
        pos += n
    return np.concatenate(pieces) if pieces else np.zeros(0, np.float32), loud


def median_f0(audio: np.ndarray, sample_rate: int) -> float:
    """Median F0 (Hz) of the voiced frames, measured with WORLD DIO + StoneMask."""
    x = np.asarray(audio, dtype=np.float64)
    f0, t = pw.dio(x, sample_rate, f0_floor=60.0, f0_ceil=600.0, frame_period=5.0)
    f0 = pw.stonemask(x, f0, t, sample_rate)
    return float(np.median(f0[f0 > 0]))


def write_tone(path: Path, seconds: float, sample_rate: int = 16000, freq: float = 150.0) -> Path:
    """A harmonic-rich buzz of the given length (stands in for a voice clip)."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, 12))
    sf.write(str(path), (0.2 * wave).astype(np.float32), sample_rate, subtype="PCM_16")
    return path


def revoice(
    audio: np.ndarray,
    sample_rate: int,
    settings: VoiceSettings,
    voice_refs: Sequence[Path],
    work_dir: Path,
) -> tuple[np.ndarray, VoiceReport]:
    """The voice stage on one track through the units production runs."""
    return voice_track_in_process(audio, sample_rate, settings, voice_refs, work_dir)
