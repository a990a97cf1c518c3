"""`VoiceSynth` backends: one sentence per call, chosen by name from a read-only registry.

====================  ==========================================================================
name                  what it does
====================  ==========================================================================
``vc``                WORLD DSP conversion of the original sentence (no text, nothing to download)
``rvc``               RVC v2 voice conversion (ONNX) with the identity's own model (user weights)
``gpt-sovits``        text to speech through a GPT-SoVITS ``api_v2`` server (HTTP)
``espeak``            espeak-ng text to speech, then the ``vc`` conversion (offline fallback)
====================  ==========================================================================

Backends are imported on first use, so a missing optional dependency only fails the backend
that needs it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar, Protocol

import numpy as np

from farm.devices import WorkerResources
from farm.errors import SpecError
from farm.voice.model import VoiceProfile
from farm.voice.settings import VoiceSettings


@dataclass(frozen=True, eq=False)
class SynthRequest:
    """One sentence to voice. `source` is its original speech (mono float32 at `sample_rate`)."""

    index: int
    text: str | None
    language: str
    source: np.ndarray
    sample_rate: int
    seed: int
    source_profile: VoiceProfile | None = None


class VoiceSynth(Protocol):
    """A voice backend. Required: `name`, `keeps_timing` and `synthesize`; `close` may do nothing.

    `keeps_timing` is True when the output is sample-aligned with `SynthRequest.source` (same
    length, same timing), so fitting places it as is instead of trimming and stretching it.
    """

    name: ClassVar[str]
    keeps_timing: ClassVar[bool]

    def synthesize(self, request: SynthRequest) -> tuple[np.ndarray, int]:
        """Voice one sentence; returns mono float32 samples and their sample rate."""
        ...

    def close(self) -> None:
        """Release connections or temporary files (may do nothing)."""
        ...


SynthFactory = Callable[
    [VoiceSettings, Sequence[Path], VoiceProfile | None, WorkerResources], VoiceSynth
]
"""factory(settings, voice_refs, target_profile, resources): `resources` is the worker's device
(the GPU ids Ray gave it) and model cache; neural backends open their sessions there."""


def _make_vc(
    settings: VoiceSettings,
    refs: Sequence[Path],
    target: VoiceProfile | None,
    resources: WorkerResources,
) -> VoiceSynth:
    from farm.voice.synth.vc import VcSynth

    return VcSynth(settings, refs, target)


def _make_rvc(
    settings: VoiceSettings,
    refs: Sequence[Path],
    target: VoiceProfile | None,
    resources: WorkerResources,
) -> VoiceSynth:
    from farm.voice.synth.rvc import RvcSynth

    return RvcSynth(settings, refs, target, resources)


def _make_gpt_sovits(
    settings: VoiceSettings,
    refs: Sequence[Path],
    target: VoiceProfile | None,
    resources: WorkerResources,
) -> VoiceSynth:
    from farm.voice.synth.gpt_sovits import GptSovitsSynth

    return GptSovitsSynth(settings, refs, resources=resources)


def _make_espeak(
    settings: VoiceSettings,
    refs: Sequence[Path],
    target: VoiceProfile | None,
    resources: WorkerResources,
) -> VoiceSynth:
    from farm.voice.synth.espeak import EspeakSynth

    return EspeakSynth(settings, refs, target)


SYNTH_BACKENDS: Mapping[str, SynthFactory] = MappingProxyType(
    {"vc": _make_vc, "rvc": _make_rvc, "gpt-sovits": _make_gpt_sovits, "espeak": _make_espeak}
)
"""Read-only registry: backend name → factory(settings, voice_refs, target, resources)."""


def create_synth(
    name: str,
    settings: VoiceSettings,
    voice_refs: Sequence[Path],
    target: VoiceProfile | None = None,
    resources: WorkerResources | None = None,
) -> VoiceSynth:
    """Instantiate the backend called `name`; SpecError lists the known names otherwise."""
    factory = SYNTH_BACKENDS.get(name)
    if factory is None:
        known = ", ".join(sorted(SYNTH_BACKENDS))
        raise SpecError(f"unknown voice backend {name!r}; available: {known}")
    return factory(settings, voice_refs, target, resources or WorkerResources())


def converts_speech(name: str) -> bool:
    """Whether the backend converts the original speech (needs no text; keeps its timing)."""
    return name in ("vc", "rvc")


def needs_target_profile(name: str) -> bool:
    """Whether the backend converts toward the identity's `VoiceProfile` (worth computing once)."""
    return name in ("vc", "rvc", "espeak")


__all__ = [
    "SYNTH_BACKENDS",
    "SynthFactory",
    "SynthRequest",
    "VoiceSynth",
    "converts_speech",
    "create_synth",
    "needs_target_profile",
]
