"""What capping libx264 at AVX2 costs on an AVX-512 CPU (`farm.media.cpu`), in the same run.

    .venv/bin/python -m bench.x264_asm [--frames 150] [--rounds 5]

Encodes the first frames of the GRID hard-cut clip with the shard encoder's settings (one
thread, veryfast, CRF 18, no B-frames), alternately with x264's own CPU detection and with the
``asm`` list the workers use, and prints the median times and their ratio. On a CPU without
AVX-512 the two are the same configuration and it says so. A benchmark: it reports, it does not
assert.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import av
import numpy as np

from farm.media.cpu import cpu_flags, x264_asm

CLIP = Path(__file__).resolve().parents[2] / "shared/media/video/grid_hardcuts_4_speakers_12s.mp4"


def encode_seconds(planes: list[np.ndarray], width: int, height: int, asm: str | None) -> float:
    options = {"preset": "veryfast", "crf": "18", "bf": "0"}
    if asm is not None:
        options["x264-params"] = f"asm={asm}"
    started = time.perf_counter()
    with av.open(io.BytesIO(), "w", format="matroska") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1
        stream.codec_context.options = options
        for index, plane in enumerate(planes):
            frame = av.VideoFrame.from_ndarray(plane, format="yuv420p")
            frame.pts = index
            stream.encode(frame)
        stream.encode(None)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asm = x264_asm(cpu_flags())
    if asm is None:
        print("this CPU has no AVX-512: x264 keeps its own detection, nothing to compare")
        return
    with av.open(str(CLIP)) as container:
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        planes = []
        for frame in container.decode(stream):
            planes.append(frame.to_ndarray(format="yuv420p"))
            if len(planes) == args.frames:
                break
    detected, capped = [], []
    for _ in range(args.rounds):  # alternated, so drift in the machine's load hits both
        detected.append(encode_seconds(planes, width, height, None))
        capped.append(encode_seconds(planes, width, height, asm))
    base, ours = statistics.median(detected), statistics.median(capped)
    print(f"{len(planes)} frames {width}x{height}, {args.rounds} rounds, asm={asm}")
    print(f"x264's detection (AVX-512): median {base:.3f} s")
    print(f"capped at AVX2:             median {ours:.3f} s")
    print(f"ratio capped / detected:    {ours / base:.3f}")


if __name__ == "__main__":
    main()
