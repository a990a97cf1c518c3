"""The CPU features libx264 may use, decided when an encoder opens on a worker.

libx264's AVX-512 macroblock-tree code reads memory it never wrote: the same frames, with the same
options, encode to different bytes depending on what the process's heap held before (shown by
encoding one clip under ``MALLOC_PERTURB_=1`` and without it). A job's shards are rendered by
long-lived workers with different histories, so on an AVX-512 CPU a shard re-rendered by a
replacement worker did not match the first rendering, and a job was not byte-identical from one
run to the next. Its AVX2 code is exact and, on clean memory, gives the same bytes as the AVX-512
code, so on such CPUs x264 is given every SIMD level the CPU has up to AVX2. Elsewhere x264's own
detection stands.

This is decided per worker at run time, never stored in the job's settings: the job's identity
does not depend on the machine that planned it.
"""

from __future__ import annotations

import platform
from collections.abc import Collection
from pathlib import Path

X264_LEVELS: tuple[tuple[str, str], ...] = (
    # (Linux /proc/cpuinfo flag, x264 cpu name), in x264's order
    ("sse", "MMX2"),
    ("sse", "SSE"),
    ("sse2", "SSE2"),
    ("abm", "LZCNT"),
    ("pni", "SSE3"),
    ("ssse3", "SSSE3"),
    ("sse4_1", "SSE4.1"),
    ("sse4_2", "SSE4.2"),
    ("avx", "AVX"),
    ("xop", "XOP"),
    ("fma4", "FMA4"),
    ("fma", "FMA3"),
    ("bmi1", "BMI1"),
    ("bmi2", "BMI2"),
    ("avx2", "AVX2"),
)
"""What x264 may use on a CPU with AVX-512: everything below it that the CPU reports."""


def x264_asm(cpu_flags: Collection[str]) -> str | None:
    """x264's ``asm`` setting for a CPU with these flags: None leaves x264's detection alone."""
    if "avx512f" not in cpu_flags:
        return None
    return ",".join(name for flag, name in X264_LEVELS if flag in cpu_flags)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo"), machine: str | None = None) -> frozenset[str]:
    """The first processor's feature flags on x86 Linux; empty anywhere else."""
    if (machine or platform.machine()).lower() not in ("x86_64", "amd64", "i386", "i686"):
        return frozenset()
    try:
        text = cpuinfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def x264_run_options(options: dict[str, str], cpu: Collection[str]) -> dict[str, str]:
    """``options`` for a libx264 encoder opening on a CPU with flags ``cpu``."""
    asm = x264_asm(cpu)
    if asm is None:
        return dict(options)
    params = [p for p in options.get("x264-params", "").split(":") if p]
    if any(p.split("=", 1)[0] in ("asm", "no-asm") for p in params):
        return dict(options)  # the caller chose the CPU features itself
    return {**options, "x264-params": ":".join([*params, f"asm={asm}"])}
