"""The API's edges: bearer tokens and rate limits, upload limits and sniffing, file names and
input URIs, and signed webhooks (against a real HTTP server on 127.0.0.1).

Fast and offline: the media are generated here (a 0.5 s mp4 from the bundled ffmpeg, a WAV,
a PNG), and the only network is loopback.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import pickle
import re
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import soundfile
from fastapi import FastAPI, UploadFile
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy.auth import (
    PEPPER_BYTES,
    RateLimiter,
    _publish_pepper,
    create_token,
    load_pepper,
    parse_bearer,
    secret_matches,
    webhook_secret,
)
from deploy.errors import ApiRefused, TooManyRequests
from deploy.records import WebhookDelivery, utc_now
from deploy.uploads import (
    BodyLimitMiddleware,
    MediaKind,
    check_upload,
    resolve_input_uri,
    safe_filename,
)
from deploy.webhooks import (
    USER_AGENT,
    WebhookPolicy,
    check_webhook_url,
    post_webhook,
    sign,
    verify_signature,
)
from farm.errors import SpecError, StorageError

REPO = Path(__file__).resolve().parents[2]
PEPPER = b"p" * 32


# ----------------------------------------------------------------------------------- tokens


def test_a_new_token_parses_and_verifies() -> None:
    new = create_token("render-bot.prod", ["read", "submit"], PEPPER)
    assert re.fullmatch(r"farm_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", new.token)
    parsed = parse_bearer(f"Bearer {new.token}")
    assert parsed is not None
    token_id, secret = parsed
    assert token_id == new.record.token_id
    assert new.token.endswith(secret)
    assert secret not in new.record.model_dump_json()  # only the hash is stored
    assert new.record.scopes == ("submit", "read")  # canonical order
    assert secret_matches(new.record, secret, PEPPER)
    assert new.record.created_at.tzinfo is not None


def test_a_wrong_secret_or_pepper_does_not_verify() -> None:
    new = create_token("ci", ["read"], PEPPER)
    parsed = parse_bearer(f"Bearer {new.token}")
    assert parsed is not None
    _, secret = parsed
    other = create_token("ci", ["read"], PEPPER)
    other_parsed = parse_bearer(f"Bearer {other.token}")
    assert other_parsed is not None
    assert not secret_matches(new.record, other_parsed[1], PEPPER)
    assert not secret_matches(new.record, secret[:-1] + ("A" if secret[-1] != "A" else "B"), PEPPER)
    assert not secret_matches(new.record, secret, b"q" * 32)


def test_the_bearer_scheme_is_case_insensitive() -> None:
    new = create_token("ci", ["read"], PEPPER)
    assert parse_bearer(f"bEaReR   {new.token} ") == parse_bearer(f"Bearer {new.token}")


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic farm_0123456789ab_" + "s" * 43,
        "Bearer farm_0123456789ab_" + "s" * 43 + " extra",
        "Bearer token_0123456789ab_" + "s" * 43,
        "Bearer FARM_0123456789ab_" + "s" * 43,
        "Bearer farm_0123456789AB_" + "s" * 43,  # ids are lower-case hex
        "Bearer farm_0123456789a_" + "s" * 43,  # 11 characters
        "Bearer farm_0123456789ab",
        "Bearer farm_0123456789ab_",
        "Bearer farm_0123456789ab_short",
        "Bearer farm_0123456789ab_" + "s" * 42 + "!",
        "Bearer farm_0123456789ab_" + "s" * 600,
        "Bearerfarm_0123456789ab_" + "s" * 43,
    ],
)
def test_malformed_bearer_headers_are_none(header: str | None) -> None:
    assert parse_bearer(header) is None


def test_the_webhook_secret_is_derived_and_per_token() -> None:
    new = create_token("hooks", ["submit"], PEPPER)
    assert webhook_secret(new.record, PEPPER) == new.webhook_secret
    assert webhook_secret(new.record, PEPPER) == webhook_secret(new.record, PEPPER)
    assert webhook_secret(new.record, b"q" * 32) != new.webhook_secret
    other = create_token("hooks", ["submit"], PEPPER)
    assert other.webhook_secret != new.webhook_secret
    assert new.webhook_secret != new.record.secret_hash


@pytest.mark.parametrize(
    ("name", "scopes", "said"),
    [
        ("", ["read"], "1 to 64 characters"),
        ("has space", ["read"], "'has space'"),
        ("x" * 65, ["read"], "65 characters"),
        ("ok", [], "at least one of submit, read, admin"),
        ("ok", ["read", "root"], "'root' is not a scope; the scopes are submit, read, admin"),
        ("ok", "read,admin", "'read,admin' is not a scope"),
    ],
)
def test_bad_token_names_and_scopes_are_spec_errors(
    name: str, scopes: list[str], said: str
) -> None:
    with pytest.raises(SpecError, match=re.escape(said)):
        create_token(name, scopes, PEPPER)


# ----------------------------------------------------------------------------------- pepper


def test_the_pepper_file_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    first = load_pepper(tmp_path, environ={})
    path = tmp_path / "api" / "pepper"
    assert len(first) == PEPPER_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_pepper(tmp_path, environ={}) == first
    assert sorted(p.name for p in path.parent.iterdir()) == ["pepper"]  # no temp files left


def test_a_second_publisher_does_not_clobber_the_pepper(tmp_path: Path) -> None:
    path = tmp_path / "api" / "pepper"
    _publish_pepper(path)
    before = path.read_bytes()
    _publish_pepper(path)  # loses the link race: must leave the first pepper in place
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["pepper"]


def test_threads_creating_the_pepper_at_once_agree(tmp_path: Path) -> None:
    for round_ in range(10):
        home = tmp_path / f"home{round_}"
        barrier = threading.Barrier(8)

        def load(home: Path = home, barrier: threading.Barrier = barrier) -> bytes:
            barrier.wait()
            return load_pepper(home, environ={})

        with ThreadPoolExecutor(8) as pool:
            peppers = set(pool.map(lambda _: load(), range(8)))
        assert len(peppers) == 1
        assert peppers == {(home / "api" / "pepper").read_bytes()}


def test_processes_creating_the_pepper_at_once_agree(tmp_path: Path) -> None:
    go = tmp_path / "go"
    script = (
        "import sys, time, pathlib\n"
        "from deploy.auth import load_pepper\n"
        "go = pathlib.Path(sys.argv[1])\n"
        "while not go.exists(): time.sleep(0.001)\n"
        "print(load_pepper(pathlib.Path(sys.argv[2]), environ={}).hex())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "FARM_API_PEPPER"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(go), str(tmp_path / "home")],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    time.sleep(0.4)  # let them all import and wait on the flag
    go.touch()
    outputs = {proc.communicate(timeout=30)[0].strip() for proc in procs}
    assert all(proc.returncode == 0 for proc in procs)
    assert outputs == {(tmp_path / "home" / "api" / "pepper").read_bytes().hex()}


def test_the_pepper_from_the_environment(tmp_path: Path) -> None:
    assert load_pepper(tmp_path, environ={"FARM_API_PEPPER": "x" * 16}) == b"x" * 16
    assert not (tmp_path / "api").exists()
    with pytest.raises(SpecError, match=r"FARM_API_PEPPER is 5 characters long.*at least 16"):
        load_pepper(tmp_path, environ={"FARM_API_PEPPER": "short"})


def test_a_damaged_pepper_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "pepper").write_bytes(b"12345")
    with pytest.raises(SpecError, match="holds 5 bytes, expected 32"):
        load_pepper(tmp_path, environ={})


def test_an_unwritable_home_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "api").write_text("a file where the directory should be")
    with pytest.raises(StorageError, match="cannot be created or read"):
        load_pepper(tmp_path, environ={})


# ------------------------------------------------------------------------------ rate limits


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_rate_limiter_allows_a_burst_then_refills() -> None:
    clock = FakeClock()
    limiter = RateLimiter(60, burst=3, clock=clock)
    for _ in range(3):
        limiter.check("0123456789ab")
    with pytest.raises(TooManyRequests) as refused:
        limiter.check("0123456789ab")
    assert refused.value.status == 429
    assert refused.value.retry_after_s == pytest.approx(1.0)
    assert "rate limit of 60 requests a minute for token 0123…; retry after 1.0 s" in str(
        refused.value
    )
    limiter.check("ffffffffffff")  # another key has its own bucket
    clock.now += 0.5
    with pytest.raises(TooManyRequests) as again:
        limiter.check("0123456789ab")
    assert again.value.retry_after_s == pytest.approx(0.5)
    clock.now += 0.5
    limiter.check("0123456789ab")  # one request refilled
    with pytest.raises(TooManyRequests):
        limiter.check("0123456789ab")


def test_the_default_burst_is_a_minute_of_requests() -> None:
    clock = FakeClock()
    limiter = RateLimiter(120, clock=clock)
    for _ in range(120):
        limiter.check("k")
    with pytest.raises(TooManyRequests) as refused:
        limiter.check("k")
    assert refused.value.retry_after_s == pytest.approx(0.5)


def test_zero_per_minute_is_unlimited() -> None:
    limiter = RateLimiter(0, clock=FakeClock())
    for _ in range(10_000):
        limiter.check("k")
    assert limiter.keys_tracked == 0


def test_idle_keys_are_forgotten_and_memory_is_bounded() -> None:
    clock = FakeClock()
    limiter = RateLimiter(60, burst=2, clock=clock, max_keys=50)
    for i in range(40):
        limiter.check(f"key{i}")
    assert limiter.keys_tracked == 40
    clock.now += 2.0  # burst / rate: every bucket is full again
    limiter.check("fresh")
    assert limiter.keys_tracked == 1
    for i in range(500):
        limiter.check(f"flood{i}")
    assert limiter.keys_tracked == 50


def test_the_rate_limiter_is_thread_safe() -> None:
    limiter = RateLimiter(60, burst=500, clock=FakeClock())  # a frozen clock: no refill

    def hammer(_: int) -> int:
        allowed = 0
        for _ in range(200):
            try:
                limiter.check("shared")
                allowed += 1
            except TooManyRequests:
                pass
        return allowed

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(hammer, range(8))) == 500


def test_bad_rate_limits_are_spec_errors() -> None:
    with pytest.raises(SpecError, match="negative"):
        RateLimiter(-1)
    with pytest.raises(SpecError, match="burst"):
        RateLimiter(10, burst=0)


def test_api_errors_pickle_with_their_fields() -> None:
    error = pickle.loads(pickle.dumps(TooManyRequests("slow down", retry_after_s=2.5)))
    assert (str(error), error.status, error.retry_after_s) == ("slow down", 429, 2.5)
    refused = pickle.loads(pickle.dumps(ApiRefused("no", status=415)))
    assert refused.status == 415


# ------------------------------------------------------------------------------ body limits

LIMIT = 4000


def upload_app(out_dir: Path, calls: list[str]) -> FastAPI:
    """A tiny app whose endpoint stores each upload, under the body limit."""
    app = FastAPI()

    @app.post("/upload")
    async def upload(file: UploadFile) -> dict[str, int]:
        calls.append(file.filename or "")
        data = await file.read()
        (out_dir / safe_filename(file.filename, default="upload")).write_bytes(data)
        return {"bytes": len(data)}

    app.add_middleware(BodyLimitMiddleware, max_bytes=LIMIT)
    return app


def multipart(size: int, boundary: str = "XyZ") -> tuple[bytes, dict[str, str]]:
    body = (
        (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="clip.mp4"\r\n'
            "Content-Type: video/mp4\r\n\r\n"
        ).encode()
        + b"v" * size
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@pytest.fixture
def upload_client(tmp_path: Path) -> Iterator[tuple[TestClient, Path, list[str]]]:
    out = tmp_path / "stored"
    out.mkdir()
    calls: list[str] = []
    with TestClient(upload_app(out, calls)) as client:
        yield client, out, calls


def assert_refused_413(response: Any, out: Path, calls: list[str]) -> None:
    """``response`` is the TestClient's (an httpx2 response under starlette 1.x)."""
    assert response.status_code == 413, response.text
    detail = response.json()["detail"]
    assert detail.startswith(f"request body over the {LIMIT}-byte upload limit (")
    assert "MB" in detail
    assert calls == []
    assert list(out.iterdir()) == []


def test_a_body_under_the_limit_is_stored(
    upload_client: tuple[TestClient, Path, list[str]],
) -> None:
    client, out, _ = upload_client
    body, headers = multipart(1000)
    response = client.post("/upload", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"bytes": 1000}
    assert (out / "clip.mp4").read_bytes() == b"v" * 1000


def test_a_true_content_length_over_the_limit_is_413(
    upload_client: tuple[TestClient, Path, list[str]],
) -> None:
    client, out, calls = upload_client
    body, headers = multipart(LIMIT)
    assert_refused_413(client.post("/upload", content=body, headers=headers), out, calls)


def test_a_lying_content_length_is_counted(
    upload_client: tuple[TestClient, Path, list[str]],
) -> None:
    client, out, calls = upload_client
    body, headers = multipart(3 * LIMIT)
    response = client.post("/upload", content=body, headers={**headers, "Content-Length": "100"})
    assert_refused_413(response, out, calls)


def test_a_chunked_body_without_content_length_is_counted(
    upload_client: tuple[TestClient, Path, list[str]],
) -> None:
    client, out, calls = upload_client
    body, headers = multipart(3 * LIMIT)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 500):
            yield body[start : start + 500]

    assert_refused_413(client.post("/upload", content=chunks(), headers=headers), out, calls)


@pytest.mark.parametrize(("declared", "pulls"), [(None, LIMIT // 100 + 1), (10_100, 0)])
def test_the_middleware_stops_reading_at_the_limit(
    tmp_path: Path, declared: int | None, pulls: int
) -> None:
    """At the ASGI level: 100 chunks of 100 bytes arrive; reading stops just past the limit,
    or never starts when the declared Content-Length is over it."""
    calls: list[str] = []
    app = upload_app(tmp_path, calls)
    body, headers = multipart(10_000)
    pieces = [body[i : i + 100] for i in range(0, len(body), 100)]
    pulled = 0
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        if pulled > len(pieces):
            await asyncio.sleep(3600)  # a client that never finishes
        return {"type": "http.request", "body": pieces[pulled - 1], "more_body": True}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/upload",
        "raw_path": b"/upload",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", headers["Content-Type"].encode())]
        + ([(b"content-length", str(declared).encode())] if declared else []),
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    asyncio.run(asyncio.wait_for(app(scope, receive, send), timeout=10))
    assert pulled == pulls
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["detail"].startswith("request body over the 4000-byte")
    assert calls == []
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------- content sniffing


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 0.5 s 64x64 H.264 mp4, a 0.2 s WAV, a 32x24 PNG and a 0.2 s MP3, made here."""
    import imageio_ffmpeg

    root = tmp_path_factory.mktemp("media")
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    mp4, mp3 = root / "clip.mp4", root / "voice.mp3"
    lavfi = ["-f", "lavfi", "-i", "testsrc2=size=64x64:rate=10", "-t", "0.5"]
    subprocess.run(
        [ffmpeg, "-v", "error", "-y", *lavfi, "-pix_fmt", "yuv420p", "-c:v", "libx264", str(mp4)],
        check=True,
    )
    subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=0.2",
            "-c:a",
            "libmp3lame",
            str(mp3),
        ],
        check=True,
    )
    wav = root / "voice.wav"
    soundfile.write(wav, np.sin(np.linspace(0, 300, 3200)).astype(np.float32), 16000)
    png = root / "face.png"
    ok, encoded = cv2.imencode(".png", np.full((24, 32, 3), 128, dtype=np.uint8))
    assert ok
    png.write_bytes(encoded.tobytes())
    playlist = root / "playlist.mp4"  # FFmpeg, left to guess, would fetch what it names
    playlist.write_text("#EXTM3U\n#EXTINF:1,\nhttp://127.0.0.1:9/segment.ts\n")
    return {"mp4": mp4, "wav": wav, "png": png, "mp3": mp3, "m3u8": playlist}


@pytest.mark.parametrize(
    ("name", "kind"), [("mp4", "video"), ("png", "image"), ("wav", "audio"), ("mp3", "audio")]
)
def test_real_media_are_accepted(media: dict[str, Path], name: str, kind: MediaKind) -> None:
    check_upload(media[name], kind, field=kind, filename=f"x.{name}")


def refusal(path: Path, kind: MediaKind, filename: str = "clip.mp4") -> str:
    with pytest.raises(ApiRefused) as refused:
        check_upload(path, kind, field=kind, filename=filename)
    assert refused.value.status == 415
    return str(refused.value)


def test_text_named_mp4_is_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_text("hello world, this is not a video\n")
    message = refusal(path, "video")
    assert message.startswith(
        "video: clip.mp4 is not a video: it looks like text (first bytes 'hello world,…')"
    )
    assert "send an MP4" in message


def test_a_truncated_mp4_is_refused_by_the_decoder(media: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "cut.mp4"
    path.write_bytes(media["mp4"].read_bytes()[:64])
    assert path.read_bytes()[4:8] == b"ftyp"  # the signature passes; PyAV must fail
    message = refusal(path, "video", "cut.mp4")
    assert "video: cut.mp4 starts like an MP4/MOV (ISO media) file but it cannot be read" in message


@pytest.mark.parametrize(
    ("name", "kind", "looks"),
    [
        ("png", "video", "a PNG image"),
        ("mp4", "image", "an MP4/MOV (ISO media) file"),
        ("wav", "image", "a WAV audio file"),
        ("png", "audio", "a PNG image"),
        ("mp4", "audio", "an MP4/MOV (ISO media) file"),
        ("m3u8", "video", "text (first bytes '#EXTM3U\\n#EXT…')"),
    ],
)
def test_the_wrong_kind_is_named(
    media: dict[str, Path], name: str, kind: MediaKind, looks: str
) -> None:
    assert f"it looks like {looks}" in refusal(media[name], kind, f"f.{name}")


@pytest.mark.parametrize("kind", ["video", "image", "audio", "consent"])
def test_an_empty_file_is_refused(tmp_path: Path, kind: MediaKind) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert "is empty" in refusal(path, kind, "x.bin")


def test_binary_garbage_is_described_by_its_bytes(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(bytes(range(256)) * 4)
    assert "binary data of an unknown kind (first bytes 00 01 02" in refusal(path, "image")


def test_a_truncated_png_and_an_empty_wav_are_refused(
    media: dict[str, Path], tmp_path: Path
) -> None:
    png = tmp_path / "cut.png"
    png.write_bytes(media["png"].read_bytes()[:40])
    assert "starts like a PNG image but it cannot be decoded" in refusal(png, "image")
    wav = tmp_path / "silent.wav"
    soundfile.write(wav, np.zeros(0, dtype=np.float32), 16000)
    assert "starts like a WAV audio file but it holds no audio samples" in refusal(wav, "audio")


def test_a_consent_record_is_a_yaml_mapping(tmp_path: Path) -> None:
    good = tmp_path / "consent.yaml"
    good.write_text("subject: Ada\nconsent_id: c-1\nuses: [faceswap]\n", encoding="utf-8")
    check_upload(good, "consent", field="consent", filename="consent.yaml")


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"- a\n- b\n", "holds list, expected a mapping"),
        (b"just text", "holds str, expected a mapping"),
        (b"subject: [unclosed\n", "is not valid YAML"),
        (b"subject: A\x00da\n", "is not text"),
        (b"subject: \xff\xfe\n", "is not UTF-8 text (invalid byte at offset 9)"),
        (b"a: " + b"x" * (1 << 20), "over the 1048576-byte limit"),
    ],
)
def test_bad_consent_records_are_refused(tmp_path: Path, content: bytes, said: str) -> None:
    path = tmp_path / "consent.yaml"
    path.write_bytes(content)
    message = refusal(path, "consent", "consent.yaml")
    assert message.startswith("consent: consent.yaml ")
    assert said in message


def test_a_hostile_filename_is_clipped_in_the_message(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_text("text")
    message = refusal(path, "video", "\x1b[31m" + "a" * 5000)
    assert "\x1b" not in message
    assert len(message) < 400


# ------------------------------------------------------------------------------ file names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("clip.mp4", "clip.mp4"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("C:\\Users\\ada\\face.png", "face.png"),
        ("..", "upload"),
        (".", "upload"),
        ("", "upload"),
        (None, "upload"),
        ("dir/", "upload"),
        (".bashrc", "bashrc"),
        ("...mp4", "mp4"),
        ("a\x00b\nc.mp4", "abc.mp4"),
        ("my clip (1).mp4", "my_clip__1_.mp4"),
        ("Zoë Ñuñez.wav", "Zoe_Nunez.wav"),
        ("视频.mp4", "__.mp4"),
    ],
)
def test_safe_filename_examples(name: str | None, expected: str) -> None:
    assert safe_filename(name, default="upload") == expected


def test_a_long_name_keeps_its_extension() -> None:
    result = safe_filename("x" * 300 + ".mp4", default="upload")
    assert len(result) == 100
    assert result.endswith("x.mp4")
    assert safe_filename("y" * 300, default="upload") == "y" * 100


def test_an_unsafe_default_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="default"):
        safe_filename("x", default="../x")


@pytest.fixture(scope="module")
def name_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("names")


@settings(max_examples=300, deadline=None)
@given(name=st.one_of(st.none(), st.text(), st.text(alphabet="./\\\x00 .a%~", max_size=20)))
def test_any_name_becomes_a_direct_child(name_dir: Path, name: str | None) -> None:
    result = safe_filename(name, default="upload.bin")
    assert result not in ("", ".", "..")
    assert 0 < len(result) <= 100
    target = name_dir / result
    assert target.resolve().parent == name_dir.resolve()
    target.touch()  # the name can really be created
    target.unlink()


# ------------------------------------------------------------------------------ input URIs


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, Path]:
    """``root`` (allowed) with files and links out, ``outside`` with a secret, ``linkroot``
    a symbolic link to ``root``."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "a.mp4").write_bytes(b"a")
    (root / "sub" / "b.mp4").write_bytes(b"b")
    (root / "my clip.mp4").write_bytes(b"c")
    (outside / "secret.txt").write_text("secret")
    (root / "link_out").symlink_to(outside / "secret.txt")
    (root / "dir_out").symlink_to(outside)
    (root / "dangling_out").symlink_to(outside / "missing.txt")
    (root / "link_in").symlink_to(root / "sub" / "b.mp4")
    (tmp_path / "linkroot").symlink_to(root)
    return {"root": root, "outside": outside, "linkroot": tmp_path / "linkroot", "tmp": tmp_path}


def test_files_under_a_root_resolve(roots: dict[str, Path]) -> None:
    root = roots["root"]
    allowed = [root]
    assert resolve_input_uri(str(root / "a.mp4"), allowed) == root / "a.mp4"
    assert resolve_input_uri(f"file://{root}/sub/b.mp4", allowed) == root / "sub" / "b.mp4"
    assert resolve_input_uri(f"file://{root}/my%20clip.mp4", allowed) == root / "my clip.mp4"
    assert resolve_input_uri(f"file://localhost{root}/a.mp4", allowed) == root / "a.mp4"
    assert resolve_input_uri(f"{root}//./sub/b.mp4", allowed) == root / "sub" / "b.mp4"
    assert resolve_input_uri(str(root / "link_in"), allowed) == root / "sub" / "b.mp4"


def test_a_symlinked_root_is_allowed_inside_its_real_path(roots: dict[str, Path]) -> None:
    linkroot, root = roots["linkroot"], roots["root"]
    assert resolve_input_uri(f"{linkroot}/a.mp4", [linkroot]) == root / "a.mp4"
    assert resolve_input_uri(f"{root}/a.mp4", [linkroot]) == root / "a.mp4"  # its real path
    refused = refusal_of(f"{linkroot}/link_out", [linkroot])
    assert refused.status == 403


def refusal_of(uri: str, allowed: list[Path]) -> ApiRefused:
    with pytest.raises(ApiRefused) as refused:
        resolve_input_uri(uri, allowed)
    return refused.value


@pytest.mark.parametrize(
    ("uri", "said"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("a.mp4", "relative path"),
        ("../a.mp4", "relative path"),
        ("s3://bucket/a.mp4", "scheme 's3'; accepted are file:// URIs and absolute paths"),
        ("https://example.com/a.mp4", "scheme 'https'"),
        ("file://evil.example/etc/passwd", "names host 'evil.example'"),
        ("file:///x.mp4?y", "query or fragment"),
        ("{root}/../outside/secret.txt", "'..' component"),
        ("{root}/sub/../../outside/secret.txt", "'..' component"),
        ("file://{root}/%2e%2e/outside/secret.txt", "'..' component"),
        ("file://{root}/%2E%2E/outside/secret.txt", "'..' component"),
        ("file:///root/../etc/passwd", "'..' component"),
        ("{root}/a.mp4\x00.txt", "NUL byte"),
        ("file://{root}/a.mp4%00.txt", "NUL byte"),
        ("file://{root}/%ff.mp4", "not UTF-8"),
        ("{root}/missing.mp4", "does not exist"),
        ("{root}/sub", "not a regular file"),
        ("file://{root}/sub/", "not a regular file"),
    ],
)
def test_bad_input_uris_are_422(roots: dict[str, Path], uri: str, said: str) -> None:
    refused = refusal_of(uri.format(root=roots["root"]), [roots["root"]])
    assert refused.status == 422, str(refused)
    assert str(refused).startswith("input_uri: ")
    assert said in str(refused)


@pytest.mark.parametrize(
    ("uri", "said"),
    [
        ("/etc/passwd", "not under an allowed input root"),
        ("file:///etc/passwd", "not under an allowed input root"),
        ("/etc/no-such-file", "not under an allowed input root"),  # not probed: same answer
        ("{tmp}/outside/secret.txt", "not under an allowed input root"),
        ("{tmp}/root-sibling/a.mp4", "not under an allowed input root"),
        ("{root}/link_out", "through a symbolic link, outside the allowed input roots"),
        ("{root}/dir_out/secret.txt", "through a symbolic link"),
        ("{root}/dangling_out", "through a symbolic link"),  # not "does not exist"
        ("{root}/%2e%2e/outside/secret.txt", "does not exist"),  # a plain path is literal
    ],
)
def test_paths_outside_the_roots_are_403(roots: dict[str, Path], uri: str, said: str) -> None:
    refused = refusal_of(uri.format(root=roots["root"], tmp=roots["tmp"]), [roots["root"]])
    assert said in str(refused)
    assert refused.status == (422 if said == "does not exist" else 403)
    assert "secret" not in str(refused).replace("secret.txt", "")  # the file is never read


def test_no_roots_means_no_server_side_files(roots: dict[str, Path]) -> None:
    refused = refusal_of(str(roots["root"] / "a.mp4"), [])
    assert refused.status == 403
    assert "has not allowed any input roots (FARM_API_INPUT_ROOTS" in str(refused)


def test_a_huge_uri_is_clipped_in_the_message(roots: dict[str, Path]) -> None:
    message = str(refusal_of("/" + "x" * 10_000, [roots["root"]]))
    assert len(message) < 500


# -------------------------------------------------------------------------------- webhooks

SECRET = "whsec-test"


def test_signatures_verify_and_refuse_tampering() -> None:
    body = b'{"job_id": "j1", "state": "done"}'
    header = sign(body, SECRET, 1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify_signature(body, header, SECRET, now=1_700_000_100)
    assert not verify_signature(body + b" ", header, SECRET, now=1_700_000_100)
    assert not verify_signature(body, header, "other", now=1_700_000_100)
    assert not verify_signature(body, header, SECRET, now=1_700_000_301)  # stale: a replay
    assert not verify_signature(body, header, SECRET, now=1_699_999_000)  # from the future
    assert verify_signature(body, header, SECRET, now=1_700_000_900, tolerance_s=1000)
    rotated = header + ",v1=" + "0" * 64
    assert verify_signature(body, rotated, SECRET, now=1_700_000_000)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        "v1=abc",
        "t=1700000000",
        "t=abc,v1=00",
        "t=-5,v1=00",
        "t=1700000000,t=1700000000,v1=00",
        "t=1700000000;v1=00",
        "t=1700000000,v1=" + "é" * 64,
    ],
)
def test_malformed_signature_headers_are_false(header: str) -> None:
    assert not verify_signature(b"{}", header, SECRET, now=1_700_000_000)


def test_the_retry_schedule_is_exponential_and_capped() -> None:
    policy = WebhookPolicy()
    assert [policy.delay_after(n) for n in range(1, 10)] == [2.0 * 2**k for k in range(8)] + [300]
    assert policy.delay_after(10_000) == 300.0
    assert policy.gives_up_after(6) and not policy.gives_up_after(5)
    with pytest.raises(SpecError, match="max_attempts"):
        WebhookPolicy(max_attempts=0)
    with pytest.raises(SpecError, match="timeout_s"):
        WebhookPolicy(timeout_s=0)


class Receiver:
    """An HTTP server on 127.0.0.1 answering with scripted statuses, recording each request."""

    def __init__(self, statuses: list[int], *, delay_s: float = 0.0) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append((self.path, dict(self.headers.items()), body))
                time.sleep(delay_s)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/moved")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def delivery(url: str, attempts: int = 0) -> WebhookDelivery:
    return WebhookDelivery(
        delivery_id=42,
        job_id="j1",
        url=url,
        body=b'{"job_id": "j1", "state": "done"}',
        attempts=attempts,
        next_attempt_at=utc_now(),
    )


POLICY = WebhookPolicy(timeout_s=2.0)


def run_until_done(url: str, post: Callable[[WebhookDelivery], Any], limit: int = 6) -> list[Any]:
    results = []
    for attempts in range(limit):
        result = post(delivery(url, attempts))
        results.append(result)
        if not result.retry:
            break
    return results


def test_a_delivery_is_retried_through_500s_and_signed_each_time() -> None:
    now = time.time()
    with Receiver([500, 500, 200]) as receiver, httpx.Client() as client:
        results = run_until_done(
            receiver.url,
            lambda d: post_webhook(client, d, SECRET, now=now, policy=POLICY),
        )
    assert [(r.status_code, r.delivered, r.retry) for r in results] == [
        (500, False, True),
        (500, False, True),
        (200, True, False),
    ]
    assert results[0].error == "the receiver answered HTTP 500; will retry"
    assert results[2].error is None
    assert len(receiver.requests) == 3
    for attempt, (path, headers, body) in enumerate(receiver.requests, start=1):
        assert path == "/hook"
        assert body == delivery(receiver.url).body
        assert headers["Content-Type"] == "application/json"
        assert headers["User-Agent"] == USER_AGENT
        assert headers["X-Farm-Delivery"] == "42"
        assert headers["X-Farm-Attempt"] == str(attempt)
        assert verify_signature(body, headers["X-Farm-Signature"], SECRET, now=time.time())
        assert not verify_signature(body, headers["X-Farm-Signature"], "x", now=time.time())


def test_a_410_is_a_refusal_and_not_retried() -> None:
    with Receiver([410]) as receiver, httpx.Client() as client:
        result = post_webhook(
            client, delivery(receiver.url), SECRET, now=time.time(), policy=POLICY
        )
    assert (result.status_code, result.delivered, result.retry) == (410, False, False)
    assert result.error == "the receiver refused the delivery with HTTP 410; not retried"
    assert len(receiver.requests) == 1


@pytest.mark.parametrize(
    ("status", "retry"),
    [(408, True), (425, True), (429, True), (503, True), (400, False), (404, False)],
)
def test_which_statuses_are_retried(status: int, retry: bool) -> None:
    with Receiver([status]) as receiver, httpx.Client() as client:
        result = post_webhook(
            client, delivery(receiver.url), SECRET, now=time.time(), policy=POLICY
        )
    assert (result.status_code, result.delivered, result.retry) == (status, False, retry)


def test_redirects_are_not_followed() -> None:
    with Receiver([302]) as receiver, httpx.Client(follow_redirects=True) as client:
        result = post_webhook(
            client, delivery(receiver.url), SECRET, now=time.time(), policy=POLICY
        )
    assert (result.status_code, result.delivered, result.retry) == (302, False, False)
    assert result.error is not None and "redirect to /moved" in result.error
    assert [path for path, _, _ in receiver.requests] == ["/hook"]


def test_network_failures_are_retried() -> None:
    with Receiver([]) as receiver:
        url = receiver.url  # the port is closed once the server is gone
    with httpx.Client() as client:
        refused = post_webhook(client, delivery(url), SECRET, now=time.time(), policy=POLICY)
        assert (refused.status_code, refused.delivered, refused.retry) == (None, False, True)
        assert refused.error is not None and refused.error.startswith("ConnectError")
        with Receiver([200], delay_s=1.0) as slow:
            late = post_webhook(
                client,
                delivery(slow.url),
                SECRET,
                now=time.time(),
                policy=WebhookPolicy(timeout_s=0.2),
            )
    assert (late.status_code, late.delivered, late.retry) == (None, False, True)
    assert late.error == "timed out after 0.2 s (ReadTimeout)"
    bad = post_webhook(httpx.Client(), delivery("ftp://x/y"), SECRET, now=0, policy=POLICY)
    assert (bad.delivered, bad.retry) == (False, False)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/farm-hook",
        "http://example.com:8080/x?y=1",
        "https://93.184.216.34/hook",
        "https://[2606:2800:220:1:248:1893:25c8:1946]/hook",
        "https://cafe.de/hook",
    ],
)
def test_public_webhook_urls_are_accepted(url: str) -> None:
    assert check_webhook_url(url, allow_private=False) == url


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("ftp://example.com/x", "not an http:// or https:// URL"),
        ("example.com/hook", "not an http:// or https:// URL"),
        ("https:///hook", "has no host"),
        ("http://example.com:99999/", "not a valid URL"),
        ("http://exa mple.com/", "whitespace"),
        ("http://localhost:8000/hook", "localhost"),
        ("http://LOCALHOST./hook", "localhost"),
        ("http://api.localhost/hook", "localhost"),
        ("http://127.0.0.1/hook", "a loopback address (127.0.0.1)"),
        ("http://10.1.2.3/hook", "a private address"),
        ("http://192.168.0.10/hook", "a private address"),
        ("http://172.16.0.1/hook", "a private address"),
        ("http://169.254.169.254/latest/meta-data", "a link-local address"),
        ("http://0.0.0.0/hook", "address (0.0.0.0)"),
        ("http://[::1]/hook", "a loopback address (::1)"),
        ("http://[::ffff:127.0.0.1]/hook", "a loopback address (127.0.0.1)"),
        ("http://[fe80::1%25eth0]/hook", "a link-local address"),
        ("http://[fd00::1]/hook", "a private address"),
        ("http://2130706433/hook", "a loopback address (127.0.0.1)"),
        ("http://0x7f.1/hook", "a loopback address (127.0.0.1)"),
        ("http://127.1/hook", "a loopback address (127.0.0.1)"),
        ("http://240.0.0.1/hook", "address (240.0.0.1)"),
    ],
)
def test_unsafe_webhook_urls_are_422(url: str, said: str) -> None:
    with pytest.raises(ApiRefused) as refused:
        check_webhook_url(url, allow_private=False)
    assert refused.value.status == 422
    assert str(refused.value).startswith("webhook_url: ")
    assert said in str(refused.value)


def test_private_webhooks_when_the_operator_allows_them() -> None:
    assert check_webhook_url("http://127.0.0.1:9/x", allow_private=True) == "http://127.0.0.1:9/x"
    with pytest.raises(ApiRefused, match="not an http"):
        check_webhook_url("file:///etc/passwd", allow_private=True)
