"""A tiny stand-in for GPT-SoVITS ``api_v2.py`` on 127.0.0.1, following its documented contract.

``POST /tts`` checks requests the way api_v2 does (dubbing.md §1): required fields, a known
``text_lang``, a ``ref_audio_path`` on its file system holding 3–10 s (48 000–160 000 samples at
16 kHz), a known ``text_split_method``; rejections are HTTP 400 with ``{"message": ...,
"Exception": ...}``. On success it returns a mono int16 WAV at 32 kHz: a vibrato buzz with the
server's own weights, a steady tone at `voice_pitch` once weights were loaded, so a test can hear
which weights made a take. It speaks no words: it is for the wire contract.

``GET /set_gpt_weights`` and ``/set_sovits_weights`` load an existing file's path (400 otherwise),
``GET /control`` without ``command`` is api_v2's 400, ``command=restart`` restarts it (dropping the
connection, as api_v2's ``execv`` does) and ``exit`` stops it. Tests can also make it answer 500,
drop connections, be slow, be sick (503 to everything), die after K sentences and restart, which
forgets the loaded weights, on the same port.
"""

from __future__ import annotations

import io
import json
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import soundfile as sf

LANGUAGES = {"auto", "en", "zh", "ja", "ko", "yue", "all_zh", "all_ja", "all_yue", "all_ko"}
SPLITS = {f"cut{k}" for k in range(6)}
OUTPUT_RATE = 32000
SECONDS_PER_CHAR = 0.06


def voice_pitch(gpt: str | None, sovits: str | None) -> float | None:
    """The tone (Hz) a take has with these weights loaded (by file name, so a test's temporary
    directory does not change it); None: the server's own weights (a buzz around 120 Hz)."""
    if gpt is None and sovits is None:
        return None
    names = f"{Path(gpt).name if gpt else ''}|{Path(sovits).name if sovits else ''}"
    return 160.0 + 40.0 * (zlib.crc32(names.encode()) % 8)


@dataclass
class Behaviour:
    """What the fake server does; tests change it between requests."""

    fail_next: int = 0  # answer this many /tts requests with HTTP 500 first
    drop_next: int = 0  # close this many /tts connections without an answer first
    delay_s: float = 0.0  # sleep before answering /tts
    garbage: bool = False  # answer /tts 200 with a body that is not a WAV
    sick: bool = False  # answer every request, health checks too, with HTTP 503
    die_after: int | None = None  # stop listening once this many /tts were answered
    requests: list[dict[str, Any]] = field(default_factory=list)  # /tts bodies
    calls: list[str] = field(default_factory=list)  # "GET /path?query" or "POST /tts", in order
    gpt_weights: str | None = None  # loaded weights (a restart forgets them)
    sovits_weights: str | None = None
    answered: int = 0  # /tts answered with audio
    lock: threading.Lock = field(default_factory=threading.Lock)

    def weight_loads(self) -> list[str]:
        return [c for c in self.calls if "/set_" in c and "_weights" in c]

    def health_checks(self) -> int:
        return sum(c == "GET /control" for c in self.calls)


def _json(status: int, message: str, detail: str = "") -> tuple[int, bytes, str]:
    body: dict[str, str] = {"message": message}
    if detail:
        body["Exception"] = detail
    return status, json.dumps(body).encode(), "application/json"


def _reject(detail: str) -> tuple[int, bytes, str]:
    return _json(400, "tts failed", detail)


def _answer(req: dict[str, Any], pitch: float | None) -> tuple[int, bytes, str]:
    for name in ("text", "text_lang", "ref_audio_path", "prompt_lang"):
        if not req.get(name):
            return _reject(f"{name} is required")
    if str(req["text_lang"]).lower() not in LANGUAGES:
        return _reject(f"text_lang: {req['text_lang']} is not supported in version v2")
    if str(req["prompt_lang"]).lower() not in LANGUAGES:
        return _reject(f"prompt_lang: {req['prompt_lang']} is not supported in version v2")
    if req.get("text_split_method", "cut5") not in SPLITS:
        return _reject(f"text_split_method:{req['text_split_method']} is not supported")
    if req.get("media_type", "wav") != "wav" or req.get("streaming_mode", False):
        return _reject("this fake serves non-streaming wav only")
    ref = Path(str(req["ref_audio_path"]))
    try:
        info = sf.info(str(ref))
    except (OSError, RuntimeError):
        return _reject(f"ref_audio_path {ref} cannot be read")
    samples_16k = info.frames * 16000 / info.samplerate
    if not 48000 <= samples_16k <= 160000:
        return _reject("参考音频在3~10秒范围外，请更换！")
    n = int(len(str(req["text"])) * SECONDS_PER_CHAR * OUTPUT_RATE)
    seed = int(req.get("seed", -1))
    rng = np.random.default_rng(seed if seed >= 0 else None)
    t = np.arange(n) / OUTPUT_RATE
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.7 * t) if pitch is None else np.full(n, pitch)
    voice = 0.4 * np.sin(2 * np.pi * np.cumsum(f0) / OUTPUT_RATE) + 0.01 * rng.standard_normal(n)
    tail = np.zeros(int(float(req.get("fragment_interval", 0.3)) * OUTPUT_RATE))
    buf = io.BytesIO()
    sf.write(buf, np.concatenate([voice, tail]), OUTPUT_RATE, format="WAV", subtype="PCM_16")
    return 200, buf.getvalue(), "audio/wav"


class _Handler(BaseHTTPRequestHandler):
    server: _Http

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return None

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _drop(self) -> None:
        self.close_connection = True
        self.connection.shutdown(2)

    def do_GET(self) -> None:
        fake = self.server.fake
        behaviour = fake.behaviour
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        with behaviour.lock:
            behaviour.calls.append(f"GET {self.path}")
            sick = behaviour.sick
        if sick:
            self._send(503, b"Service Unavailable", "text/plain")
        elif parts.path == "/control":
            command = query.get("command")
            if command is None:
                self._send(*_json(400, "command is required"))
            elif command in ("restart", "exit"):
                self._drop()  # api_v2 replaces or ends its process without answering
                target = fake.restart if command == "restart" else fake.die
                threading.Thread(target=target, daemon=True).start()
        elif parts.path in ("/set_gpt_weights", "/set_sovits_weights"):
            kind = "gpt" if "gpt" in parts.path else "sovits"
            path = query.get("weights_path", "")
            if not path:
                self._send(*_json(400, f"{kind} weight path is required"))
            elif not Path(path).is_file():
                detail = f"[Errno 2] No such file or directory: '{path}'"
                self._send(*_json(400, f"change {kind} weight failed", detail))
            else:
                with behaviour.lock:
                    setattr(behaviour, f"{kind}_weights", path)
                self._send(*_json(200, "success"))
        else:
            self._send(404, b'{"detail":"Not Found"}', "application/json")

    def do_POST(self) -> None:
        fake = self.server.fake
        behaviour = fake.behaviour
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        with behaviour.lock:
            behaviour.calls.append(f"POST {self.path}")
            try:
                req = json.loads(raw)
            except json.JSONDecodeError:
                req = {"_raw": raw.decode("utf-8", "replace")}
            behaviour.requests.append(req)
            drop = behaviour.drop_next > 0
            behaviour.drop_next -= int(drop)
            fail = not drop and behaviour.fail_next > 0
            behaviour.fail_next -= int(fail)
            pitch = voice_pitch(behaviour.gpt_weights, behaviour.sovits_weights)
        if behaviour.delay_s:
            time.sleep(behaviour.delay_s)
        if drop:
            self._drop()
            return
        if behaviour.sick:
            status, body, kind = 503, b"Service Unavailable", "text/plain"
        elif self.path != "/tts":
            status, body, kind = 404, b'{"detail":"Not Found"}', "application/json"
        elif fail:
            status, body, kind = 500, b"Internal Server Error", "text/plain"
        elif behaviour.garbage:
            status, body, kind = 200, b"not a wav at all", "audio/wav"
        else:
            status, body, kind = _answer(req, pitch)
        if status == 200:
            with behaviour.lock:
                behaviour.answered += 1
                dies = behaviour.die_after is not None and behaviour.answered >= behaviour.die_after
            if dies:
                fake.die()  # before answering, so every later connection is refused
        self._send(status, body, kind)


class _Http(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # a restart binds the same port again at once

    def __init__(self, fake: FakeServer, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.fake = fake


class FakeServer:
    """One fake api_v2 process on a fixed port; it can die and restart on that port."""

    def __init__(self) -> None:
        self.behaviour = Behaviour()
        self._life = threading.Lock()
        self._http: _Http | None = _Http(self, 0)
        self.port = self._http.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self._http is not None

    def start(self) -> FakeServer:
        with self._life:
            if self._http is None:
                self._http = _Http(self, self.port)
            http = self._http
            self._thread = threading.Thread(
                target=http.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
            )
            self._thread.start()
        return self

    def die(self) -> None:
        """Stop listening: connections are refused until `restart`."""
        with self._life:
            http, self._http = self._http, None
        if http is not None:
            http.shutdown()
            http.server_close()

    def restart(self) -> FakeServer:
        """Come back on the same port with the server's own weights, as a new process would."""
        self.die()
        with self.behaviour.lock:
            self.behaviour.gpt_weights = self.behaviour.sovits_weights = None
            self.behaviour.die_after = None
            self.behaviour.answered = 0
        return self.start()

    def stop(self) -> None:
        self.die()
        if self._thread is not None:
            self._thread.join(timeout=5)
