"""Encoder choices for shards and for the final output, derived from the job's video settings.

``intermediate="fast"`` encodes every shard once with the final codec and quality, without
B-frames so that decode order is presentation order; the reducer then joins the shards by copying
packets (one encode, no generation loss). ``intermediate="lossless"`` writes FFV1 shards and the
reducer encodes the output once.
"""

from __future__ import annotations

from farm.media.probe import VideoInfo
from farm.media.video_io import EncoderSettings, encoder_pix_fmt

_ENCODER_NAMES = {"h264": "libx264", "hevc": "libx265", "ffv1": "ffv1"}  # ffv1: shards only


def _options(codec: str, crf: int, preset: str, *, b_frames: bool) -> dict[str, str]:
    if codec == "libx264":
        options = {"preset": preset}
        options.update({"qp": "0"} if crf == 0 else {"crf": str(crf)})
        if not b_frames:
            options["bf"] = "0"
        return options
    if codec == "libx265":
        params = ["log-level=error"]
        params.append("lossless=1" if crf == 0 else f"crf={crf}")
        if not b_frames:
            params.append("bframes=0")
        return {"preset": preset, "x265-params": ":".join(params)}
    # FFV1 version 3 with slice CRCs: intra-only, multithreaded, detects corruption.
    return {"level": "3", "slicecrc": "1", "g": "1"}


def final_encoder(
    codec: str, crf: int, preset: str, video: VideoInfo, threads: int, *, b_frames: bool = True
) -> EncoderSettings:
    name = _ENCODER_NAMES[codec]
    return EncoderSettings(
        codec=name,
        pix_fmt=encoder_pix_fmt(name, video.pix_fmt, video.width, video.height),
        width=video.width,
        height=video.height,
        options=tuple(sorted(_options(name, crf, preset, b_frames=b_frames).items())),
        color=video.color,
        threads=threads,
    )


def shard_encoder(
    intermediate: str, codec: str, crf: int, preset: str, video: VideoInfo, threads: int
) -> EncoderSettings:
    if intermediate == "lossless":
        return final_encoder("ffv1", 0, preset, video, threads)
    return final_encoder(codec, crf, preset, video, threads, b_frames=False)


def joins_by_copy(intermediate: str, codec: str) -> bool:
    """Whether the reducer can join shard packets without re-encoding."""
    del codec  # every final codec joins by copy from 'fast' shards; FFV1 shards always encode
    return intermediate == "fast"
