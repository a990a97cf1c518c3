"""Where the ffmpeg binary comes from, and the one place that runs it.

Commands are built by the pure functions in `farm.media.commands`; this module only resolves the
binary and runs an argv, keeping the tail of stderr in the error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence

from farm.errors import FfmpegFailed, SpecError

STDERR_TAIL_CHARS = 4000


def ffmpeg_binary(environ: Mapping[str, str] | None = None) -> str:
    """``$FARM_FFMPEG``, else the system's ffmpeg, else the one bundled in imageio-ffmpeg."""
    env = os.environ if environ is None else environ
    explicit = env.get("FARM_FFMPEG")
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise SpecError(
                f"FARM_FFMPEG={explicit} is not an executable file; unset it or fix the path"
            )
        return explicit
    system = shutil.which("ffmpeg", path=env.get("PATH"))
    if system:
        return system
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def run_ffmpeg(argv: Sequence[str], *, timeout_s: float | None = None) -> None:
    """Run an ffmpeg argv; raise `FfmpegFailed` with the stderr tail when it fails."""
    argv = list(argv)
    try:
        completed = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stderr or b"").decode(errors="replace")[-STDERR_TAIL_CHARS:]
        raise FfmpegFailed(argv, -1, f"timed out after {timeout_s} s\n{tail}") from None
    if completed.returncode != 0:
        tail = completed.stderr.decode(errors="replace")[-STDERR_TAIL_CHARS:]
        raise FfmpegFailed(argv, completed.returncode, tail)
