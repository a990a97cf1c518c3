"""What capping libx264 at AVX2 costs on an AVX-512 CPU (`farm.media.cpu`), in the same run.

    .venv/bin/python -m bench.x264_asm [--frames 150] [--rounds 5]

Encodes the first frames of the GRID hard-cut clip through the workers' `ShardEncoder` with the
default shard settings (one thread, veryfast, CRF 18, no B-frames), alternately with x264's own
CPU detection (``asm=auto``) and with the cap the workers apply, and prints the median times and
their ratio. On a CPU without
AVX-512 the two are the same configuration and it says so. A benchmark: it reports, it does not
assert.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from farm.media.codecs import shard_encoder
from farm.media.cpu import cpu_flags, x264_asm
from farm.media.probe import probe
from farm.media.video_io import EncoderSettings, ShardEncoder


def encode_seconds(
    planes: list[np.ndarray], settings: EncoderSettings, fps: Fraction, out: Path
) -> float:
    """One shard encode through the workers' `ShardEncoder`."""
    started = time.perf_counter()
    encoder = ShardEncoder(out, settings, fps)
    for plane in planes:
        encoder.encode(av.VideoFrame.from_ndarray(plane, format=settings.pix_fmt))
    encoder.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--clip", type=Path, default=Path("../shared/media/video/grid_hardcuts_4_speakers_12s.mp4")
    )
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asm = x264_asm(cpu_flags())
    if asm is None:
        print("this CPU has no AVX-512: x264 keeps its own detection, nothing to compare")
        return
    video = probe(args.clip).video
    capped = shard_encoder("fast", "h264", 18, "veryfast", video, 1)
    # An `asm` of the caller's own is left alone: "auto" is x264's detection, AVX-512 included.
    detected = dataclasses.replace(
        capped, options=tuple(sorted({**capped.option_dict(), "x264-params": "asm=auto"}.items()))
    )
    with av.open(str(args.clip)) as container:
        planes = []
        for frame in container.decode(video=0):
            planes.append(frame.to_ndarray(format=capped.pix_fmt))
            if len(planes) == args.frames:
                break
    times: dict[str, list[float]] = {"detected": [], "capped": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):  # alternated, so drift in the machine's load hits both
            for name, settings in (("detected", detected), ("capped", capped)):
                out = Path(tmp) / f"{name}.mkv"
                times[name].append(encode_seconds(planes, settings, video.fps, out))
    base, ours = statistics.median(times["detected"]), statistics.median(times["capped"])
    print(f"{len(planes)} frames {video.width}x{video.height}, {args.rounds} rounds, asm={asm}")
    print(f"x264's detection (AVX-512): median {base:.3f} s")
    print(f"capped at AVX2:             median {ours:.3f} s")
    print(f"ratio capped / detected:    {ours / base:.3f}")


if __name__ == "__main__":
    main()
