"""The default `vc` backend: the WORLD DSP conversion of `farm.voice.world` (a baseline)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from farm.voice.model import VoiceProfile
from farm.voice.settings import VoiceSettings
from farm.voice.synth import SynthRequest
from farm.voice.world import convert, profile_from_references


class VcSynth:
    """Converts the original sentence toward the identity's voice, keeping its timing exactly."""

    name: ClassVar[str] = "vc"
    keeps_timing: ClassVar[bool] = True

    def __init__(
        self, settings: VoiceSettings, voice_refs: Sequence[Path], target: VoiceProfile | None
    ) -> None:
        self._settings = settings
        self._target = target or profile_from_references(
            voice_refs, settings.vc, settings.reference_min_s
        )

    @property
    def target(self) -> VoiceProfile:
        return self._target

    def synthesize(self, request: SynthRequest) -> tuple[np.ndarray, int]:
        out = convert(
            request.source,
            request.sample_rate,
            self._target,
            self._settings.vc,
            source=request.source_profile,
        )
        return out, request.sample_rate

    def close(self) -> None:
        return None
