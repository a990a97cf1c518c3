"""The `espeak` backend: espeak-ng text to speech, then the `vc` conversion (offline fallback).

It needs the ``espeak-ng`` binary (``apt-get install espeak-ng``); without it the backend raises
`ModelError` naming the binary when it is created. The voice sounds robotic: it exists so `tts`
mode works with nothing but a package install.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from farm.errors import ModelError, SpecError
from farm.voice.model import VoiceProfile
from farm.voice.settings import EspeakSettings, VoiceSettings
from farm.voice.signal import read_wav_mono
from farm.voice.synth import SynthRequest
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
            "(`apt-get install espeak-ng`), set voice.espeak.binary, or use tts_backend=gpt-sovits"
        )
    return found


class EspeakSynth:
    """espeak-ng speaks the sentence text; WORLD converts it toward the identity."""

    name: ClassVar[str] = "espeak"
    keeps_timing: ClassVar[bool] = False

    def __init__(
        self, settings: VoiceSettings, voice_refs: Sequence[Path], target: VoiceProfile | None
    ) -> None:
        self._settings = settings
        self._binary = find_espeak(settings.espeak.binary)
        self._target = target or profile_from_references(
            voice_refs, settings.vc, settings.reference_min_s
        )

    def speak(self, text: str) -> tuple[np.ndarray, int]:
        """Raw espeak-ng audio for `text` (mono float32, its own rate)."""
        with tempfile.TemporaryDirectory(prefix="syncfarm-espeak-") as tmp:
            wav = Path(tmp) / "out.wav"
            argv = espeak_command(self._settings.espeak, self._binary, wav)
            try:
                done = subprocess.run(
                    argv,
                    input=text.encode("utf-8"),
                    capture_output=True,
                    timeout=self._settings.espeak.timeout_s,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise ModelError(
                    f"{self._binary} took over {self._settings.espeak.timeout_s} s; raise "
                    "voice.espeak.timeout_s or shorten the sentence"
                ) from None
            if done.returncode != 0:
                tail = done.stderr.decode("utf-8", "replace").strip()[-300:]
                raise ModelError(
                    f"{self._binary} exited with {done.returncode}: {tail or 'no output'}"
                )
            return read_wav_mono(wav)

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
