"""Pure builders of ffmpeg argv lists (unit-tested by list equality; run by `farm.media.ffmpeg`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import ffmpeg

from farm.errors import SpecError
from farm.media.audio import RawAudio
from farm.media.ffmpeg import Capability
from farm.media.probe import ColorTags

AUDIO_ENCODERS: dict[str, Capability] = {"aac": "aac", "opus": "libopus", "flac": "flac"}
CONTAINER_FORMATS = {".mp4": "mp4", ".mov": "mov"}
MOVFLAGS_CONTAINERS = frozenset({"mp4", "mov"})
"""Containers whose mux gets ``-movflags +faststart+use_metadata_tags``."""


def _layout_option(channels: int, layout: str) -> str:
    if layout:
        return layout
    return {1: "mono", 2: "stereo", 6: "5.1"}.get(channels, f"{channels}c")


def mux_capabilities(
    *, rotation: int, audio_codec: str | None, container: str | None = None
) -> frozenset[Capability]:
    """What the ffmpeg running `mux_argv` for this job must be able to do.

    Resolve the binary with these (``select_ffmpeg(mux_capabilities(...))``) before the render,
    so an ffmpeg that cannot mux the result is never picked (Debian 12's 5.1 has no
    ``-display_rotation``). ``audio_codec`` is None when there is no audio; ``container``, when
    given, adds what its muxer flags need.
    """
    needs: set[Capability] = set()
    if rotation:
        needs.add("display_rotation")
    if audio_codec is not None:
        if audio_codec not in AUDIO_ENCODERS:
            raise SpecError(f"audio codec {audio_codec!r} is not one of {sorted(AUDIO_ENCODERS)}")
        # The audio timeline is read as raw f32le, then encoded once.
        needs.update(("f32le", AUDIO_ENCODERS[audio_codec]))
    if container in MOVFLAGS_CONTAINERS:
        needs.add("use_metadata_tags")
    return frozenset(needs)


def mux_argv(
    ffmpeg_bin: str,
    video: Path,
    audio: RawAudio | None,
    output: Path,
    *,
    container: str,
    audio_codec: str = "aac",
    audio_bitrate: str = "192k",
    rotation: int = 0,
    color: ColorTags | None = None,
    metadata: Mapping[str, str] | None = None,
) -> list[str]:
    """Copy the joined video, encode the one PCM timeline once, tag and write ``output``.

    The video is stream-copied (its timestamps are the source's); ``-display_rotation`` puts the
    source's display matrix back without touching pixels.
    """
    video_in = (
        ffmpeg.input(str(video), display_rotation=rotation)
        if rotation
        else ffmpeg.input(str(video))
    )
    streams = [video_in["v:0"]]
    out_kwargs: dict[str, object] = {"c:v": "copy", "f": container}
    if audio is not None:
        audio_in = ffmpeg.input(
            str(audio.path),
            f="f32le",
            ar=audio.sample_rate,
            ch_layout=_layout_option(audio.channels, audio.layout),
        )
        streams.append(audio_in["a:0"])
        out_kwargs["c:a"] = AUDIO_ENCODERS[audio_codec]
        if audio_codec != "flac":
            out_kwargs["b:a"] = audio_bitrate
    if color is not None:
        # Stream copy keeps pixels; these put the source's colour description on the container.
        for option, tag, unknown in (
            ("color_range", color.range, 0),
            ("colorspace", color.space, 2),
            ("color_primaries", color.primaries, 2),
            ("color_trc", color.transfer, 2),
        ):
            if tag != unknown:
                out_kwargs[option] = tag
    if container in MOVFLAGS_CONTAINERS:
        out_kwargs["movflags"] = "+faststart+use_metadata_tags"
    for i, (key, value) in enumerate(sorted((metadata or {}).items())):
        out_kwargs[f"metadata:g:{i}"] = f"{key}={value}"
    stream = ffmpeg.output(*streams, str(output), **out_kwargs)
    return list(stream.compile(cmd=ffmpeg_bin, overwrite_output=True))
