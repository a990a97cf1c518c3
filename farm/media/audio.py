"""The source audio as one PCM array, and raw PCM files for the single final encode."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import av.error
import numpy as np

from farm.errors import MediaError, plain_reason
from farm.media.probe import AudioInfo


@dataclass(frozen=True)
class RawAudio:
    """A raw little-endian float32 interleaved PCM file and how to read it."""

    path: Path
    sample_rate: int
    channels: int
    layout: str
    samples: int


def as_2d(audio: np.ndarray) -> np.ndarray:
    """Audio as float32 (samples, channels); a 1-D array is one channel."""
    arr = np.asarray(audio, dtype=np.float32)
    if arr.ndim == 1:
        return arr[:, None]
    if arr.ndim != 2:
        raise MediaError(f"audio must be (samples, channels), got an array of shape {arr.shape}")
    return arr


def decode_audio(path: Path, audio: AudioInfo) -> np.ndarray:
    """Decode the first audio stream to float32 ``(samples, channels)``, exactly as probed."""
    chunks: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=stream.rate)
            for frame in container.decode(stream):
                for converted in resampler.resample(frame):
                    chunks.append(converted.to_ndarray())
            for converted in resampler.resample(None):
                chunks.append(converted.to_ndarray())
    except av.error.FFmpegError as exc:
        raise MediaError(f"{path}: decoding the audio failed: {plain_reason(exc)}") from None
    if not chunks:
        return np.zeros((audio.sample_count, audio.channels), dtype=np.float32)
    planar = np.concatenate(chunks, axis=1)
    pcm = np.ascontiguousarray(planar.T, dtype=np.float32)
    if pcm.shape[0] != audio.sample_count:
        raise MediaError(
            f"{path}: audio decoded to {pcm.shape[0]} samples, probed {audio.sample_count}"
        )
    return pcm


def write_raw_pcm(pcm: np.ndarray, path: Path, sample_rate: int, layout: str) -> RawAudio:
    """Write ``(samples, channels)`` float32 PCM as raw interleaved f32le."""
    data = np.ascontiguousarray(pcm, dtype="<f4")
    path.parent.mkdir(parents=True, exist_ok=True)
    data.tofile(path)
    return RawAudio(path, sample_rate, int(data.shape[1]), layout, int(data.shape[0]))
