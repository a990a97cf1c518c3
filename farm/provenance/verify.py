"""`farm verify`: is a file labelled (watermarks, C2PA manifest), unlabelled, tampered with, or
not media at all?

Verdicts, decided in this order::

    not a media file  a directory, an empty file, text, YAML, random bytes: nothing that holds a
                      video or audio stream (and no C2PA manifest that was damaged)
    tampered          a C2PA manifest is there but no longer verifies (or no longer parses)
    labelled          the manifest verifies, or a SyncFarm watermark is found in video or audio
    unlabelled        a readable video or audio file with neither

A path that does not exist is an error (`MediaError`), not a verdict.
"""

from __future__ import annotations

import enum
import re
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

MANIFEST_STORE = re.compile(rb"jumb[\s\S]{4}jumd[\s\S]{17}c2pa\x00")
"""The head of an embedded C2PA manifest store: a JUMBF superbox whose description box (type
UUID, toggles) is labelled "c2pa"."""
C2PA_BMFF_UUID = bytes.fromhex("d8fec3d61b0e483c92975828877ec481")
"""The extended type of the `uuid` box that holds a manifest store in MP4 / MOV (C2PA 2.x)."""
_SCAN_CHUNK = 1 << 20
TEXT_ART_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})
"""FFmpeg decoders that draw text files as video frames: such a file is not a video."""


class Verdict(str, enum.Enum):
    LABELLED = "labelled"
    UNLABELLED = "unlabelled"
    TAMPERED = "tampered"
    NOT_MEDIA = "not_media"

    @property
    def label(self) -> str:
        """The verdict in words, as `farm verify` prints it."""
        return self.value.replace("_", " ")


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
    explanation: str = ""
    """One line saying why the file got its verdict."""

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
            "explanation": self.explanation,
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


def _has_manifest_store(path: Path) -> bool:
    """Whether the file holds a C2PA manifest store (even one that no longer parses): its MP4 box
    id or its JUMBF header, so one flipped byte in either still shows.

    A C2PA reader that cannot parse the file at all says the same for a damaged manifest and for a
    file that never had one (text, Matroska): only the former is tampering.
    """
    tail = b""
    with path.open("rb") as handle:
        while chunk := handle.read(_SCAN_CHUNK):
            window = tail + chunk
            if C2PA_BMFF_UUID in window or MANIFEST_STORE.search(window):
                return True
            tail = window[-64:]
    return False


def _stream_kinds(path: Path) -> set[str] | None:
    """The kinds of stream FFmpeg finds in the file; None when it cannot open it as media.

    Text that FFmpeg renders as pictures (ANSI art for .nfo/.asc, binary text for .bin) is
    reported as "text", not "video".
    """
    try:
        with av.open(str(path)) as container:
            return {
                "text" if stream.codec_context.name in TEXT_ART_CODECS else stream.type
                for stream in container.streams
            }
    except av.error.FFmpegError:
        return None


def _looks_like_mp4(head: bytes) -> bool:
    return head[4:8] == b"ftyp"


def _not_media(path: Path, why: str) -> VerifyReport:
    return VerifyReport(
        path=str(path),
        verdict=Verdict.NOT_MEDIA,
        manifest=ManifestReading(present=False),
        video=None,
        audio=None,
        job_id=None,
        explanation=why,
    )


def _ffmpeg_reason(exc: av.error.FFmpegError) -> str:
    """FFmpeg's words without its errno number or the file name it repeats."""
    return str(getattr(exc, "strerror", "") or "").strip() or type(exc).__name__


def _explain(
    verdict: Verdict,
    manifest: ManifestReading,
    video: WatermarkReading | None,
    audio: WatermarkReading | None,
) -> str:
    if verdict is Verdict.TAMPERED:
        if manifest.state == "Unreadable":
            return "its C2PA manifest no longer parses: the file was altered or cut after signing"
        failures = ", ".join(manifest.failures[:3]) or manifest.state
        return f"its C2PA manifest no longer verifies ({failures}): the file changed after signing"
    marks = [
        kind
        for kind, reading in (("video", video), ("audio", audio))
        if reading is not None and reading.found
    ]
    found = f"{' and '.join(marks)} watermark{'s' if len(marks) > 1 else ''}"
    if verdict is Verdict.LABELLED:
        if manifest.valid:
            signer = "a trusted operator" if manifest.trusted else "a key not in the trust list"
            also = f"; the {found} found" if marks else ""
            return f"a C2PA manifest signed by {signer} verifies{also}"
        verb = "were" if len(marks) > 1 else "was"
        return f"no C2PA manifest, but the SyncFarm {found} {verb} found"
    streams = [kind for kind, reading in (("video", video), ("audio", audio)) if reading]
    return f"no C2PA manifest and no SyncFarm watermark in its {' or '.join(streams) or 'streams'}"


def verify_file(
    path: Path,
    trust: TrustList,
    *,
    max_video_s: float = MAX_VIDEO_S,
    max_audio_s: float = MAX_AUDIO_S,
) -> VerifyReport:
    """Check a file's C2PA manifest and both watermarks.

    Verdict: NOT_MEDIA when the path is a directory or a file without a video or audio stream
    (and no damaged manifest); TAMPERED when a manifest is present but no longer verifies;
    LABELLED when the manifest verifies or a watermark is found; UNLABELLED otherwise.
    MediaError when the path does not exist or cannot be read.
    """
    if path.is_dir():
        return _not_media(path, f"{path} is a directory, not a media file")
    if not path.exists():
        raise MediaError(f"{path} does not exist")
    if not path.is_file():
        return _not_media(path, f"{path} is not a regular file, so not a media file")
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except OSError as exc:
        raise MediaError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    if not head:
        return _not_media(path, f"{path} is empty, not a video or audio file")
    manifest = read_manifest(path, trust)
    if manifest.state == "Unreadable" and not _has_manifest_store(path):
        # The C2PA reader could not parse the file as MP4, and no manifest was ever in it.
        manifest = ManifestReading(present=False)
    kinds = _stream_kinds(path)
    media = kinds is not None and bool(kinds & {"video", "audio"})
    if not media and not manifest.tampered:
        if kinds is None and _looks_like_mp4(head):
            raise MediaError(
                f"{path} looks like an MP4 but FFmpeg cannot read it: damaged or incomplete"
            )
        held = ", ".join(sorted((kinds or set()) - {"text"}))
        detail = f" (it holds only {held} streams)" if held else ""
        return _not_media(path, f"{path} is not a video or audio file{detail}")
    expected: bytes | None = None
    if manifest.payload_hex:
        try:
            expected = parse_payload_hex(manifest.payload_hex)
        except ValueError:
            expected = None
    video = audio = None
    if media:
        try:
            video = _read_video(path, expected, max_video_s)
            audio = _read_audio(path, expected, max_audio_s)
        except av.error.FFmpegError as exc:
            if manifest.tampered:
                video = audio = None
            else:
                raise MediaError(f"cannot decode {path.name}: {_ffmpeg_reason(exc)}") from None
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
        explanation=_explain(verdict, manifest, video, audio),
    )
