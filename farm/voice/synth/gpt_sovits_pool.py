"""A pool of GPT-SoVITS ``api_v2.py`` servers: routing, health checks, weights, retries.

Routing: sentence *i* goes to ``urls[i % n]`` while that server is healthy, else to the next
healthy one in the list (wrapping), so one job routes the same way on every run that sees the
same failures.

Health: api_v2 has no health endpoint. The check is ``GET /control`` *without* ``command``: api_v2
answers it with 400 ``{"message": "command is required"}`` before touching the pipeline, so it
costs nothing and changes nothing (``/set_refer_audio`` without a path, the other cheap GET, goes
into the TTS pipeline). Any answer below 500 means the process serves HTTP; a refused or broken
connection, a timeout or a 5xx marks the server down for ``cooldown_s``. api_v2 synthesizes on its
event loop, so a busy server answers only after its current sentence: the check waits as long as a
sentence may (``health_timeout_s``, default ``timeout_s``) rather than call a busy server dead.
A server is checked before its first use and again after any failed try.

Weights: api_v2 holds one GPT and one SoVITS model per process and cannot report which. Before a
server's first sentence the configured ``gpt_weights``/``sovits_weights`` are loaded there; they
are loaded again after the server was found down (a restart drops them) and after a network error
(which may have been a restart). `ServerRegistry` remembers what was loaded where; one registry per
worker (kept in its `ModelCache`) lets every synth of the worker share that knowledge, so a job
for another identity on the same server reloads its own weights, and a job that names none is
refused a server still holding another identity's. Workers cannot see each other's loads: give
jobs of different identities different servers at the same time.

Tries: ``retries + 1`` POSTs per sentence at most, failovers included, with exponential back-off;
a 4xx is never retried (the same request would be rejected again).
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import soundfile as sf

from farm.errors import MediaError, ShardFailed
from farm.voice.settings import GptSovitsSettings
from farm.voice.signal import speech_mixdown

logger = logging.getLogger(__name__)

_START_HINT = "start api_v2 (`python api_v2.py -a 0.0.0.0 -p 9880`) or fix voice.gpt_sovits.urls"


class GptSovitsRejected(ShardFailed):
    """A server answered 4xx: the request itself is wrong (language, reference, text, weights)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class GptSovitsUnavailable(ShardFailed):
    """No server could be reached, or they kept failing (5xx); worth retrying later."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


@dataclass(eq=False)
class ServerState:
    """What this worker knows about one server. Guarded by `lock`."""

    url: str
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    verified: bool = False
    """Answered a health check since its last failure (no check needed before using it)."""
    down_until: float = 0.0
    """Clock time until which it is skipped after a failed health check."""
    reason: str = ""
    """Why it last failed, for the error message."""
    weights: dict[str, str] = field(default_factory=dict)
    """``gpt``/``sovits`` → the path this worker loaded there (absent: the server's own)."""
    stale: set[str] = field(default_factory=set)
    """Kinds in `weights` to load again: a network error since, so the server may have
    restarted."""


class ServerRegistry:
    """`ServerState` by URL, shared by every pool of a worker (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._servers: dict[str, ServerState] = {}

    def get(self, url: str) -> ServerState:
        with self._lock:
            return self._servers.setdefault(url, ServerState(url))


def error_text(response: httpx.Response) -> str:
    """api_v2's ``{"message", "Exception"}`` as one short line (or the body's start)."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return " ".join(response.text[:200].split()) or f"HTTP {response.status_code}"
    if isinstance(body, dict):
        message = str(body.get("message", "")).strip()
        detail = str(body.get("Exception", "")).strip()
        return f"{message}: {detail}" if message and detail else message or detail or str(body)
    return str(body)[:200]


def _network_text(exc: httpx.TransportError) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


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


_WEIGHTS = (
    ("gpt", "set_gpt_weights", "gpt_weights"),
    ("sovits", "set_sovits_weights", "sovits_weights"),
)
"""(kind, api_v2 endpoint, setting), in the order they are loaded."""


def _mark_failed(server: ServerState, reason: str, *, network: bool) -> str:
    """Record a failed try (`server.lock` held): check the server before its next use and, after
    a network error, load its weights again (it may have restarted)."""
    server.verified = False
    server.reason = reason
    if network:
        server.stale.update(server.weights)
    return reason


class GptSovitsPool:
    """Posts sentences to the healthiest server of ``settings.urls`` (see the module doc).

    `clock` and `sleep` are injectable so tests can step through cool-downs and back-offs.
    """

    def __init__(
        self,
        settings: GptSovitsSettings,
        client: httpx.Client | None = None,
        *,
        registry: ServerRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        registry = registry or ServerRegistry()
        self.servers = tuple(registry.get(url) for url in settings.urls)
        self._timeout = httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s)
        self._health_timeout = httpx.Timeout(
            settings.health_timeout_s or settings.timeout_s, connect=settings.connect_timeout_s
        )
        self._client = client or httpx.Client(timeout=self._timeout)
        self._owns_client = client is None
        self._clock = clock
        self._sleep = sleep

    def route(self, sentence: int) -> tuple[ServerState, ...]:
        """The order in which `sentence` tries the servers: its own (index mod n), then on."""
        first = sentence % len(self.servers)
        return self.servers[first:] + self.servers[:first]

    def tts(self, body: dict[str, Any], sentence: int) -> tuple[np.ndarray, int]:
        """Synthesize one request; raises GptSovitsRejected or GptSovitsUnavailable on failure."""
        attempts = self.settings.retries + 1
        failures: list[str] = []
        for attempt in range(attempts):
            if attempt:
                self._sleep(self.settings.backoff_s * 2 ** (attempt - 1))
            server = self._pick(sentence, failures)
            result = self._try(server, body, sentence)
            if not isinstance(result, str):
                return result
            failures.append(f"{server.url}: {result}")
            logger.warning(
                "GPT-SoVITS %s failed sentence %d (try %d/%d): %s",
                server.url,
                sentence,
                attempt + 1,
                attempts,
                result,
            )
        tries = "try" if attempts == 1 else "tries"
        raise GptSovitsUnavailable(
            f"GPT-SoVITS failed sentence {sentence} after {attempts} {tries} "
            f"({'; '.join(failures)}); {_START_HINT}"
        )

    def _pick(self, sentence: int, failures: list[str]) -> ServerState:
        down = []
        for server in self.route(sentence):
            if self._healthy(server):
                return server
            down.append(f"{server.url} ({server.reason})")
        earlier = f"; before that: {'; '.join(failures)}" if failures else ""
        raise GptSovitsUnavailable(
            f"no GPT-SoVITS server is healthy for sentence {sentence}: {', '.join(down)}"
            f"{earlier}; a server that fails its health check is skipped for "
            f"{self.settings.cooldown_s:g} s; {_START_HINT}"
        )

    def _healthy(self, server: ServerState) -> bool:
        """Whether `server` may take a sentence now, health-checking it if it must be."""
        with server.lock:
            if server.verified:
                return True
            if self._clock() < server.down_until:
                return False
            reason = self._check(server.url)
            if reason is None:
                server.verified = True
                return True
            server.down_until = self._clock() + self.settings.cooldown_s
            server.reason = reason
            server.weights.clear()  # if it restarts it comes back with its own weights
            server.stale.clear()
            logger.warning(
                "GPT-SoVITS %s is down for %g s: %s", server.url, self.settings.cooldown_s, reason
            )
            return False

    def _check(self, url: str) -> str | None:
        """None when the server answers HTTP below 500, else why not (see the module doc)."""
        try:
            # never pass `command`: /control?command=... restarts or stops the server
            response = self._client.get(f"{url}/control", timeout=self._health_timeout)
        except httpx.TransportError as exc:
            return f"health check: {_network_text(exc)}"
        if response.status_code >= 500:
            return f"health check: HTTP {response.status_code}: {error_text(response)}"
        return None

    def _try(
        self, server: ServerState, body: dict[str, Any], sentence: int
    ) -> tuple[np.ndarray, int] | str:
        """One try on `server`: the audio, or why it failed in a way worth retrying.

        Holds the server's lock from loading weights to the answer, so another job of this
        worker cannot swap the weights in between; api_v2 serves one request at a time anyway.
        """
        with server.lock:
            failure = self._load_weights(server)
            if failure is not None:
                return failure
            try:
                response = self._client.post(f"{server.url}/tts", json=body, timeout=self._timeout)
            except httpx.TransportError as exc:
                return _mark_failed(server, _network_text(exc), network=True)
            if response.status_code >= 500:
                reason = f"HTTP {response.status_code}: {error_text(response)}"
                return _mark_failed(server, reason, network=False)
        if response.status_code == 200:
            return decode_wav(response.content, f"GPT-SoVITS {server.url} sentence {sentence}")
        hint = " (is this an api_v2 server?)" if response.status_code == 404 else ""
        raise GptSovitsRejected(
            f"GPT-SoVITS {server.url} rejected sentence {sentence} "
            f"(HTTP {response.status_code}{hint}): {error_text(response)}; check text_lang "
            f"{body.get('text_lang')!r}, the reference {body.get('ref_audio_path')} (3–10 s, "
            "readable by the server) and the loaded model version"
        )

    def _load_weights(self, server: ServerState) -> str | None:
        """Make `server` hold the configured weights (`server.lock` held); None when it does,
        else a retryable reason.

        Raises GptSovitsRejected when the server refuses a path, or when it holds weights this
        worker loaded for another job and this job names none (api_v2 cannot unload them).
        """
        for kind, endpoint, setting in _WEIGHTS:
            path: str | None = getattr(self.settings, setting)
            loaded = server.weights.get(kind)
            if path is None:
                if loaded is not None:
                    raise GptSovitsRejected(
                        f"GPT-SoVITS {server.url} holds the {kind} weights {loaded} that this "
                        f"worker loaded for another job, and this job sets no "
                        f"voice.gpt_sovits.{setting}; api_v2 cannot unload them: set "
                        f"{setting} to the base model's path, or give the job its own servers"
                    )
                continue
            if loaded == path and kind not in server.stale:
                continue
            url = f"{server.url}/{endpoint}"
            try:
                response = self._client.get(
                    url, params={"weights_path": path}, timeout=self._timeout
                )
            except httpx.TransportError as exc:
                reason = f"/{endpoint}: {_network_text(exc)}"
                return _mark_failed(server, reason, network=True)
            if 400 <= response.status_code < 500:
                raise GptSovitsRejected(
                    f"GPT-SoVITS {server.url} could not load voice.gpt_sovits.{setting} "
                    f"{path!r} (HTTP {response.status_code}): {error_text(response)}; the "
                    "path must exist on that server and fit its model version"
                )
            if response.status_code != 200:
                reason = f"/{endpoint}: HTTP {response.status_code}: {error_text(response)}"
                return _mark_failed(server, reason, network=False)
            server.weights[kind] = path
            server.stale.discard(kind)
            logger.info("GPT-SoVITS %s loaded %s weights %s", server.url, kind, path)
        return None

    def close(self) -> None:
        if self._owns_client:
            self._client.close()
