"""Passthrough pipeline vs. one plain ffmpeg re-encode of the same clip, in the same run.

    .venv/bin/python -m bench.overhead [--seconds 60] [--size 1280x720]

Prints wall times and the ratios pipeline / baseline, cold (the `farm run` process, Ray start
included) and warm (a Ray cluster already running, its workers started by an earlier job, as in
a batch or the service). Goal: warm ratio <= 1.15. The quality judges are left out
(``--no-report``): this measures the farm, and `bench.faces`/`bench.voice` time the judges. A
benchmark, never a test: it reports, it does not assert.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import use_bench_operator
from farm.media.ffmpeg import ffmpeg_binary, run_ffmpeg


def make_source(path: Path, seconds: int, size: str) -> None:
    """A natural-ish clip with scene changes and stereo AAC audio."""
    run_ffmpeg(
        [
            ffmpeg_binary(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={size}:rate=25:duration={seconds}",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=330:sample_rate=48000:duration={seconds}",
            "-vf",
            "hue=H=floor(t/4)*2.1,noise=alls=8:allf=t",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "20",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-ac",
            "2",
            str(path),
        ]
    )


def timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--size", default="1280x720")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="farm-bench-") as tmp_name:
        tmp = Path(tmp_name)
        use_bench_operator(tmp / "farm-home")
        source = tmp / "source.mp4"
        make_source(source, args.seconds, args.size)

        def baseline() -> None:
            run_ffmpeg(
                [
                    ffmpeg_binary(),
                    "-hide_banner",
                    "-loglevel",
                    "error",
                    "-y",
                    "-i",
                    str(source),
                    "-c:v",
                    "libx264",
                    "-preset",
                    "veryfast",
                    "-crf",
                    "18",
                    "-c:a",
                    "copy",
                    str(tmp / "baseline.mp4"),
                ]
            )

        def cold() -> None:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "cli.main",
                    "run",
                    str(source),
                    "-o",
                    str(tmp / "cold.mp4"),
                    "--passthrough",
                    "--no-report",
                    "--json",
                ],
                check=True,
                capture_output=True,
            )

        t_base = timed(baseline)
        t_cold = timed(cold)

        from actors.job_actor import run_attached
        from actors.runtime import ray_session
        from farm.spec import JobSpec

        with ray_session(None, os.cpu_count()):
            spec = JobSpec.model_validate(
                {
                    "input": source,
                    "output": tmp / "warm.mp4",
                    "passthrough": True,
                    "report": {"judges": False},
                }
            )
            summary: dict[str, object] = {}

            def warm() -> None:
                summary.update(run_attached(spec).model_dump(mode="json"))

            run_attached(spec.model_copy(update={"output": tmp / "first.mp4"}))  # warm the pools
            t_warm = timed(warm)
        t_base2 = timed(baseline)  # again, after the pipeline, to see machine drift

    base = min(t_base, t_base2)
    report = {
        "clip": f"{args.seconds}s {args.size} 25fps",
        "baseline_s": round(base, 2),
        "baseline_runs_s": [round(t_base, 2), round(t_base2, 2)],
        "cold_s": round(t_cold, 2),
        "warm_s": round(t_warm, 2),
        "cold_ratio": round(t_cold / base, 3),
        "warm_ratio": round(t_warm / base, 3),
        "warm_stage_seconds": summary.get("stage_seconds"),
        "warm_shards": summary.get("shards"),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
