"""libx264 gives the same bytes for the same frames whatever the process's heap held before.

Its AVX-512 macroblock-tree code reads memory it never wrote, which made a shard rendered by a
replacement worker differ from the first rendering (`farm.media.cpu`). ``MALLOC_PERTURB_`` makes
glibc fill new allocations with a chosen byte, standing in for a long-lived worker's heap.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from farm.media.cpu import cpu_flags, x264_asm, x264_run_options
from tests.conftest import REPO, media_path

AVX512_CPU = frozenset({"sse", "sse2", "pni", "ssse3", "sse4_1", "sse4_2", "avx", "fma", "bmi1",
                        "bmi2", "avx2", "abm", "avx512f", "avx512bw"})  # fmt: skip


def test_an_avx512_cpu_gets_every_level_below_it() -> None:
    assert x264_asm(AVX512_CPU) == (
        "MMX2,SSE,SSE2,LZCNT,SSE3,SSSE3,SSE4.1,SSE4.2,AVX,FMA3,BMI1,BMI2,AVX2"
    )
    assert x264_asm(AVX512_CPU - {"avx512f", "avx512bw"}) is None, "x264 detects the rest"
    assert x264_asm(frozenset()) is None


def test_the_asm_setting_joins_the_encoders_own_x264_params() -> None:
    options = {"preset": "veryfast", "crf": "18"}
    assert x264_run_options(options, frozenset()) == options
    capped = x264_run_options({**options, "x264-params": "keyint=50"}, AVX512_CPU)
    assert capped["x264-params"] == f"keyint=50:asm={x264_asm(AVX512_CPU)}"
    chosen = {**options, "x264-params": "no-asm=1"}
    assert x264_run_options(chosen, AVX512_CPU) == chosen, "a caller's own choice stands"


def test_cpu_flags_come_from_the_first_processor(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f\n\nprocessor\t: 1\nflags: x\n")
    assert cpu_flags(cpuinfo, "x86_64") == {"fpu", "sse2", "avx512f"}
    assert cpu_flags(cpuinfo, "aarch64") == frozenset(), "x264 detects other CPUs itself"
    assert cpu_flags(tmp_path / "missing", "x86_64") == frozenset()


ENCODE = """
import hashlib, sys
from pathlib import Path
import av
from farm.media.codecs import shard_encoder
from farm.media.probe import probe
from farm.media.video_io import ShardEncoder
source = Path(sys.argv[1])
info = probe(source).video
settings = shard_encoder("fast", "h264", 18, "veryfast", info, 1)
encoder = ShardEncoder(Path(sys.argv[2]), settings, info.fps)
with av.open(str(source)) as container:
    for index, frame in enumerate(container.decode(video=0)):
        if index == 12:
            break
        encoder.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(), format=frame.format.name))
encoder.close()
with av.open(sys.argv[2]) as container:
    print(hashlib.sha256(b"".join(bytes(p) for p in container.demux(video=0))).hexdigest())
"""


@pytest.mark.parametrize("perturb", ["1", "2"])
def test_a_shard_encodes_to_the_same_bytes_whatever_the_heap_held(
    perturb: str, tmp_path: Path
) -> None:
    source = media_path("video/grid_hardcuts_4_speakers_12s.mp4")

    def encode(name: str, env: dict[str, str]) -> str:
        done = subprocess.run(
            [sys.executable, "-c", ENCODE, str(source), str(tmp_path / name)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        return done.stdout.strip()

    clean = {k: v for k, v in os.environ.items() if k != "MALLOC_PERTURB_"}
    perturbed = {**clean, "MALLOC_PERTURB_": perturb}
    assert encode("clean.mkv", clean) == encode("perturbed.mkv", perturbed)
