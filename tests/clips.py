"""Generated test clips (ffmpeg lavfi sources), each with known frames, timing and tags."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from farm.media.ffmpeg import Capability, ffmpeg_binary, run_ffmpeg, select_ffmpeg


@dataclass(frozen=True)
class ClipRecipe:
    """How to make one clip; ``cuts`` are the frame indices where its scenes change."""

    name: str
    fps: str = "25"
    seconds: float = 2.0
    size: str = "320x240"
    pix_fmt: str = "yuv420p"
    scene_seconds: float | None = None
    audio: str | None = "stereo48k"
    vfr: bool = False
    rotation: int = 0
    color: bool = True
    extra: tuple[str, ...] = field(default_factory=tuple)

    @property
    def filename(self) -> str:
        return f"{self.name}.mp4"


_AUDIO = {
    "stereo48k": ("48000", "stereo"),
    "mono44k": ("44100", "mono"),
    "surround51": ("48000", "5.1"),
}


def recipe_capabilities(recipe: ClipRecipe) -> frozenset[Capability]:
    """What the ffmpeg making ``recipe`` must be able to do (the system one may be too old)."""
    needs: set[Capability] = {"libx264"}
    if recipe.audio:
        needs.add("aac")
    if recipe.rotation:
        needs.add("display_rotation")
    return frozenset(needs)


def clip_argv(recipe: ClipRecipe, out: Path, ffmpeg_bin: str | None = None) -> list[str]:
    """ffmpeg argv that renders ``recipe`` into ``out`` (with ``ffmpeg_bin``, else one that can)."""
    width, height = recipe.size.split("x")
    video_src = f"testsrc2=size=320x240:rate={recipe.fps}:duration={recipe.seconds}"
    filters = [f"scale={width}:{height}"]
    if recipe.scene_seconds:
        # A new hue and brightness every scene: hard cuts the content detector must find.
        step = recipe.scene_seconds
        filters.append(f"hue=H=floor(t/{step})*2.1:s=1+mod(floor(t/{step})\\,3)*0.5")
        filters.append(f"eq=brightness=mod(floor(t/{step})\\,2)*0.25-0.1")
    if recipe.color:
        filters.append("setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv")
    if recipe.vfr:
        # Every third frame is shown twice as long: irregular frame durations.
        filters.append(f"setpts=(N+floor(N/3))/({recipe.fps}*TB)")
    argv = [
        ffmpeg_bin or ffmpeg_binary(needs=recipe_capabilities(recipe)),
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        video_src,
    ]
    if recipe.audio:
        rate, layout = _AUDIO[recipe.audio]
        argv += [
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:sample_rate={rate}:duration={recipe.seconds}",
        ]
    if filters:
        argv += ["-vf", ",".join(filters)]
    argv += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", recipe.pix_fmt, "-g", "50"]
    if recipe.vfr:
        argv += ["-fps_mode", "passthrough"]
    if recipe.audio:
        rate, layout = _AUDIO[recipe.audio]
        argv += [
            "-filter:a",
            f"aformat=channel_layouts={layout}",
            "-c:a",
            "aac",
            "-b:a",
            "96k",
            "-ar",
            rate,
        ]
    argv += [*recipe.extra, str(out)]
    return argv


def make_clip(recipe: ClipRecipe, directory: Path) -> Path:
    out = directory / recipe.filename
    if out.exists():
        return out
    ffmpeg_bin = ffmpeg_binary(needs=recipe_capabilities(recipe))
    if recipe.rotation:
        plain = directory / f"{recipe.name}.norot.mp4"
        run_ffmpeg(clip_argv(recipe, plain, ffmpeg_bin))
        run_ffmpeg(
            [
                ffmpeg_bin,
                "-hide_banner",
                "-loglevel",
                "error",
                "-y",
                "-display_rotation",
                str(recipe.rotation),
                "-i",
                str(plain),
                "-c",
                "copy",
                str(out),
            ]
        )
        plain.unlink()
    else:
        run_ffmpeg(clip_argv(recipe, out, ffmpeg_bin))
    return out


RECIPES = {
    r.name: r
    for r in (
        ClipRecipe("fps23976", fps="24000/1001", scene_seconds=1.0, seconds=3.0),
        ClipRecipe("fps25", fps="25", scene_seconds=1.0, seconds=3.0),
        ClipRecipe("fps2997", fps="30000/1001", scene_seconds=1.0, seconds=3.0),
        ClipRecipe("fps60", fps="60", seconds=2.0, audio="surround51"),
        ClipRecipe("vfr", fps="25", seconds=3.0, vfr=True),
        ClipRecipe("rotated", rotation=90),
        ClipRecipe("odd1921", size="1921x1081", pix_fmt="yuv444p", seconds=1.0),
        ClipRecipe("tenbit", pix_fmt="yuv420p10le", seconds=1.5),
        ClipRecipe("yuv444", pix_fmt="yuv444p", seconds=1.5),
        ClipRecipe("noaudio", audio=None),
        ClipRecipe("mono44k", audio="mono44k"),
        ClipRecipe("surround51", audio="surround51"),
        ClipRecipe(
            # Two minutes at 10 fps: the timeline is as long as it gets in the suite (drift
            # shows over time, not frames) at 40 % of the frames to detect and encode.
            "long2min", size="160x120", fps="10", seconds=120.0, scene_seconds=3.5, audio="mono44k"
        ),
    )
}


TWO_TALKER_CUT = 25
"""The cut in `make_two_talker_clip`: the second talker's first frame."""


def make_two_talker_clip(directory: Path) -> Path:
    """Two seconds of the GRID hard-cut clip around its first cut: 50 frames, two talkers, a cut
    at frame 25 (2.0-4.0 s of the source)."""
    from tests.conftest import media_path

    out = directory / "two_talkers_2s.mp4"
    if not out.exists():
        src = media_path("video/grid_hardcuts_4_speakers_12s.mp4")
        run_ffmpeg(
            [select_ffmpeg({"libx264", "aac"}).path, "-hide_banner", "-loglevel", "error", "-y",
             "-ss", "2", "-i", str(src), "-t", "2", "-c:v", "libx264", "-preset", "ultrafast",
             "-c:a", "aac", str(out)]
        )  # fmt: skip
    return out


def make_speech_clip(directory: Path, seconds: int) -> Path:
    """A test pattern (no face: the swap has nothing to do) over a GRID talker's speech, looped."""
    from tests.conftest import media_path

    out = directory / f"speech_{seconds}s.mp4"
    if not out.exists():
        voice = media_path("audio/grid_swiz3n.wav")
        run_ffmpeg(
            [select_ffmpeg({"libx264", "aac"}).path, "-hide_banner", "-loglevel", "error", "-y",
             "-f", "lavfi", "-i", f"testsrc2=size=160x120:rate=25:duration={seconds}",
             "-stream_loop", "-1", "-i", str(voice), "-t", str(seconds), "-shortest",
             "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(out)]
        )  # fmt: skip
    return out
