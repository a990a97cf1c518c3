"""Generated test media: panned natural images, PyAV encode/decode and ffmpeg attacks."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import imageio_ffmpeg
import numpy as np

from tests.conftest import media_path

FACES = (
    "faces/tears_of_steel_woman_outdoor.png",
    "faces/astronaut_eileen_collins_nasa.png",
    "faces/camera_operator_profile_cc0.png",
)


def panned_frames(
    count: int, width: int = 1280, height: int = 720, *, seed: int = 0
) -> Iterator[np.ndarray]:
    """Natural-image frames: each face image panned and zoomed, with a hard cut every 50 frames."""
    images = [cv2.imread(str(media_path(name)), cv2.IMREAD_COLOR) for name in FACES]
    rng = np.random.default_rng(seed)
    for index in range(count):
        image = images[(index // 50) % len(images)]
        t = (index % 50) / 50.0
        scale = max(width / image.shape[1], height / image.shape[0]) * (1.25 + 0.1 * t)
        big = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        x0 = int((big.shape[1] - width) * (0.2 + 0.6 * t))
        y0 = int((big.shape[0] - height) * (0.5 - 0.3 * t))
        frame = big[y0 : y0 + height, x0 : x0 + width]
        noise = rng.integers(-2, 3, size=frame.shape, dtype=np.int16)
        yield np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def write_video(
    path: Path, frames: Iterator[np.ndarray] | list[np.ndarray], *, fps: int = 25, crf: int = 18
) -> None:
    """Encode BGR frames with libx264 yuv420p."""
    with av.open(str(path), "w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream("libx264", rate=Fraction(fps))
                stream.width, stream.height = frame.shape[1], frame.shape[0]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf), "preset": "veryfast"}
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                container.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)


def read_video(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]


def ffmpeg(*args: str) -> None:
    argv = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", *args]
    subprocess.run(argv, check=True, capture_output=True)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def write_av(
    path: Path, frames: list[np.ndarray], audio: np.ndarray, sample_rate: int, *, fps: int = 25
) -> None:
    """Mux BGR frames (libx264 crf 18) and float32 mono audio (AAC 128k) into one MP4."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=Fraction(fps))
        video.width, video.height = frames[0].shape[1], frames[0].shape[0]
        video.pix_fmt = "yuv420p"
        video.options = {"crf": "18", "preset": "veryfast"}
        sound = container.add_stream("aac", rate=sample_rate, layout="mono")
        sound.bit_rate = 128_000
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        block = 1024
        pcm = np.asarray(audio, dtype=np.float32).reshape(1, -1)
        for start in range(0, pcm.shape[1], block):
            chunk = np.ascontiguousarray(pcm[:, start : start + block])
            audio_frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            audio_frame.sample_rate = sample_rate
            audio_frame.pts = start
            for packet in sound.encode(audio_frame):
                container.mux(packet)
        for packet in sound.encode():
            container.mux(packet)


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of any file to float32 (samples, channels) via ffmpeg."""
    import soundfile

    wav = path.with_suffix(".decoded.wav")
    ffmpeg("-i", str(path), "-vn", "-c:a", "pcm_f32le", str(wav))
    samples, rate = soundfile.read(str(wav), dtype="float32", always_2d=True)
    return samples, int(rate)
