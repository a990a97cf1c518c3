"""`farm verify`: is a file labelled (watermarks, C2PA manifest), unlabelled, or tampered with?"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from farm.errors import MediaError
from farm.provenance.audio_watermark import detect_audio_watermark
from farm.provenance.keys import TrustList
from farm.provenance.manifest import ManifestReading, read_manifest
from farm.provenance.payload import parse_payload_hex
from farm.provenance.video_watermark import VideoWatermarkDetector, WatermarkReading, luma_levels

MAX_VIDEO_S = 20.0
"""Frames read for the video watermark (5 s suffice; more only adds confidence)."""
MAX_AUDIO_S = 60.0


class Verdict(str, enum.Enum):
    LABELLED = "labelled"
    UNLABELLED = "unlabelled"
    TAMPERED = "tampered"


@dataclass(frozen=True)
class VerifyReport:
    path: str
    verdict: Verdict
    manifest: ManifestReading
    video: WatermarkReading | None
    """None when the file has no video stream."""
    audio: WatermarkReading | None
    """None when the file has no audio stream."""
    job_id: str | None

    def to_json_dict(self) -> dict[str, Any]:
        def reading(r: WatermarkReading | None) -> dict[str, Any] | None:
            if r is None:
                return None
            return {
                "found": r.found,
                "payload": r.payload.hex() if r.payload else None,
                "bit_accuracy": r.bit_accuracy,
                "frame_bit_accuracy": r.frame_bit_accuracy,
                "coherence": round(r.coherence, 4),
                "units": r.units,
            }

        manifest = asdict(self.manifest)
        manifest["failures"] = list(self.manifest.failures)
        return {
            "path": self.path,
            "verdict": self.verdict.value,
            "job_id": self.job_id,
            "manifest": manifest,
            "video_watermark": reading(self.video),
            "audio_watermark": reading(self.audio),
        }


def _read_video(path: Path, expected: bytes | None, max_s: float) -> WatermarkReading | None:
    with av.open(str(path)) as container:
        if not container.streams.video:
            return None
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        # The farm marks the Y plane; frames marked in BGR (the fallback for pixel formats numpy
        # cannot hold, or other tools) are read from BGR. Either reading may find the mark.
        luma_detector = VideoWatermarkDetector()
        bgr_detector = VideoWatermarkDetector()
        start: float | None = None
        for frame in container.decode(stream):
            seconds = float(frame.time) if frame.time is not None else 0.0
            start = seconds if start is None else start
            if seconds - start > max_s:
                break
            luma_detector.add_luma(luma_levels(frame))
            bgr_detector.add(frame.to_ndarray(format="bgr24"))
        readings = [luma_detector.reading(expected), bgr_detector.reading(expected)]
        found = [r for r in readings if r.found]
        if found:
            return found[0]
        return max(readings, key=lambda r: r.coherence)


def _read_audio(path: Path, expected: bytes | None, max_s: float) -> WatermarkReading | None:
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        rate = int(stream.rate or stream.codec_context.sample_rate)
        chunks: list[np.ndarray] = []
        total = 0
        for frame in container.decode(stream):
            samples = frame.to_ndarray().astype(np.float32)
            if frame.format.is_planar:
                samples = samples.T
            else:
                samples = samples.reshape(-1, len(frame.layout.channels))
            chunks.append(samples)
            total += len(samples)
            if total > max_s * rate:
                break
        if not chunks:
            return None
        return detect_audio_watermark(np.concatenate(chunks), rate, expected=expected)


def verify_file(
    path: Path,
    trust: TrustList,
    *,
    max_video_s: float = MAX_VIDEO_S,
    max_audio_s: float = MAX_AUDIO_S,
) -> VerifyReport:
    """Check a file's C2PA manifest and both watermarks.

    Verdict: TAMPERED when a manifest is present but no longer verifies; LABELLED when the
    manifest verifies or a watermark is found; UNLABELLED otherwise.
    """
    if not path.is_file():
        raise MediaError(f"cannot verify {path}: no such file")
    manifest = read_manifest(path, trust)
    expected: bytes | None = None
    if manifest.payload_hex:
        try:
            expected = parse_payload_hex(manifest.payload_hex)
        except ValueError:
            expected = None
    try:
        video = _read_video(path, expected, max_video_s)
        audio = _read_audio(path, expected, max_audio_s)
    except av.error.FFmpegError as exc:
        if manifest.tampered:
            video = audio = None
        else:
            raise MediaError(f"cannot decode {path.name}: {exc}") from None
    if manifest.tampered:
        verdict = Verdict.TAMPERED
    elif manifest.valid or (video and video.found) or (audio and audio.found):
        verdict = Verdict.LABELLED
    else:
        verdict = Verdict.UNLABELLED
    return VerifyReport(
        path=str(path),
        verdict=verdict,
        manifest=manifest,
        video=video,
        audio=audio,
        job_id=manifest.job_id,
    )
