"""Which ffmpeg binary to use, what it can do, and the one place that runs it.

Commands are built by the pure functions in `farm.media.commands`; this module resolves a binary
that can run them and runs an argv, keeping the tail of stderr in the error.

Why capabilities: distributions ship older ffmpeg builds (Debian 12 has 5.1) that lack options our
argv builders use, e.g. the ``-display_rotation`` input option (ffmpeg 6.1+). Preferring the system
binary blindly made a rotated job render and then die at the mux with "Option not found". So each
candidate is probed (``-version``, ``-h full``, ``-encoders``, ``-demuxers``) and chosen only if
it has what the job needs. The parsers are pure (text in, set out) so they are tested on canned
text; the probing is the only part that runs subprocesses. Nothing is cached at module level:
callers resolve once per job and pass the path down. A probe (four ffmpeg runs, about 0.6 s) is
remembered on disk instead, in ``$FARM_CACHE`` (default: the user cache dir), keyed by the
binary's file identity (device, inode, size, mtime and ctime): a replaced or rebuilt binary has
another key and is probed again, and every process (each job, worker and test) shares the result.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from farm.errors import FfmpegFailed, SpecError

STDERR_TAIL_CHARS = 4000
PROBE_TIMEOUT_S = 10.0
"""Per probe command. A healthy ffmpeg answers in well under a second; a hung one is unusable."""

Capability = Literal[
    "display_rotation",
    "libx264",
    "aac",
    "flac",
    "libopus",
    "f32le",
    "use_metadata_tags",
]
"""What SyncFarm's argv builders use that not every ffmpeg build has.

``display_rotation``: the ``-display_rotation`` input option (mux of a rotated source).
``libx264``, ``aac``, ``flac``, ``libopus``: encoders. ``f32le``: the raw PCM demuxer (the mux
reads the audio timeline as f32le). ``use_metadata_tags``: the mp4/mov muxer's movflag that
writes our provenance tags as mdta atoms.
"""

ALL_CAPABILITIES: frozenset[Capability] = frozenset(get_args(Capability))
ENCODER_CAPABILITIES: frozenset[Capability] = frozenset({"libx264", "aac", "flac", "libopus"})
DEMUXER_CAPABILITIES: frozenset[Capability] = frozenset({"f32le"})

_REMEDY: dict[Capability, str] = {
    "display_rotation": "ffmpeg >= 6.1",
    "libx264": "an ffmpeg built with --enable-libx264",
    "aac": "an ffmpeg with the native aac encoder",
    "flac": "an ffmpeg with the native flac encoder",
    "libopus": "an ffmpeg built with --enable-libopus",
    "f32le": "an ffmpeg with the f32le demuxer",
    "use_metadata_tags": "an ffmpeg whose mp4 muxer has movflags=use_metadata_tags",
}

UNKNOWN_VERSION = "unknown"


@dataclass(frozen=True)
class FfmpegBinary:
    """One probed ffmpeg: where it is, what it says its version is, and what it can do."""

    path: str
    version: str
    capabilities: frozenset[Capability]

    def missing(self, needs: Iterable[Capability]) -> frozenset[Capability]:
        """The needed capabilities this binary lacks (empty when it can do the job)."""
        return frozenset(needs) - self.capabilities


# --- pure parsers: text in, set out -------------------------------------------------------------

_VERSION_RE = re.compile(r"^ffmpeg version (\S+)", re.MULTILINE)
_CLI_OPTION_RE = re.compile(r"^-([A-Za-z0-9_]+)(?=[\s\[]|$)", re.MULTILINE)
_ENCODER_ROW_RE = re.compile(r"^ [VAS][A-Z.]{5}\s+(?P<name>\S+)")
_DEMUXER_ROW_RE = re.compile(r"^ D[E. ]?[d. ]?\s+(?P<name>\S+)")
_AVOPTIONS_HEADER_RE = re.compile(r"^(\S+) muxer AVOptions:\s*$")


def parse_version(version_text: str) -> str:
    """The version token of ``ffmpeg -version`` ("5.1.6-0+deb12u1", "n7.1", "N-113000-g…")."""
    match = _VERSION_RE.search(version_text)
    return match.group(1) if match else UNKNOWN_VERSION


def parse_cli_options(help_text: str) -> frozenset[str]:
    """Names of the ffmpeg CLI options listed in ``ffmpeg -h full``.

    Top-level options start at column 0 ("-display_rotation[:<stream_spec>] <angle> …"); the
    per-codec/format AVOptions are indented, so they are not mistaken for CLI options.
    """
    return frozenset(_CLI_OPTION_RE.findall(help_text))


def parse_encoders(encoders_text: str) -> frozenset[str]:
    """Encoder names from ``ffmpeg -encoders`` (the rows after the "------" legend rule)."""
    return _parse_table(encoders_text, _ENCODER_ROW_RE)


def parse_demuxers(demuxers_text: str) -> frozenset[str]:
    """Demuxer names from ``ffmpeg -demuxers``; "mov,mp4,m4a" rows give each name."""
    names: set[str] = set()
    for row in _parse_table(demuxers_text, _DEMUXER_ROW_RE):
        names.update(part for part in row.split(",") if part)
    return frozenset(names)


def _parse_table(text: str, row: re.Pattern[str]) -> frozenset[str]:
    """Names from the rows of a ``-encoders``/``-demuxers`` table; the legend above is skipped
    (its lines look like rows: " V..... = Video")."""
    names: set[str] = set()
    in_body = False
    for line in text.splitlines():
        if not in_body:
            # The legend ends with a rule of dashes (" ------" for codecs, " --"/" ---" formats).
            in_body = bool(line.strip()) and set(line.strip()) == {"-"}
            continue
        match = row.match(line)
        if match:
            names.add(match.group("name"))
    return frozenset(names)


def parse_muxer_flags(help_text: str, *, muxer: str, option: str) -> frozenset[str]:
    """The named constants of a muxer's flags option, from ``ffmpeg -h full``.

    Muxers sharing an implementation share a header ("mov/mp4/tgp/… muxer AVOptions:"); the
    option is an indented "  -movflags <flags>" row followed by more deeply indented constants.
    """
    flags: set[str] = set()
    in_muxer = in_option = False
    for line in help_text.splitlines():
        if line and not line[0].isspace():
            # Any column-0 line starts a new section (an AVOptions header or a CLI option).
            header = _AVOPTIONS_HEADER_RE.match(line)
            in_muxer = header is not None and muxer in header.group(1).split("/")
            in_option = False
        elif in_muxer and line.startswith("  -"):
            in_option = line.split()[0] == f"-{option}"
        elif in_muxer and in_option and line.strip():
            flags.add(line.split()[0])
    return frozenset(flags)


def parse_capabilities(
    help_text: str, encoders_text: str, demuxers_text: str
) -> frozenset[Capability]:
    """Which `Capability` names the three probe outputs show."""
    found: set[Capability] = set()
    if "display_rotation" in parse_cli_options(help_text):
        found.add("display_rotation")
    if "use_metadata_tags" in parse_muxer_flags(help_text, muxer="mp4", option="movflags"):
        found.add("use_metadata_tags")
    encoders = parse_encoders(encoders_text)
    found.update(c for c in ENCODER_CAPABILITIES if c in encoders)
    demuxers = parse_demuxers(demuxers_text)
    found.update(c for c in DEMUXER_CAPABILITIES if c in demuxers)
    return frozenset(found)


# --- probing and selection ----------------------------------------------------------------------


_PROBES: tuple[tuple[str, ...], ...] = (
    ("-version",),
    ("-hide_banner", "-h", "full"),
    ("-hide_banner", "-encoders"),
    ("-hide_banner", "-demuxers"),
)


def _probe_output(path: str, args: Sequence[str]) -> str:
    """stdout of ``path args``, or "" when it cannot start, fails or hangs: the binary is then
    taken to have nothing that this probe would have shown."""
    try:
        completed = subprocess.run(
            [path, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return completed.stdout.decode(errors="replace") if completed.returncode == 0 else ""


def probe_ffmpeg(path: str, cache_dir: Path | None = None) -> FfmpegBinary:
    """Run ``path`` with `_PROBES` to learn its version and capabilities (about 0.2-0.6 s),
    or read what an earlier probe of the very same file found (`cache_dir`, default
    `probe_cache_dir`). Only a binary that answered is remembered."""
    folder = probe_cache_dir() if cache_dir is None else cache_dir
    key = _binary_key(path)
    cached = _read_probe(folder / f"ffmpeg-{key}.json", path) if key else None
    if cached is not None:
        return cached
    version_text, help_text, encoders_text, demuxers_text = (
        _probe_output(path, args) for args in _PROBES
    )
    binary = FfmpegBinary(
        path=path,
        version=parse_version(version_text),
        capabilities=parse_capabilities(help_text, encoders_text, demuxers_text),
    )
    if key and version_text:
        _write_probe(folder / f"ffmpeg-{key}.json", binary)
    return binary


def probe_cache_dir() -> Path:
    """Where ffmpeg probes are remembered: ``$FARM_CACHE``, else the user cache dir."""
    explicit = os.environ.get("FARM_CACHE")
    if explicit:
        return Path(explicit)
    import platformdirs

    return Path(platformdirs.user_cache_dir("syncfarm"))


def _binary_key(path: str) -> str | None:
    """A name for this exact file (None when it cannot be read): changes when it is replaced."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    identity = f"{real}|{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def _read_probe(file: Path, path: str) -> FfmpegBinary | None:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        known = [c for c in data["capabilities"] if c in ALL_CAPABILITIES]
        return FfmpegBinary(path=path, version=str(data["version"]), capabilities=frozenset(known))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none yet, or unreadable: probe again


def _write_probe(file: Path, binary: FfmpegBinary) -> None:
    """Atomically; a cache that cannot be written (read-only home) only costs a probe."""
    data = {"version": binary.version, "capabilities": sorted(binary.capabilities)}
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, file)
    except OSError:
        return


def _bundled_ffmpeg() -> str | None:
    """imageio-ffmpeg's static binary, or None when the wheel has none for this platform."""
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError):
        return None


def _fix(missing: Iterable[Capability]) -> str:
    """What to point FARM_FFMPEG at: "ffmpeg >= 6.1", or a list when several things are missing."""
    names = sorted(missing)
    if len(names) == 1:
        return _REMEDY[names[0]]
    return f"an ffmpeg that has them ({'; '.join(f'{c}: {_REMEDY[c]}' for c in names)})"


def _describe(binary: FfmpegBinary) -> str:
    """How a candidate is named in errors: its path and the version it reported."""
    return f"{binary.path} (ffmpeg {binary.version})"


def select_ffmpeg(
    needs: Iterable[Capability] = (), environ: Mapping[str, str] | None = None
) -> FfmpegBinary:
    """The first ffmpeg that has every capability in ``needs``.

    Candidates, in order: ``$FARM_FFMPEG`` when set (then the only one: an explicit choice is
    never silently overridden), else the system ``ffmpeg`` on PATH, else imageio-ffmpeg's bundled
    binary. Raises `SpecError` (one line, naming each candidate, its version and what it lacks)
    when none qualifies. Each call probes afresh; resolve once per job and pass the path down.
    """
    env = os.environ if environ is None else environ
    wanted = frozenset(needs)
    unknown = wanted - ALL_CAPABILITIES
    if unknown:
        raise SpecError(
            f"unknown ffmpeg capabilities {sorted(unknown)}; known: {sorted(ALL_CAPABILITIES)}"
        )
    explicit = env.get("FARM_FFMPEG")
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise SpecError(
                f"FARM_FFMPEG={explicit} is not an executable file; unset it or fix the path"
            )
        binary = probe_ffmpeg(explicit)
        missing = binary.missing(wanted)
        if missing:
            raise SpecError(
                f"FARM_FFMPEG={_describe(binary)} lacks {', '.join(sorted(missing))}; "
                f"unset FARM_FFMPEG or point it at {_fix(missing)}"
            )
        return binary

    candidates: list[tuple[str, str]] = []
    system = shutil.which("ffmpeg", path=env.get("PATH"))
    if system:
        candidates.append(("system", system))
    bundled = _bundled_ffmpeg()
    if bundled and not (system and os.path.realpath(system) == os.path.realpath(bundled)):
        candidates.append(("bundled", bundled))
    if not candidates:
        raise SpecError(
            "no ffmpeg found: none on PATH and imageio-ffmpeg has no binary for this platform; "
            "install ffmpeg or set FARM_FFMPEG to one"
        )

    rejected: list[str] = []
    all_missing: set[Capability] = set()
    for label, path in candidates:
        binary = probe_ffmpeg(path)
        missing = binary.missing(wanted)
        if not missing:
            return binary
        all_missing.update(missing)
        rejected.append(f"{label} {_describe(binary)} lacks {', '.join(sorted(missing))}")
    raise SpecError(
        f"no ffmpeg has {', '.join(sorted(wanted))}: {'; '.join(rejected)}; "
        f"set FARM_FFMPEG to {_fix(all_missing)}"
    )


def ffmpeg_binary(
    environ: Mapping[str, str] | None = None, *, needs: Iterable[Capability] = ()
) -> str:
    """Path of `select_ffmpeg` ``(needs, environ)``; kept for callers that only want the path."""
    return select_ffmpeg(needs, environ).path


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
