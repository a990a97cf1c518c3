"""Source separation behind the `Separator` protocol.

``none`` (the default) separates nothing: the whole mix is the voice track and there is no
background to mix back in. ``stems`` reads a user-supplied background (music and effects) file and
takes the voice as the mix minus that background. ``mdx`` runs a UVR MDX-Net ONNX model the
user supplies (`farm.voice.mdx`, settings ``voice.mdx``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
import soundfile as sf

from farm.devices import WorkerResources
from farm.errors import MediaError, SpecError
from farm.voice.settings import VoiceSettings
from farm.voice.signal import as_2d, fit_length_2d


@dataclass(frozen=True, eq=False)
class Separation:
    """The voice (same shape as the input) and the background, or None when not separated."""

    voice: np.ndarray
    background: np.ndarray | None


class Separator(Protocol):
    """Splits a mix (samples, channels) into voice and background of the same shape."""

    name: ClassVar[str]

    def separate(self, audio: np.ndarray, sample_rate: int) -> Separation: ...


class NoSeparator:
    """The whole input is the voice; nothing is kept as background."""

    name: ClassVar[str] = "none"

    def separate(self, audio: np.ndarray, sample_rate: int) -> Separation:
        return Separation(voice=as_2d(audio), background=None)


class StemSeparator:
    """Background from a user-supplied stem file; voice = mix − background (sample-exact)."""

    name: ClassVar[str] = "stems"

    def __init__(self, background_path: Path) -> None:
        self.background_path = background_path

    def separate(self, audio: np.ndarray, sample_rate: int) -> Separation:
        mix = as_2d(audio)
        try:
            data, rate = sf.read(str(self.background_path), dtype="float32", always_2d=True)
        except (OSError, RuntimeError, sf.LibsndfileError) as exc:
            raise MediaError(
                f"cannot read background stem {self.background_path}: {exc}; give a WAV file"
            ) from exc
        if rate != sample_rate:
            raise MediaError(
                f"background stem {self.background_path} is {rate} Hz, the video's audio is "
                f"{sample_rate} Hz; resample the stem to {sample_rate} Hz"
            )
        if data.shape[1] not in (1, mix.shape[1]):
            raise MediaError(
                f"background stem {self.background_path} has {data.shape[1]} channels, the video's "
                f"audio has {mix.shape[1]}; give a mono stem or one with {mix.shape[1]} channels"
            )
        background = np.broadcast_to(data, (data.shape[0], mix.shape[1]))
        background = fit_length_2d(background, mix.shape[0])
        return Separation(voice=mix - background, background=background)


def create_separator(
    settings: VoiceSettings, resources: WorkerResources | None = None
) -> Separator:
    """The separator named by ``settings.separator`` (model ones run on ``resources``)."""
    if settings.separator == "none":
        return NoSeparator()
    if settings.separator == "stems":
        if settings.background_stem is None:
            raise SpecError("separator 'stems' needs voice.background_stem")
        return StemSeparator(settings.background_stem)
    if settings.separator == "mdx":
        from farm.voice.mdx import MdxSeparator

        return MdxSeparator(settings.mdx, resources)
    raise SpecError(f"unknown separator {settings.separator!r}; available: none, stems, mdx")
