"""The `gpt-sovits` backend: an httpx client for a GPT-SoVITS ``api_v2.py`` server.

Contract (dubbing.md §1): ``POST {url}/tts`` with a JSON `TTS_Request`; 200 returns the audio bytes
(``media_type=wav``: mono int16 WAV); 400 returns ``{"message": ..., "Exception": ...}``.
``ref_audio_path`` is a path on the *server's* file system and must hold 3–10 s of audio.

Requests are built for sentence-level dubbing: ``text_split_method=cut0`` (no split) and a small
``fragment_interval`` (the server appends it after every fragment, the last one included), no
streaming, and a seed derived from the job and the sentence so a retry reproduces the take.
Network errors and 5xx answers are retried with exponential back-off; a 400 is not (the same
request would be rejected again).
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
import soundfile as sf

from farm.errors import MediaError, ShardFailed, SpecError
from farm.voice.references import ReferenceClip, choose_reference
from farm.voice.settings import GptSovitsSettings, VoiceSettings
from farm.voice.signal import speech_mixdown
from farm.voice.synth import SynthRequest

logger = logging.getLogger(__name__)


class GptSovitsRejected(ShardFailed):
    """The server answered 400: the request itself is wrong (language, reference, text)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class GptSovitsUnavailable(ShardFailed):
    """The server could not be reached or kept failing (5xx); worth retrying later."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


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


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return response.text[:200].strip() or f"HTTP {response.status_code}"
    if isinstance(body, dict):
        message = str(body.get("message", "")).strip()
        detail = str(body.get("Exception", "")).strip()
        return f"{message}: {detail}" if message and detail else message or detail or str(body)
    return str(body)[:200]


def decode_wav(content: bytes, where: str) -> tuple[np.ndarray, int]:
    """A WAV body as mono float32 plus its rate; MediaError if it is not audio."""
    try:
        data, rate = sf.read(io.BytesIO(content), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, ValueError) as exc:
        raise MediaError(
            f"{where}: the answer is not a WAV ({len(content)} bytes: {exc}); is media_type=wav "
            "supported by this server?"
        ) from None
    if data.shape[0] == 0:
        raise MediaError(f"{where}: the server returned an empty WAV")
    return speech_mixdown(data), int(rate)


class GptSovitsClient:
    """Posts sentences to one api_v2 server with timeouts and retries."""

    def __init__(self, settings: GptSovitsSettings, client: httpx.Client | None = None) -> None:
        self.settings = settings
        self.url = settings.url.rstrip("/") + "/tts"
        timeout = httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s)
        self._client = client or httpx.Client(timeout=timeout)
        self._owns_client = client is None

    def tts(self, body: dict[str, Any], sentence: int) -> tuple[np.ndarray, int]:
        """Synthesize one request; raises GptSovitsRejected or GptSovitsUnavailable on failure."""
        attempts = self.settings.retries + 1
        last = ""
        for attempt in range(attempts):
            if attempt:
                time.sleep(self.settings.backoff_s * 2 ** (attempt - 1))
            try:
                response = self._client.post(self.url, json=body)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                logger.warning(
                    "GPT-SoVITS %s unreachable for sentence %d (try %d/%d): %s",
                    self.url,
                    sentence,
                    attempt + 1,
                    attempts,
                    last,
                )
                continue
            if response.status_code == 200:
                return decode_wav(response.content, f"GPT-SoVITS {self.url} sentence {sentence}")
            if 400 <= response.status_code < 500:
                raise GptSovitsRejected(
                    f"GPT-SoVITS {self.url} rejected sentence {sentence} "
                    f"(HTTP {response.status_code}): {_error_text(response)}; check text_lang "
                    f"{body.get('text_lang')!r}, the reference {body.get('ref_audio_path')} "
                    "(3–10 s, "
                    "readable by the server) and the loaded model version"
                )
            last = f"HTTP {response.status_code}: {_error_text(response)}"
            logger.warning(
                "GPT-SoVITS %s failed sentence %d (try %d/%d): %s",
                self.url,
                sentence,
                attempt + 1,
                attempts,
                last,
            )
        raise GptSovitsUnavailable(
            f"GPT-SoVITS server at {self.settings.url} failed sentence {sentence} after {attempts} "
            f"tries ({last}); start it with `python api_v2.py -a 127.0.0.1 -p 9880` or fix "
            "voice.gpt_sovits.url"
        )

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


class GptSovitsSynth:
    """Sentence text → speech in the identity's voice, through a GPT-SoVITS api_v2 server."""

    name: ClassVar[str] = "gpt-sovits"
    keeps_timing: ClassVar[bool] = False

    def __init__(
        self,
        settings: VoiceSettings,
        voice_refs: Sequence[Path],
        client: httpx.Client | None = None,
    ) -> None:
        self._settings = settings
        self.reference = choose_reference(voice_refs, settings)
        self._client = GptSovitsClient(settings.gpt_sovits, client)

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
        return self._client.tts(body, request.index)

    def close(self) -> None:
        self._client.close()
