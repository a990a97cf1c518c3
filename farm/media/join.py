"""The reducer: validate every shard, join them on the source's own timeline, mux once.

Video packets are re-timed from the probed timeline (frame ``i`` gets the source's ``pts[i]``), so
the output's presentation timestamps are the input's, VFR included, whatever each shard file
says. Audio is one PCM timeline encoded once; encoded audio is never concatenated.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import av
import av.error

from farm.errors import FrameCountMismatch, MediaError, plain_reason
from farm.media.probe import VideoInfo
from farm.media.video_io import EncoderSettings, apply_color_tags, configure_stream
from farm.plan.shards import Shard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardCheck:
    name: str
    codec: str
    width: int
    height: int
    pix_fmt: str
    frames: int
    extradata: bytes


def inspect_shard(path: Path, name: str) -> ShardCheck:
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            cc = stream.codec_context
            frames = sum(1 for p in container.demux(stream) if p.size > 0)
            return ShardCheck(
                name,
                cc.name,
                cc.width,
                cc.height,
                cc.pix_fmt or "",
                frames,
                bytes(cc.extradata or b""),
            )
    except (av.error.FFmpegError, IndexError) as exc:
        raise MediaError(f"shard {name} ({path}) is unreadable: {plain_reason(exc)}") from None


def validate_shards(
    shards: Sequence[Shard], paths: Sequence[Path], expected: EncoderSettings
) -> list[ShardCheck]:
    """Check codec, dimensions, pixel format, frame count and headers of every shard."""
    checks: list[ShardCheck] = []
    for shard, path in zip(shards, paths, strict=True):
        if not path.exists():
            raise MediaError(f"shard {shard.name} is missing: {path}")
        check = inspect_shard(path, shard.name)
        codec_name = (
            expected.codec.removeprefix("lib").replace("x264", "h264").replace("x265", "hevc")
        )
        problems = []
        if check.codec != codec_name:
            problems.append(f"codec {check.codec}, expected {codec_name}")
        if (check.width, check.height) != (expected.width, expected.height):
            problems.append(
                f"size {check.width}x{check.height}, expected {expected.width}x{expected.height}"
            )
        if check.pix_fmt != expected.pix_fmt:
            problems.append(f"pixel format {check.pix_fmt}, expected {expected.pix_fmt}")
        if checks and check.extradata != checks[0].extradata:
            problems.append("codec headers differ from shard " + checks[0].name)
        if problems:
            raise MediaError(f"shard {shard.name} cannot be joined: " + "; ".join(problems))
        if check.frames != shard.frames:
            raise FrameCountMismatch(f"shard {shard.name}", shard.frames, check.frames)
        checks.append(check)
    return checks


def _packet_durations(video: VideoInfo) -> list[int]:
    pts = video.frame_pts
    ends = [*pts[1:], video.frame_end_pts()]
    return [max(1, b - a) for a, b in zip(pts, ends, strict=True)]


def join_by_copy(
    shards: Sequence[Shard], paths: Sequence[Path], video: VideoInfo, out_path: Path
) -> int:
    """Concatenate shard packets into ``out_path`` with the source's timestamps; no re-encode.

    Shards are encoded without B-frames (or intra-only), so packet ``k`` of a shard is frame
    ``start + k`` of the timeline.
    """
    durations = _packet_durations(video)
    written = 0
    with av.open(str(out_path), mode="w", format="mp4") as output:
        out_stream = None
        for shard, path in zip(shards, paths, strict=True):
            with av.open(str(path)) as source:
                in_stream = source.streams.video[0]
                if out_stream is None:
                    out_stream = output.add_stream_from_template(in_stream)
                    out_stream.time_base = video.time_base
                    apply_color_tags(out_stream.codec_context, video.color)
                index = shard.start
                for packet in source.demux(in_stream):
                    if packet.size == 0:
                        continue
                    if index >= shard.stop:
                        raise FrameCountMismatch(
                            f"shard {shard.name}", shard.frames, index - shard.start + 1
                        )
                    packet.stream = out_stream
                    packet.time_base = video.time_base
                    packet.pts = video.frame_pts[index]
                    packet.dts = video.frame_pts[index]
                    packet.duration = durations[index]
                    output.mux(packet)
                    index += 1
                    written += 1
                if index != shard.stop:
                    raise FrameCountMismatch(
                        f"shard {shard.name}", shard.frames, index - shard.start
                    )
    return written


def join_by_encode(
    shards: Sequence[Shard],
    paths: Sequence[Path],
    video: VideoInfo,
    final: EncoderSettings,
    out_path: Path,
) -> int:
    """Decode lossless shards in order and encode the output once, with the source's timestamps."""
    with av.open(str(out_path), mode="w", format="mp4") as output:
        rate = video.fps.limit_denominator(1_000_000)
        stream = cast(av.VideoStream, output.add_stream(final.codec, rate=rate))
        configure_stream(stream, final)
        # The encoder counts in the source's own ticks, so VFR timestamps pass through exactly.
        stream.codec_context.time_base = video.time_base
        stream.time_base = video.time_base
        index = 0
        for shard, path in zip(shards, paths, strict=True):
            with av.open(str(path)) as source:
                source.streams.video[0].thread_type = "AUTO"
                for frame in source.decode(video=0):
                    if index >= len(video.frame_pts):
                        raise FrameCountMismatch("joined shards", len(video.frame_pts), index + 1)
                    if frame.format.name != final.pix_fmt:
                        frame = frame.reformat(format=final.pix_fmt)
                    frame.pts = video.frame_pts[index]
                    frame.time_base = video.time_base
                    for packet in stream.encode(frame):
                        output.mux(packet)
                    index += 1
            if index != shard.stop:
                raise FrameCountMismatch(f"shard {shard.name}", shard.frames, index - shard.start)
        for packet in stream.encode(None):
            output.mux(packet)
    return index
