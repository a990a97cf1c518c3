"""`make demo`: the real job on bundled defaults and ../shared/media, output plus report.

Steps, each a real `farm` command:

1. `farm keys init` in a demo home (demo-out/farm-home), so nothing touches your own keys;
2. `farm consent create` for the GRID talker swiz3n (face photo and voice clip, signed);
3. `farm identity create` from that photo, voice clip and consent;
4. `farm run` on grid_hardcuts_4_speakers_12s.mp4: face swap on every shot, speech converted
   into the identity's voice (`--voice vc`), both watermarks and a C2PA manifest, and the
   independent judges' report page beside it (OUT.mp4.report.html);
5. `farm verify` on the output.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

VIDEO = "video/grid_hardcuts_4_speakers_12s.mp4"
FACE = "faces/grid_talker_swiz3n_frontal.png"
VOICE = "audio/grid_swiz3n.wav"


def farm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode not in (0,):
        sys.stderr.write(completed.stderr)
        raise SystemExit(f"demo: `farm {args[0]}` failed with exit code {completed.returncode}")
    return completed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--media", type=Path, required=True, help="../shared/media")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    args = parser.parse_args(argv)
    media = args.media.resolve()
    for relative in (VIDEO, FACE, VOICE):
        if not (media / relative).is_file():
            print(
                f"demo: {media / relative} is missing; shared/ must sit beside the repository",
                file=sys.stderr,
            )
            return 1
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    home = out / "farm-home"
    pack = out / "identity-swiz3n"
    env = {**os.environ, "FARM_HOME": str(home)}

    if not (home / "keys").is_dir():
        print(farm(env, "keys", "init", "--name", "SyncFarm demo operator").stdout.strip())
    consent = out / "consent-swiz3n.yaml"
    print(
        farm(
            env,
            "consent",
            "create",
            "--subject",
            "GRID talker swiz3n",
            "--scope",
            "face,voice",
            "--purpose",
            "SyncFarm demo render",
            "--expires",
            "2099-12-31",
            "--face",
            str(media / FACE),
            "--voice",
            str(media / VOICE),
            "-o",
            str(consent),
        ).stdout.strip()
    )
    shutil.rmtree(pack, ignore_errors=True)
    print(
        farm(
            env,
            "identity",
            "create",
            "--face",
            str(media / FACE),
            "--voice",
            str(media / VOICE),
            "--consent",
            str(consent),
            "-o",
            str(pack),
        ).stdout.strip()
    )

    output = out / "grid_hardcuts_swiz3n.mp4"
    run = farm(
        env,
        "run",
        str(media / VIDEO),
        "-o",
        str(output),
        "--identity",
        str(pack),
        "--voice",
        "vc",
        "--json",
    )
    summary = json.loads(run.stdout)
    verify = farm(env, "verify", str(output))
    print(verify.stdout.strip())
    print(f"demo: wrote {summary['output']}")
    print(f"demo: report {output.with_name(output.name + '.report.json')}")
    if summary.get("quality_report"):
        print(f"demo: quality report page {summary['quality_report']}")
    quality = summary.get("quality") or {}
    identity = quality.get("identity_similarity") or {}
    if identity.get("mean_to_identity") is not None:
        print(
            f"demo: SFace similarity to the identity {identity['mean_to_identity']:.3f}, to the "
            f"person replaced {identity['mean_to_original']:.3f} "
            f"({identity['closer_to_identity']:.0%} of faces closer to the identity)"
        )
    voice = summary.get("voice") or {}
    print(
        f"demo: {summary['frames']} frames in {summary['shards']} shards "
        f"(cuts at {summary['scene_cuts']}), {len(voice.get('sentences', []))} sentences "
        f"re-voiced, {summary['stage_seconds']['job_s']:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
