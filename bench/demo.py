"""`make demo`: the real job on bundled defaults and ../shared/media, output plus report."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

DEMO_VIDEO = "video/grid_hardcuts_4_speakers_12s.mp4"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--media", type=Path, required=True, help="../shared/media")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    args = parser.parse_args(argv)
    source = args.media / DEMO_VIDEO
    if not source.is_file():
        print(f"demo: {source} is missing; shared/ must sit beside the repository", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    output = args.out / "grid_hardcuts_passthrough.mp4"
    cmd = [
        sys.executable,
        "-m",
        "cli.main",
        "run",
        str(source),
        "-o",
        str(output),
        "--passthrough",
        "--json",
    ]
    completed = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        sys.stderr.write(completed.stderr)
        return completed.returncode
    summary = json.loads(completed.stdout)
    print(f"demo: wrote {summary['output']}")
    print(f"demo: report {output.with_name(output.stem + '.report.json')}")
    print(
        f"demo: {summary['frames']} frames in {summary['shards']} shards "
        f"(cuts at {summary['scene_cuts']}), {summary['stage_seconds']['job_s']:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
