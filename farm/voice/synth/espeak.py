"""The `espeak` backend: espeak-ng text to speech, then the `vc` conversion (offline fallback).

espeak-ng runs one of two ways (`EspeakSettings.engine`): the ``espeak-ng`` binary on PATH, or
its shared library from the ``espeakng-loader`` wheel (`farm.voice.synth.espeak_lib`), which a
pip install brings with ``pip install 'syncfarm[gpl-tts]'``. ``auto`` prefers the binary and
falls back to the library; with neither the backend raises `ModelError` naming both fixes when
it is created. The voice sounds robotic: it exists so `tts` mode works with nothing but a package
install.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal, Protocol

import numpy as np

from farm.errors import ModelError, SpecError
from farm.voice.model import VoiceProfile
from farm.voice.settings import EspeakSettings, VoiceSettings
from farm.voice.signal import read_wav_mono
from farm.voice.synth import SynthRequest
from farm.voice.synth.espeak_lib import INSTALL_HINT, EspeakLibrary, process_library, wheel_paths
from farm.voice.world import convert, profile_from_references


def espeak_command(settings: EspeakSettings, binary: str, wav_path: Path) -> list[str]:
    """argv that reads the text from stdin and writes a WAV (a pure function)."""
    return [
        binary,
        "-v",
        settings.voice,
        "-s",
        str(settings.words_per_minute),
        "-w",
        str(wav_path),
        "--stdin",
    ]


def find_espeak(binary: str) -> str:
    """The binary's full path; ModelError naming it when it is not installed."""
    found = shutil.which(binary)
    if found is None:
        raise ModelError(
            f"the espeak backend needs the {binary!r} binary, which is not on PATH; install it "
            "(`apt-get install espeak-ng`), set voice.espeak.binary, use voice.espeak.engine="
            f"library (`{INSTALL_HINT}`), or use tts_backend=gpt-sovits"
        )
    return found


class _Engine(Protocol):
    def speak(self, text: str) -> tuple[np.ndarray, int]: ...


class _BinaryEngine:
    """The espeak-ng program: one subprocess per sentence, WAV through a temporary file."""

    def __init__(self, settings: EspeakSettings, binary: str) -> None:
        self._settings = settings
        self._binary = binary

    def speak(self, text: str) -> tuple[np.ndarray, int]:
        settings = self._settings
        with tempfile.TemporaryDirectory(prefix="syncfarm-espeak-") as tmp:
            wav = Path(tmp) / "out.wav"
            argv = espeak_command(settings, self._binary, wav)
            try:
                done = subprocess.run(
                    argv,
                    input=text.encode("utf-8"),
                    capture_output=True,
                    timeout=settings.timeout_s,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise ModelError(
                    f"{self._binary} took over {settings.timeout_s} s; raise "
                    "voice.espeak.timeout_s or shorten the sentence"
                ) from None
            if done.returncode != 0:
                tail = done.stderr.decode("utf-8", "replace").strip()[-300:]
                raise ModelError(
                    f"{self._binary} exited with {done.returncode}: {tail or 'no output'}"
                )
            return read_wav_mono(wav)


class _LibraryEngine:
    """libespeak-ng in this process (shared by every synth of the process, see espeak_lib)."""

    def __init__(self, settings: EspeakSettings, library: EspeakLibrary) -> None:
        self._settings = settings
        self._library = library

    def speak(self, text: str) -> tuple[np.ndarray, int]:
        audio = self._library.synthesize(
            text,
            voice=self._settings.voice,
            words_per_minute=self._settings.words_per_minute,
            timeout_s=self._settings.timeout_s,
        )
        return audio, self._library.sample_rate


def choose_engine(settings: EspeakSettings) -> Literal["binary", "library"]:
    """The engine `settings.engine` resolves to, without loading it (preflight checks use it).

    ModelError naming the fix when it is missing: the binary's install, or the ``gpl-tts``
    extra for the library (both, for ``auto``).
    """
    if settings.engine == "binary":
        find_espeak(settings.binary)
        return "binary"
    if settings.engine == "auto" and shutil.which(settings.binary) is not None:
        return "binary"
    if wheel_paths() is None:
        if settings.engine == "library":
            raise ModelError(
                f"voice.espeak.engine=library needs the espeakng-loader wheel: `{INSTALL_HINT}`"
            )
        raise ModelError(
            f"the espeak backend needs espeak-ng: `{INSTALL_HINT}` (GPL-3 espeak-ng library) "
            f"or install the {settings.binary!r} binary (`apt-get install espeak-ng`), or use "
            "tts_backend=gpt-sovits"
        )
    return "library"


def open_engine(settings: EspeakSettings) -> tuple[Literal["binary", "library"], _Engine]:
    """The engine `choose_engine` picks, ready to speak (the library is loaded once a process)."""
    name = choose_engine(settings)
    if name == "binary":
        return name, _BinaryEngine(settings, find_espeak(settings.binary))
    return name, _LibraryEngine(settings, process_library())


class EspeakSynth:
    """espeak-ng speaks the sentence text; WORLD converts it toward the identity."""

    name: ClassVar[str] = "espeak"
    keeps_timing: ClassVar[bool] = False

    def __init__(
        self, settings: VoiceSettings, voice_refs: Sequence[Path], target: VoiceProfile | None
    ) -> None:
        self._settings = settings
        self.engine, self._engine = open_engine(settings.espeak)
        self._target = target or profile_from_references(
            voice_refs, settings.vc, settings.reference_min_s
        )

    def speak(self, text: str) -> tuple[np.ndarray, int]:
        """Raw espeak-ng audio for `text` (mono float32, its own rate)."""
        return self._engine.speak(text)

    def synthesize(self, request: SynthRequest) -> tuple[np.ndarray, int]:
        text = (request.text or "").strip()
        if not text:
            raise SpecError(
                f"sentence {request.index} has no text; espeak needs a transcript "
                "(voice.transcript or voice.asr)"
            )
        audio, rate = self.speak(text)
        return convert(audio, rate, self._target, self._settings.vc), rate

    def close(self) -> None:
        return None
