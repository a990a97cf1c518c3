"""Frame-exact video I/O with PyAV: decode frames ``[start, stop)`` by index, encode shards.

Indices are positions in the probed frame timeline (`VideoInfo.frame_pts`), never float seconds:
the decoder seeks to the keyframe before ``start``, decodes, and keeps a frame only when its PTS is
the timeline's PTS for an index inside the range.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import av.error
import numpy as np

from farm.errors import MediaError, SourceUnavailable, plain_reason
from farm.media.cpu import cpu_flags, x264_run_options
from farm.media.probe import ColorTags

log = logging.getLogger(__name__)

# AVColorSpace -> swscale matrix constant (SWS_CS_*); anything else is BT.601, swscale's default.
_SWS_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}


def sws_matrix(color: ColorTags) -> int:
    return _SWS_MATRIX.get(color.space, 5)


def sws_range(color: ColorTags, pix_fmt: str) -> int:
    """1 = limited (tv), 2 = full (pc); unspecified YUV is limited unless the format is yuvj."""
    if color.range in (1, 2):
        return color.range
    return 2 if pix_fmt.startswith("yuvj") or pix_fmt.startswith(("rgb", "bgr", "gbr")) else 1


@dataclass(frozen=True)
class EncoderSettings:
    """A fixed encoder configuration; every shard of a job uses the same one."""

    codec: str
    """PyAV encoder name: libx264, libx265 or ffv1."""
    pix_fmt: str
    width: int
    height: int
    options: tuple[tuple[str, str], ...]
    color: ColorTags
    threads: int = 1

    def option_dict(self) -> dict[str, str]:
        return dict(self.options)


_X264_FORMATS = {
    "yuv420p",
    "yuv422p",
    "yuv444p",
    "yuv420p10le",
    "yuv422p10le",
    "yuv444p10le",
    "gray",
    "gray10le",
}
_X265_FORMATS = {
    "yuv420p",
    "yuv422p",
    "yuv444p",
    "yuv420p10le",
    "yuv422p10le",
    "yuv444p10le",
    "gray",
}


def encoder_pix_fmt(codec: str, source_pix_fmt: str, width: int, height: int) -> str:
    """The pixel format to encode: the source's when the encoder takes it, never a silent crop.

    4:2:0 cannot carry odd dimensions, so an odd-sized 4:2:0 source is encoded as 4:4:4 with the
    same bit depth instead of losing a row or column.
    """
    fmt = source_pix_fmt.replace("yuvj", "yuv")
    if codec == "ffv1":
        return fmt
    allowed = _X264_FORMATS if codec == "libx264" else _X265_FORMATS
    if fmt not in allowed:
        fmt = "yuv420p10le" if "10" in fmt or "12" in fmt else "yuv420p"
    odd = width % 2 == 1 or height % 2 == 1
    if odd and fmt.startswith(("yuv420p", "yuv422p")):
        fmt = fmt.replace("yuv420p", "yuv444p").replace("yuv422p", "yuv444p")
    if height % 2 == 1 and fmt.startswith("yuv422p"):
        fmt = fmt.replace("yuv422p", "yuv444p")
    return fmt


def decode_range(
    path: Path,
    frame_pts: tuple[int, ...] | list[int],
    start: int,
    stop: int,
    *,
    threads: int = 1,
) -> Iterator[tuple[int, av.VideoFrame]]:
    """Yield ``(index, frame)`` for exactly the frames ``[start, stop)`` of the timeline.

    Raises `MediaError` if a frame of the range never appears (a damaged source).
    """
    if not 0 <= start < stop <= len(frame_pts):
        raise ValueError(f"frame range [{start}, {stop}) outside 0..{len(frame_pts)}")
    wanted = {frame_pts[i]: i for i in range(start, stop)}
    first_pts = frame_pts[start]
    expected = start
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = max(1, threads)
            if start > 0:
                container.seek(first_pts, stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                pts = int(frame.pts)
                if pts < first_pts:
                    continue
                index = wanted.get(pts)
                if index is None:
                    if pts > frame_pts[stop - 1]:
                        break
                    continue
                if index != expected:
                    if index < expected:
                        continue  # a repeated frame after the seek; already emitted
                    raise MediaError(
                        f"{path}: frame {expected} (pts {frame_pts[expected]}) is missing from "
                        f"the decode; got frame {index} next. The source may be damaged"
                    )
                yield index, frame
                expected += 1
                if expected == stop:
                    return
    except OSError as exc:  # PyAV's I/O errors are OSErrors too: the file went away, a mount hiccup
        raise SourceUnavailable(
            f"{path}: reading frames [{start}, {stop}) failed: {exc.strerror or exc}"
        ) from None
    except av.error.FFmpegError as exc:
        raise MediaError(
            f"{path}: decoding frames [{start}, {stop}) failed: {plain_reason(exc)}"
        ) from None
    if expected != stop:
        raise MediaError(
            f"{path}: decoding frames [{start}, {stop}) ended at frame {expected}; "
            "the source is truncated or damaged"
        )


def frame_to_bgr(frame: av.VideoFrame, color: ColorTags) -> np.ndarray:
    """Decoded frame to BGR uint8 with the source's own colour matrix and range."""
    converted = frame.reformat(
        format="bgr24",
        src_colorspace=sws_matrix(color),
        src_color_range=sws_range(color, frame.format.name),
        dst_color_range=2,
    )
    return converted.to_ndarray()


def bgr_to_frame(image: np.ndarray, settings: EncoderSettings) -> av.VideoFrame:
    """BGR uint8 back to the encoder's pixel format with the source's matrix and range."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
    return frame.reformat(
        format=settings.pix_fmt,
        src_color_range=2,
        dst_colorspace=sws_matrix(settings.color),
        dst_color_range=sws_range(settings.color, settings.pix_fmt),
    )


def configure_stream(stream: av.VideoStream, settings: EncoderSettings) -> None:
    cc = stream.codec_context
    cc.width = settings.width
    cc.height = settings.height
    cc.pix_fmt = settings.pix_fmt
    cc.thread_count = max(1, settings.threads)
    options = settings.option_dict()
    if settings.codec == "libx264":
        options = x264_run_options(options, cpu_flags())
    cc.options = options
    apply_color_tags(cc, settings.color)


def apply_color_tags(cc: av.video.codeccontext.VideoCodecContext, color: ColorTags) -> None:
    """Copy the source's colour description onto an encoder or output stream (never guessed)."""
    if color.range in (1, 2):
        cc.color_range = color.range
    for attr, value in (
        ("colorspace", color.space),
        ("color_primaries", color.primaries),
        ("color_trc", color.transfer),
    ):
        if value not in (2, None):
            setattr(cc, attr, value)


class ShardEncoder:
    """Encodes one shard's frames, in order, to a file; counts what it wrote.

    Frames get PTS ``0, 1, 2, ...`` in a ``1/fps`` time base: the reducer re-times every packet
    from the source's own timeline, so the shard file's timing is irrelevant.
    """

    def __init__(self, path: Path, settings: EncoderSettings, fps: Fraction) -> None:
        self.path = path
        self.settings = settings
        self.container = av.open(str(path), mode="w", format="matroska")
        rate = Fraction(fps).limit_denominator(1_000_000)
        self.stream = cast(av.VideoStream, self.container.add_stream(settings.codec, rate=rate))
        configure_stream(self.stream, settings)
        # Fixed here: the muxer rewrites stream.time_base (1/1000 for Matroska) once it starts.
        self.frame_time_base = Fraction(1, 1) / rate
        self.stream.time_base = self.frame_time_base
        self.frames_in = 0
        self.packets_out = 0

    def encode(self, frame: av.VideoFrame) -> None:
        if frame.format.name != self.settings.pix_fmt:
            frame = frame.reformat(format=self.settings.pix_fmt)
        frame.pts = self.frames_in
        frame.time_base = self.frame_time_base
        self.frames_in += 1
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
            self.packets_out += 1

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
            self.packets_out += 1
        self.container.close()

    def abort(self) -> None:
        with contextlib.suppress(av.error.FFmpegError):
            self.container.close()


def map_luma(
    frame: av.VideoFrame, fn: Callable[[np.ndarray, int], np.ndarray]
) -> av.VideoFrame | None:
    """A new frame whose Y plane is ``fn(Y, bit_depth)``; chroma copied untouched.

    Returns None for pixel formats PyAV cannot round-trip through numpy (the caller then takes
    the BGR path).
    """
    name = frame.format.name
    if not name.startswith(("yuv", "gray", "nv")):
        return None
    try:
        planes = frame.to_ndarray()
    except (ValueError, NotImplementedError, TypeError):
        return None
    depth = int(frame.format.components[0].bits)
    if planes.ndim == 3:
        luma = planes[0]
    elif planes.ndim == 2:
        luma = planes[: frame.height]
    else:
        return None
    luma[...] = fn(np.array(luma, copy=True), depth)
    try:
        out = av.VideoFrame.from_ndarray(planes, format=name)
    except (ValueError, NotImplementedError, TypeError):
        return None
    out.color_range = frame.color_range
    out.colorspace = frame.colorspace
    return out


def count_packets(path: Path) -> int:
    """Number of video packets in a file (one per frame for our intra-ordered shards)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for p in container.demux(stream) if p.size > 0)
