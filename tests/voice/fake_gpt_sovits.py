"""A tiny stand-in for GPT-SoVITS ``api_v2.py`` on 127.0.0.1, following its documented contract.

It checks requests the way api_v2 does (dubbing.md §1): required fields, a known ``text_lang``, a
``ref_audio_path`` on its file system holding 3–10 s (48 000–160 000 samples at 16 kHz), a known
``text_split_method``; rejections are HTTP 400 with ``{"message": ..., "Exception": ...}``. On
success it returns a mono int16 WAV at 32 kHz. It speaks no words: it is for the wire contract.
"""

from __future__ import annotations

import io
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

LANGUAGES = {"auto", "en", "zh", "ja", "ko", "yue", "all_zh", "all_ja", "all_yue", "all_ko"}
SPLITS = {f"cut{k}" for k in range(6)}
OUTPUT_RATE = 32000
SECONDS_PER_CHAR = 0.06


@dataclass
class Behaviour:
    """What the fake server does; tests change it between requests."""

    fail_next: int = 0  # answer this many requests with HTTP 500 first
    drop_next: int = 0  # close this many connections without an answer first
    delay_s: float = 0.0  # sleep before answering
    garbage: bool = False  # answer 200 with a body that is not a WAV
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _reject(detail: str) -> tuple[int, bytes, str]:
    body = json.dumps({"message": "tts failed", "Exception": detail}).encode()
    return 400, body, "application/json"


def _answer(req: dict[str, Any]) -> tuple[int, bytes, str]:
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
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.7 * t)
    voice = 0.4 * np.sin(2 * np.pi * np.cumsum(f0) / OUTPUT_RATE) + 0.01 * rng.standard_normal(n)
    tail = np.zeros(int(float(req.get("fragment_interval", 0.3)) * OUTPUT_RATE))
    buf = io.BytesIO()
    sf.write(buf, np.concatenate([voice, tail]), OUTPUT_RATE, format="WAV", subtype="PCM_16")
    return 200, buf.getvalue(), "audio/wav"


class _Handler(BaseHTTPRequestHandler):
    server: FakeServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return None

    def do_POST(self) -> None:
        behaviour = self.server.behaviour
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        with behaviour.lock:
            try:
                req = json.loads(raw)
            except json.JSONDecodeError:
                req = {"_raw": raw.decode("utf-8", "replace")}
            behaviour.requests.append(req)
            drop = behaviour.drop_next > 0
            behaviour.drop_next -= int(drop)
            fail = not drop and behaviour.fail_next > 0
            behaviour.fail_next -= int(fail)
        if behaviour.delay_s:
            time.sleep(behaviour.delay_s)
        if drop:
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if self.path != "/tts":
            status, body, kind = 404, b'{"detail":"Not Found"}', "application/json"
        elif fail:
            status, body, kind = 500, b"Internal Server Error", "text/plain"
        elif behaviour.garbage:
            status, body, kind = 200, b"not a wav at all", "audio/wav"
        else:
            status, body, kind = _answer(req)
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.behaviour = Behaviour()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> FakeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)
