"""Choosing an ffmpeg by what it can do: the parsers on canned text, selection with fake binaries,
and the real binaries on this machine (Debian 12's ffmpeg 5.1 has no ``-display_rotation``)."""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from farm.errors import SpecError
from farm.media import ffmpeg as ffmpeg_module
from farm.media.audio import write_raw_pcm
from farm.media.commands import mux_argv, mux_capabilities
from farm.media.ffmpeg import (
    ALL_CAPABILITIES,
    FfmpegBinary,
    ffmpeg_binary,
    parse_capabilities,
    parse_cli_options,
    parse_demuxers,
    parse_encoders,
    parse_muxer_flags,
    parse_version,
    probe_ffmpeg,
    run_ffmpeg,
    select_ffmpeg,
)
from farm.media.probe import probe
from tests.clips import RECIPES, ClipRecipe, make_clip, recipe_capabilities

# --- canned probe output (trimmed from real ffmpeg 5.1 and 7.x builds) --------------------------

VERSION_51 = """\
ffmpeg version 5.1.6-0+deb12u1 Copyright (c) 2000-2024 the FFmpeg developers
built with gcc 12 (Debian 12.2.0-14)
configuration: --prefix=/usr --enable-gpl --enable-libopus --enable-libx264 --enable-shared
"""

VERSION_71 = """\
ffmpeg version 7.1-static https://johnvansickle.com/ffmpeg/  Copyright (c) 2000-2024
built with gcc 8 (Debian 8.3.0-6)
"""

_MOV_MUXER_51 = """\
mov/mp4/tgp/psp/tg2/ipod/ismv/f4v muxer AVOptions:
  -movflags          <flags>      E.......... MOV muxer flags (default 0)
     rtphint                      E.......... Add RTP hint tracks
     faststart                    E.......... Put the index (moov atom) at the start
     use_metadata_tags              E.......... Use mdta atom for metadata.
     skip_trailer                 E.......... Skip writing the mfra/tfra/mfro trailer
  -moov_size         <int>        E.......... maximum moov size (from 0 to INT_MAX) (default 0)
  -rtpflags          <flags>      E.......... RTP muxer flags (default 0)
     latm                         E.......... Use MP4A-LATM packetization
"""

HELP_51 = f"""\
Hyper fast Audio and Video encoder
usage: ffmpeg [options] [[infile options] -i infile]... {{[outfile options] outfile}}...

Per-file main options:
-f fmt              force format
-c codec            codec name
-metadata string=string  add metadata

Advanced Video options:
-pix_fmt format     set pixel format
-vtag fourcc/tag    force video tag/fourcc

AVCodecContext AVOptions:
  -b                 <int64>      E..VA...... set bitrate (in bits/s) (default 200000)
  -display_rotation_lookalike <int> E..V....... an AVOption, not a CLI option

{_MOV_MUXER_51}
matroska/webm muxer AVOptions:
  -reserve_index_space <int>        E.......... Reserve space for the index (cues)
"""

HELP_71 = f"""\
Per-file main options:
-f <fmt>            force container format (auto-detected otherwise)
-c[:<stream_spec>] <codec>  select encoder/decoder ('copy' to copy stream without reencoding)

Advanced Video options:
-pix_fmt[:<stream_spec>] <format>  set pixel format
-display_rotation[:<stream_spec>] <angle>  set pure counter-clockwise rotation in degrees
-display_hflip[:<stream_spec>]  set display horizontal flip for stream(s)

{_MOV_MUXER_51}"""

ENCODERS = """\
Encoders:
 V..... = Video
 A..... = Audio
 S..... = Subtitle
 .F.... = Frame-level multithreading
 ------
 V....D libx264              libx264 H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10 (codec h264)
 V....D libx264rgb           libx264 H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10 RGB (codec h264)
 A....D aac                  AAC (Advanced Audio Coding)
 A....D flac                 FLAC (Free Lossless Audio Codec)
 A..... libopus              libopus Opus (codec opus)
 S..... mov_text             3GPP Timed Text subtitle
"""

DEMUXERS_51 = """\
File formats:
 D. = Demuxing supported
 .E = Muxing supported
 --
 D  aac             raw ADTS AAC (Advanced Audio Coding)
 D  f32le           PCM 32-bit floating-point little-endian
 D  mov,mp4,m4a,3gp,3g2,mj2 QuickTime / MOV
"""

DEMUXERS_71 = """\
Formats:
 D.. = Demuxing supported
 .E. = Muxing supported
 ..d = Is a device
 ---
 D d alsa            ALSA audio input
 D   f32le           PCM 32-bit floating-point little-endian
 D   mov,mp4,m4a,3gp,3g2,mj2 QuickTime / MOV
"""

EVERYTHING_BUT_ROTATION = ALL_CAPABILITIES - {"display_rotation"}


# --- parsers ------------------------------------------------------------------------------------


def test_parse_version() -> None:
    assert parse_version(VERSION_51) == "5.1.6-0+deb12u1"
    assert parse_version(VERSION_71) == "7.1-static"
    assert parse_version("ffmpeg version N-113000-gabcdef Copyright") == "N-113000-gabcdef"
    assert parse_version("") == "unknown"
    assert parse_version("boom") == "unknown"


def test_cli_options_are_the_column_zero_rows_only() -> None:
    old = parse_cli_options(HELP_51)
    assert {"f", "c", "metadata", "pix_fmt", "vtag"} <= old
    assert "display_rotation" not in old
    assert "b" not in old and "display_rotation_lookalike" not in old  # indented AVOptions
    new = parse_cli_options(HELP_71)
    assert {"display_rotation", "display_hflip", "pix_fmt", "c"} <= new


def test_muxer_flags_come_from_the_named_muxer_and_option() -> None:
    flags = parse_muxer_flags(HELP_51, muxer="mp4", option="movflags")
    assert flags == {"rtphint", "faststart", "use_metadata_tags", "skip_trailer"}
    assert parse_muxer_flags(HELP_51, muxer="mov", option="rtpflags") == {"latm"}
    assert parse_muxer_flags(HELP_51, muxer="webm", option="movflags") == frozenset()
    without = HELP_51.replace("use_metadata_tags", "something_else")
    assert "use_metadata_tags" not in parse_muxer_flags(without, muxer="mp4", option="movflags")


def test_encoders_skip_the_legend() -> None:
    assert parse_encoders(ENCODERS) == {
        "libx264",
        "libx264rgb",
        "aac",
        "flac",
        "libopus",
        "mov_text",
    }
    assert parse_encoders("") == frozenset()


def test_demuxers_in_both_table_layouts() -> None:
    for text in (DEMUXERS_51, DEMUXERS_71):
        names = parse_demuxers(text)
        assert {"f32le", "mov", "mp4", "m4a"} <= names
        assert "=" not in names and "D" not in names
    assert "alsa" in parse_demuxers(DEMUXERS_71)


def test_capabilities_of_51_lack_only_display_rotation() -> None:
    assert parse_capabilities(HELP_51, ENCODERS, DEMUXERS_51) == EVERYTHING_BUT_ROTATION
    assert parse_capabilities(HELP_71, ENCODERS, DEMUXERS_71) == ALL_CAPABILITIES
    no_opus = ENCODERS.replace(" libopus ", " libvorbis ")
    assert "libopus" not in parse_capabilities(HELP_71, no_opus, DEMUXERS_71)
    assert parse_capabilities("", "", "") == frozenset()


def test_mux_capabilities_follow_mux_argv() -> None:
    assert mux_capabilities(rotation=0, audio_codec=None) == frozenset()
    assert mux_capabilities(rotation=90, audio_codec=None) == {"display_rotation"}
    assert mux_capabilities(rotation=0, audio_codec="aac") == {"f32le", "aac"}
    assert mux_capabilities(rotation=270, audio_codec="opus") == {
        "display_rotation",
        "f32le",
        "libopus",
    }
    assert mux_capabilities(rotation=0, audio_codec="flac", container="mp4") == {
        "f32le",
        "flac",
        "use_metadata_tags",
    }
    with pytest.raises(SpecError, match="mp3"):
        mux_capabilities(rotation=0, audio_codec="mp3")


def test_clip_recipes_ask_for_what_they_use() -> None:
    assert "display_rotation" in recipe_capabilities(RECIPES["rotated"])
    assert recipe_capabilities(RECIPES["noaudio"]) == {"libx264"}
    assert recipe_capabilities(RECIPES["fps25"]) == {"libx264", "aac"}


# --- selection with fake binaries ---------------------------------------------------------------


def _fake_ffmpeg(path: Path, version: str, help_text: str, demuxers: str) -> Path:
    """An executable that answers the four probes with canned text, and fails anything else."""
    path.parent.mkdir(parents=True, exist_ok=True)
    canned = path.parent / f"{path.name}.canned"
    canned.mkdir(exist_ok=True)
    (canned / "version").write_text(version)
    (canned / "help").write_text(help_text)
    (canned / "encoders").write_text(ENCODERS)
    (canned / "demuxers").write_text(demuxers)
    path.write_text(
        "#!/bin/sh\n"
        f'd="{canned}"\n'
        'case "$*" in\n'
        '  "-version") cat "$d/version" ;;\n'
        '  "-hide_banner -h full") cat "$d/help" ;;\n'
        '  "-hide_banner -encoders") cat "$d/encoders" ;;\n'
        '  "-hide_banner -demuxers") cat "$d/demuxers" ;;\n'
        '  *) echo "unexpected: $*" >&2; exit 1 ;;\n'
        "esac\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def _old(path: Path) -> Path:
    return _fake_ffmpeg(path, VERSION_51, HELP_51, DEMUXERS_51)


def _new(path: Path) -> Path:
    return _fake_ffmpeg(path, VERSION_71, HELP_71, DEMUXERS_71)


@pytest.fixture
def bundled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A 7.x-like fake in place of imageio-ffmpeg's binary, so selection tests are hermetic."""
    fake = _new(tmp_path / "bundled" / "ffmpeg-bundled")
    monkeypatch.setattr(ffmpeg_module, "_bundled_ffmpeg", lambda: str(fake))
    return fake


def _path_env(*dirs: Path, **extra: str) -> Mapping[str, str]:
    return {"PATH": os.pathsep.join(str(d) for d in dirs), **extra}


def test_probe_reads_a_fake_binary(tmp_path: Path) -> None:
    binary = probe_ffmpeg(str(_old(tmp_path / "bin" / "ffmpeg")))
    assert binary == FfmpegBinary(
        str(tmp_path / "bin" / "ffmpeg"), "5.1.6-0+deb12u1", EVERYTHING_BUT_ROTATION
    )
    assert binary.missing({"display_rotation", "aac"}) == {"display_rotation"}


def test_a_probe_is_remembered_until_the_binary_is_replaced(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = _old(tmp_path / "bin" / "ffmpeg")
    first = probe_ffmpeg(str(path), cache)
    assert first.version == "5.1.6-0+deb12u1" and len(list(cache.glob("ffmpeg-*.json"))) == 1
    (tmp_path / "bin" / "ffmpeg.canned" / "version").write_text(VERSION_71)  # same binary file
    assert probe_ffmpeg(str(path), cache) == first, "the same file: its probe is reused"
    time.sleep(0.01)
    _new(path)  # replaced in place: another file identity
    assert probe_ffmpeg(str(path), cache).version.startswith("7.")
    broken = tmp_path / "broken" / "ffmpeg"
    broken.parent.mkdir()
    broken.write_text("#!/bin/sh\nexit 1\n")
    broken.chmod(0o755)
    probe_ffmpeg(str(broken), cache)
    assert len(list(cache.glob("ffmpeg-*.json"))) == 2, "a binary that did not answer: not kept"


def test_system_without_rotation_is_skipped_only_for_a_rotated_job(
    tmp_path: Path, bundled: Path
) -> None:
    system = _old(tmp_path / "bin" / "ffmpeg")
    env = _path_env(system.parent)
    rotated = mux_capabilities(rotation=90, audio_codec="aac", container="mp4")
    chosen = select_ffmpeg(rotated, env)
    assert chosen.path == str(bundled) and chosen.version == "7.1-static"
    plain = mux_capabilities(rotation=0, audio_codec="aac", container="mp4")
    assert select_ffmpeg(plain, env).path == str(system)
    assert select_ffmpeg((), env).path == str(system)
    assert ffmpeg_binary(env, needs=rotated) == str(bundled)
    assert ffmpeg_binary(env) == str(system)


def test_a_capable_system_ffmpeg_wins(tmp_path: Path, bundled: Path) -> None:
    system = _new(tmp_path / "bin" / "ffmpeg")
    assert select_ffmpeg({"display_rotation"}, _path_env(system.parent)).path == str(system)


def test_no_system_ffmpeg_falls_back_to_bundled(tmp_path: Path, bundled: Path) -> None:
    assert select_ffmpeg((), _path_env(tmp_path / "nowhere")).path == str(bundled)


def test_explicit_ffmpeg_lacking_a_capability_is_a_one_line_spec_error(
    tmp_path: Path, bundled: Path
) -> None:
    explicit = _old(tmp_path / "mine" / "ffmpeg")
    system = _new(tmp_path / "bin" / "ffmpeg")
    env = _path_env(system.parent, FARM_FFMPEG=str(explicit))
    # It is the only candidate: a capable system or bundled ffmpeg does not replace it.
    with pytest.raises(SpecError) as info:
        select_ffmpeg({"display_rotation", "aac"}, env)
    message = str(info.value)
    assert "\n" not in message
    assert f"FARM_FFMPEG={explicit}" in message
    assert "5.1.6-0+deb12u1" in message
    assert "lacks display_rotation;" in message  # and only that: it has aac
    assert message.endswith("unset FARM_FFMPEG or point it at ffmpeg >= 6.1")
    assert select_ffmpeg({"aac"}, env).path == str(explicit)


def test_explicit_ffmpeg_that_cannot_run_is_a_spec_error(tmp_path: Path) -> None:
    not_executable = tmp_path / "ffmpeg"
    not_executable.write_text("#!/bin/sh\nexit 0\n")
    for bad in (not_executable, tmp_path, tmp_path / "missing"):
        with pytest.raises(SpecError, match=f"FARM_FFMPEG={bad} is not an executable file"):
            select_ffmpeg((), {"FARM_FFMPEG": str(bad), "PATH": ""})


def test_no_candidate_qualifies_lists_each_with_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = _old(tmp_path / "bin" / "ffmpeg")
    also_old = _old(tmp_path / "bundled" / "ffmpeg-bundled")
    monkeypatch.setattr(ffmpeg_module, "_bundled_ffmpeg", lambda: str(also_old))
    with pytest.raises(SpecError) as info:
        select_ffmpeg({"display_rotation"}, _path_env(system.parent))
    message = str(info.value)
    assert "\n" not in message
    assert f"system {system} (ffmpeg 5.1.6-0+deb12u1) lacks display_rotation" in message
    assert f"bundled {also_old} (ffmpeg 5.1.6-0+deb12u1) lacks display_rotation" in message
    assert message.endswith("set FARM_FFMPEG to ffmpeg >= 6.1")


def test_a_binary_that_answers_no_probe_has_no_capabilities(tmp_path: Path, bundled: Path) -> None:
    broken = tmp_path / "bin" / "ffmpeg"
    broken.parent.mkdir()
    broken.write_text("#!/bin/sh\necho boom >&2\nexit 3\n")
    broken.chmod(broken.stat().st_mode | stat.S_IEXEC)
    env = _path_env(broken.parent)
    assert select_ffmpeg((), env) == FfmpegBinary(str(broken), "unknown", frozenset())
    assert select_ffmpeg({"aac"}, env).path == str(bundled)


def test_unknown_capability_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="unknown ffmpeg capabilities"):
        select_ffmpeg({"h265_magic"}, {"PATH": ""})  # type: ignore[arg-type]


# --- the real binaries on this machine ----------------------------------------------------------


def _environ_without_override() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "FARM_FFMPEG"}


def _system_ffmpeg(env: Mapping[str, str]) -> str:
    system = shutil.which("ffmpeg", path=env.get("PATH"))
    if system is None:
        message = "no system ffmpeg on PATH (Debian: apt-get install ffmpeg)"
        if os.environ.get("FARM_REQUIRE_SYSTEM_TOOLS") == "1":
            pytest.fail(f"{message}; FARM_REQUIRE_SYSTEM_TOOLS=1 requires it")
        pytest.skip(message)
    return system


def test_real_binaries_are_chosen_by_capability() -> None:
    env = _environ_without_override()
    system = _system_ffmpeg(env)
    assert select_ffmpeg((), env).path == system
    rotating = select_ffmpeg({"display_rotation"}, env)
    assert "display_rotation" in rotating.capabilities
    if "display_rotation" not in probe_ffmpeg(system).capabilities:
        # Debian 12's 5.1: the bundled (newer) ffmpeg must be picked instead.
        assert rotating.path != system
    else:
        assert rotating.path == system


def test_rotated_clip_and_mux_work_with_the_system_ffmpeg_on_path(tmp_path: Path) -> None:
    """The original failure: a rotated source rendered, then died at the mux on ffmpeg 5.1."""
    env = _environ_without_override()
    _system_ffmpeg(env)
    rotated = make_clip(RECIPES["rotated"], tmp_path)
    assert probe(rotated).video.rotation != 0
    video = make_clip(ClipRecipe("plain", seconds=1.0, size="160x120", audio=None), tmp_path)
    pcm = np.zeros((48000, 2), dtype=np.float32)
    audio = write_raw_pcm(pcm, tmp_path / "audio.f32", 48000, "stereo")
    needs = mux_capabilities(rotation=90, audio_codec="aac", container="mp4")
    binary = select_ffmpeg(needs, env)
    out = tmp_path / "muxed.mp4"
    run_ffmpeg(mux_argv(binary.path, video, audio, out, container="mp4", rotation=90))
    info = probe(out)
    assert info.video.rotation == probe(rotated).video.rotation
    assert info.audio is not None
