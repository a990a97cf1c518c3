"""Probe a video with PyAV: streams, exact frame timeline, colour tags, rotation, audio layout.

The frame timeline is read from the demuxer's packets (no decode), so it is exact and cheap: every
presented frame's PTS in the stream's time base, sorted. Frame indices are positions in that list;
everything downstream (scene cuts, shards, the output's timestamps) is expressed in those indices.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error

from farm.errors import ProbeError, plain_reason


@dataclass(frozen=True)
class ColorTags:
    """Colour description of the video stream, as FFmpeg enum values (2/0 mean unspecified)."""

    range: int
    space: int
    primaries: int
    transfer: int


@dataclass(frozen=True)
class VideoInfo:
    codec: str
    width: int
    height: int
    pix_fmt: str
    bit_depth: int
    fps: Fraction
    """Nominal (average) frame rate as a rational, e.g. Fraction(30000, 1001)."""
    time_base: Fraction
    frame_pts: tuple[int, ...]
    """Presentation timestamps of every frame, in ``time_base`` units, ascending."""
    is_vfr: bool
    rotation: int
    """Display rotation in degrees (counter-clockwise), carried to the output, never applied."""
    color: ColorTags

    @property
    def frame_count(self) -> int:
        return len(self.frame_pts)

    @property
    def duration_s(self) -> Fraction:
        """From the first frame's PTS to the end of the last frame (last delta repeated)."""
        return self.frame_end_pts() * self.time_base - self.frame_pts[0] * self.time_base

    def frame_end_pts(self) -> int:
        """PTS just after the last frame (the last frame lasts as long as the one before it)."""
        pts = self.frame_pts
        if len(pts) >= 2:
            return pts[-1] + (pts[-1] - pts[-2])
        return pts[-1] + max(1, round(1 / (self.fps * self.time_base)))


@dataclass(frozen=True)
class AudioInfo:
    codec: str
    sample_rate: int
    channels: int
    layout: str
    sample_count: int
    """Exact decoded sample count per channel."""


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    container: str
    size_bytes: int
    video: VideoInfo
    audio: AudioInfo | None
    extra: tuple[str, ...] = ()
    """Streams besides the first video and audio ones, which the output does not carry."""


def _bit_depth(pix_fmt: str) -> int:
    try:
        return int(av.VideoFormat(pix_fmt).components[0].bits)
    except (ValueError, IndexError):
        return 8


def _frame_timeline(container: av.container.InputContainer, stream: av.VideoStream) -> list[int]:
    """Sorted PTS of every frame the decoder will present (packets flagged discard excluded)."""
    pts: list[int] = []
    missing = 0
    for packet in container.demux(stream):
        if packet.size == 0:
            continue  # flush packet
        if packet.is_discard:
            continue  # edit lists mark packets whose frames are never shown
        if packet.pts is None:
            missing += 1
            continue
        pts.append(int(packet.pts))
    if missing:
        raise ProbeError(
            f"{missing} video packets carry no timestamps; remux the file to MP4 or MKV "
            "(ffmpeg -i IN -c copy OUT.mkv) and try again"
        )
    pts.sort()
    return pts


def _is_vfr(pts: list[int]) -> bool:
    if len(pts) < 3:
        return False
    deltas = {b - a for a, b in itertools.pairwise(pts)}
    # One tick of jitter comes from rounding a rational rate into the time base (29.97 in 1/1000).
    return max(deltas) - min(deltas) > 1


def _count_audio_samples(path: Path) -> int:
    with av.open(str(path)) as container:
        total = 0
        for frame in container.decode(audio=0):
            total += frame.samples
        return total


def probe(path: Path) -> MediaInfo:
    """Read everything the pipeline needs about a video; raise `ProbeError` naming the problem."""
    path = Path(path)
    if not path.exists():
        raise ProbeError(f"input {path} does not exist")
    if not path.is_file():
        raise ProbeError(f"input {path} is not a file")
    if not os.access(path, os.R_OK):
        raise ProbeError(f"input {path} is not readable (check its permissions)")
    size = path.stat().st_size
    if size == 0:
        raise ProbeError(f"input {path} is empty (0 bytes)")
    try:
        return _probe(path, size)
    except ProbeError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError, StopIteration) as exc:
        raise ProbeError(f"input {path} is not a readable video: {plain_reason(exc)}") from None


def _probe(path: Path, size: int) -> MediaInfo:
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ProbeError(f"input {path} has no video stream")
        vstream = container.streams.video[0]
        cc = vstream.codec_context
        if vstream.time_base is None:
            raise ProbeError(f"input {path}: video stream has no time base")
        time_base = Fraction(vstream.time_base)
        codec = cc.name
        pix_fmt = cc.pix_fmt or "yuv420p"
        width, height = cc.width, cc.height
        color = ColorTags(
            range=int(cc.color_range or 0),
            space=int(cc.colorspace if cc.colorspace is not None else 2),
            primaries=int(cc.color_primaries if cc.color_primaries is not None else 2),
            transfer=int(cc.color_trc if cc.color_trc is not None else 2),
        )
        rate = vstream.average_rate or vstream.guessed_rate or vstream.base_rate
        audio_stream = container.streams.audio[0] if container.streams.audio else None
        audio_meta = None
        if audio_stream is not None:
            acc = audio_stream.codec_context
            audio_meta = (
                acc.name,
                int(acc.sample_rate or audio_stream.rate or 0),
                acc.channels,
                acc.layout.name if acc.layout else "",
            )
        extra = tuple(
            _describe_stream(stream)
            for stream in container.streams
            if stream is not vstream and stream is not audio_stream
        )
        frame_pts = _frame_timeline(container, vstream)

    if not frame_pts:
        raise ProbeError(f"input {path} has a video stream with zero frames")
    if width <= 0 or height <= 0:
        raise ProbeError(f"input {path}: video stream has no dimensions")

    # Decode the first and the last frame: a truncated file fails here, not in a worker.
    rotation = 0
    with av.open(str(path)) as container:
        first = next(container.decode(video=0), None)
        if first is None:
            raise ProbeError(f"input {path}: no video frame could be decoded")
        rotation = int(getattr(first, "rotation", 0) or 0) % 360
        if first.color_range:
            color = ColorTags(
                color.range or int(first.color_range), color.space, color.primaries, color.transfer
            )

    if rate is None:
        span = (frame_pts[-1] - frame_pts[0]) * time_base
        rate = Fraction(len(frame_pts) - 1) / span if span > 0 else Fraction(25)
    fps = Fraction(rate).limit_denominator(1001 * 1000)

    audio: AudioInfo | None = None
    if audio_meta is not None:
        samples = _count_audio_samples(path)
        name, sample_rate, channels, layout = audio_meta
        if samples > 0 and sample_rate > 0:
            audio = AudioInfo(name, sample_rate, channels, layout, samples)

    video = VideoInfo(
        codec=codec,
        width=width,
        height=height,
        pix_fmt=pix_fmt,
        bit_depth=_bit_depth(pix_fmt),
        fps=fps,
        time_base=time_base,
        frame_pts=tuple(frame_pts),
        is_vfr=_is_vfr(frame_pts),
        rotation=rotation,
        color=color,
    )
    return MediaInfo(
        path=path,
        container=container.format.name,
        size_bytes=size,
        video=video,
        audio=audio,
        extra=extra,
    )


def _describe_stream(stream: av.stream.Stream) -> str:
    """E.g. 'stream #2 (audio, aac, language deu)', 'stream #3 (video, mjpeg, cover art)'."""
    parts = [stream.type, stream.codec_context.name if stream.codec_context else "unknown"]
    disposition = int(getattr(stream, "disposition", 0) or 0)
    if disposition & int(av.stream.Disposition.attached_pic):
        parts.append("cover art")
    language = (stream.metadata or {}).get("language")
    if language and language != "und":
        parts.append(f"language {language}")
    return f"stream #{stream.index} ({', '.join(parts)})"
