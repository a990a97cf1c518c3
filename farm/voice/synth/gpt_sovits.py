"""The `gpt-sovits` backend: sentences through a pool of GPT-SoVITS ``api_v2.py`` servers.

Contract (dubbing.md §1): ``POST {url}/tts`` with a JSON `TTS_Request`; 200 returns the audio bytes
(``media_type=wav``: mono int16 WAV); 400 returns ``{"message": ..., "Exception": ...}``.
``ref_audio_path`` is a path on the *server's* file system and must hold 3–10 s of audio, and
``prompt_text`` must be what that reference says (its transcript sidecar).

Requests are built for sentence-level dubbing: ``text_split_method=cut0`` (no split) and a small
``fragment_interval`` (the server appends it after every fragment, the last one included), no
streaming, and the sentence's seed (derived from the job and the sentence) so a retry, on any
server of the pool, reproduces the take. Routing, health checks, the identity's fine-tuned weights
and retries live in `farm.voice.synth.gpt_sovits_pool`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np

from farm.devices import WorkerResources
from farm.errors import SpecError
from farm.voice.references import ReferenceClip, choose_reference
from farm.voice.settings import GptSovitsSettings, VoiceSettings
from farm.voice.synth import SynthRequest
from farm.voice.synth.gpt_sovits_pool import (
    GptSovitsPool,
    GptSovitsRejected,
    GptSovitsUnavailable,
    ServerRegistry,
    decode_wav,
)

_REGISTRY_KEY = ("gpt-sovits", "server-registry")
"""Where a worker keeps its `ServerRegistry` in `WorkerResources.models` (one per worker)."""


def build_tts_request(
    text: str, text_lang: str, reference: ReferenceClip, settings: GptSovitsSettings, seed: int
) -> dict[str, Any]:
    """The JSON body of ``POST /tts`` for one sentence (a pure function)."""
    return {
        "text": text,
        "text_lang": text_lang,
        "ref_audio_path": str(reference.path),
        "prompt_text": reference.text,
        "prompt_lang": settings.prompt_language,
        "top_k": settings.top_k,
        "top_p": settings.top_p,
        "temperature": settings.temperature,
        "text_split_method": settings.text_split_method,
        "batch_size": 1,
        "speed_factor": settings.speed_factor,
        "fragment_interval": settings.fragment_interval,
        "seed": seed,
        "media_type": "wav",
        "streaming_mode": False,
        "parallel_infer": True,
        "repetition_penalty": settings.repetition_penalty,
    }


class GptSovitsSynth:
    """Sentence text → speech in the identity's voice, through a pool of api_v2 servers.

    Keeps the pool's state (server health, weights loaded) across `synthesize` calls: reuse one
    instance for many sentences. With `resources`, that state is the worker's (shared by every
    synth built with the same resources); without, it is this instance's, still correct but a new
    instance health-checks and loads weights again.
    """

    name: ClassVar[str] = "gpt-sovits"
    keeps_timing: ClassVar[bool] = False

    def __init__(
        self,
        settings: VoiceSettings,
        voice_refs: Sequence[Path],
        client: httpx.Client | None = None,
        *,
        resources: WorkerResources | None = None,
        pool: GptSovitsPool | None = None,
    ) -> None:
        self._settings = settings
        self.reference = choose_reference(voice_refs, settings)
        if not self.reference.text and not settings.gpt_sovits.reference_free:
            raise SpecError(_no_transcript(self.reference))
        if pool is None:
            registry = (
                resources.models.get(_REGISTRY_KEY, ServerRegistry)
                if resources is not None
                else None
            )
            pool = GptSovitsPool(settings.gpt_sovits, client, registry=registry)
        self.pool = pool

    def synthesize(self, request: SynthRequest) -> tuple[np.ndarray, int]:
        text = (request.text or "").strip()
        if not text:
            raise SpecError(
                f"sentence {request.index} has no text; gpt-sovits needs a transcript "
                "(voice.transcript or voice.asr)"
            )
        body = build_tts_request(
            text, request.language, self.reference, self._settings.gpt_sovits, request.seed
        )
        return self.pool.tts(body, request.index)

    def close(self) -> None:
        self.pool.close()


def _no_transcript(reference: ReferenceClip) -> str:
    if reference.derived:
        how = (
            f"the reference {reference.path.name} was cut or merged from the voice clips and has "
            "no transcript (a cut loses it; a merge keeps it only when every clip has one)"
        )
    else:
        how = f"the reference {reference.path} has no transcript"
    return (
        f"{how}; GPT-SoVITS's prompt_text must be what the reference says: give a 3–10 s clip "
        "its transcript in a .txt (or .lab) file of the same name beside it, or set "
        "voice.gpt_sovits.reference_free=true (v2 models only, less alike)"
    )


__all__ = [
    "GptSovitsRejected",
    "GptSovitsSynth",
    "GptSovitsUnavailable",
    "build_tts_request",
    "decode_wav",
]
