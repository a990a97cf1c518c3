"""What arrives over HTTP: a body size limit, content sniffing of uploads, safe file names, and
input URIs confined to the operator's roots.

Nothing here trusts what the client says about a file: not its name, not its Content-Type, not
its Content-Length. Uploads are judged by their bytes, names are rebuilt from a safe alphabet,
and a path a client names is checked lexically against the allowed roots before the filesystem
is touched, then again after symbolic links are followed.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Literal, NamedTuple

from deploy.errors import ApiRefused

AsgiScope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[AsgiScope, Receive, Send], Awaitable[None]]

MediaKind = Literal["video", "image", "audio", "consent"]
CONSENT_MAX_BYTES = 1 << 20
SHOWN_CHARS = 200
"""The most characters of client input an error message repeats."""
_HEAD_BYTES = 4096
_TS_PACKET = 188


def _megabytes(n: int) -> str:
    return f"{n / (1 << 20):.4g} MB"


def body_limit_message(max_bytes: int) -> str:
    return (
        f"request body over the {max_bytes}-byte upload limit ({_megabytes(max_bytes)}); send a "
        "smaller file, or ask the operator to raise FARM_API_MAX_UPLOAD_MB"
    )


class _BodyTooLarge(Exception):
    """Raised into the app from ``receive`` once the body passes the limit."""


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413, whatever Content-Length claims.

    A declared Content-Length over the limit is answered at once, before any byte of the body
    is read. Otherwise the body is counted as it is received; past the limit the app's next
    ``receive`` raises, and whatever the app answers then (FastAPI turns a failed form parse
    into a 400) is replaced by the 413, if its response has not started. Without this the
    multipart parser spools any upload, however large, to temporary files.

    Args:
        app: the ASGI app under it.
        max_bytes: the largest body allowed.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return
        received = 0
        exceeded = False
        started = False  # the app's response start went out
        replaced = False  # our 413 went out instead of the app's response

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise _BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started, replaced
            if replaced:
                return  # the rest of the app's (error) response
            if message["type"] == "http.response.start" and exceeded and not started:
                replaced = True
                await self._refuse(send)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception as exc:
            # _BodyTooLarge itself, or the app's failure because of it: either way the client
            # gets the 413, unless the app had started its response before the limit was hit.
            if not exceeded:
                raise
            if not started and not replaced:
                await self._refuse(send)
            elif started and not isinstance(exc, _BodyTooLarge):
                raise

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": body_limit_message(self.max_bytes)}).encode("utf-8")
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode("ascii")),
                    (b"connection", b"close"),  # the rest of the body is not wanted
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})


def _content_length(scope: AsgiScope) -> int | None:
    """The largest Content-Length header as a number; None if absent or not a number."""
    values = [
        value for name, value in scope.get("headers", []) if name.lower() == b"content-length"
    ]
    numbers = [int(value) for value in values if value.strip().isdigit()]
    return max(numbers) if numbers else None


# ------------------------------------------------------------------------- content sniffing


def _is_mpeg_ts(head: bytes) -> bool:
    packets = min(len(head) // _TS_PACKET, 5)
    return packets >= 2 and all(head[i * _TS_PACKET] == 0x47 for i in range(packets))


def _is_mp3_frame(head: bytes) -> bool:
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version = (head[1] >> 3) & 0x3
    layer = (head[1] >> 1) & 0x3
    bitrate = head[2] >> 4
    return version != 1 and layer != 0 and bitrate != 0xF


class _Sniffed(NamedTuple):
    family: str
    """video, image, audio, text or other"""
    looks: str
    """what it looks like, in words: 'a PNG image'"""
    demuxer: str | None = None
    """the FFmpeg demuxer PyAV must use (never FFmpeg's own guess; see `_video_problem`)"""


def _sniff(head: bytes) -> _Sniffed:
    """What a file is, judged from its first bytes."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return _Sniffed("video", "an MP4/MOV (ISO media) file", "mov")
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return _Sniffed("video", "a Matroska/WebM file", "matroska")
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return _Sniffed("video", "an AVI video", "avi")
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return _Sniffed("audio", "a WAV audio file")
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return _Sniffed("image", "a WebP image")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _Sniffed("image", "a PNG image")
    if head.startswith(b"\xff\xd8\xff"):
        return _Sniffed("image", "a JPEG image")
    if head.startswith(b"BM") and len(head) >= 26:
        return _Sniffed("image", "a BMP image")
    if head.startswith(b"fLaC"):
        return _Sniffed("audio", "a FLAC audio file")
    if head.startswith(b"OggS"):
        return _Sniffed("audio", "an Ogg file")
    if head.startswith(b"ID3") or _is_mp3_frame(head):
        return _Sniffed("audio", "an MP3 audio file", "mp3")
    if _is_mpeg_ts(head):
        return _Sniffed("video", "an MPEG transport stream", "mpegts")
    for magic, label in (
        (b"%PDF", "a PDF document"),
        (b"PK\x03\x04", "a ZIP archive"),
        (b"\x1f\x8b", "a gzip archive"),
        (b"\x7fELF", "an ELF executable"),
        (b"GIF8", "a GIF image (not accepted)"),
    ):
        if head.startswith(magic):
            return _Sniffed("other", label)
    if b"\x00" not in head:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError as exc:
            # A multi-byte character cut at the end of the head is still text.
            text = head[: exc.start].decode("utf-8") if exc.start >= len(head) - 3 else ""
        if text:
            shown = text[:12] + ("…" if len(text) > 12 else "")
            return _Sniffed("text", f"text (first bytes {shown!r})")
    shown_hex = " ".join(f"{b:02x}" for b in head[:8])
    return _Sniffed("other", f"binary data of an unknown kind (first bytes {shown_hex})")


_A_KIND = {"video": "a video", "image": "an image", "audio": "audio"}
ACCEPTED = {
    "video": "an MP4, MOV, M4V, MKV, WebM, AVI or MPEG-TS video",
    "image": "a PNG, JPEG, WebP or BMP image",
    "audio": "a WAV, FLAC, Ogg or MP3 audio file",
    "consent": "a UTF-8 YAML consent record (a mapping) of at most 1 MiB",
}


def _clip(text: str, limit: int = SHOWN_CHARS) -> str:
    """Client text as an error message may repeat it: printable, and at most ``limit`` chars."""
    printable = "".join(ch if ch.isprintable() else "?" for ch in text[: limit + 1])
    return printable if len(printable) <= limit else printable[:limit] + "…"


def check_upload(path: Path, kind: MediaKind, *, field: str, filename: str) -> None:
    """Refuse an uploaded file whose content is not a usable ``kind``, by its bytes alone.

    Video, image and audio files must start with a known signature of their kind and then be
    opened by the decoder the pipeline uses (PyAV, OpenCV, soundfile). A consent record must
    be UTF-8 text of at most 1 MiB that parses as a YAML mapping. An empty file is refused.

    Args:
        path: where the upload was stored.
        kind: what the field should hold.
        field: the form field, named in the message.
        filename: the client's name for the file, named in the message (never trusted).

    Raises:
        ApiRefused: status 415, naming the field and the file, what the content looks like
            instead, and what is accepted.
    """
    shown = _clip(filename, 100) or "(no name)"

    def refuse(why: str) -> ApiRefused:
        return ApiRefused(f"{field}: {shown} {why}; send {ACCEPTED[kind]}", status=415)

    size = path.stat().st_size
    if size == 0:
        raise refuse("is empty")
    with open(path, "rb") as handle:
        head = handle.read(_HEAD_BYTES)
    if kind == "consent":
        _check_consent(path, size, head, refuse)
        return
    sniffed = _sniff(head)
    if sniffed.family != kind:
        raise refuse(f"is not {_A_KIND[kind]}: it looks like {sniffed.looks}")
    if kind == "video":
        problem = _video_problem(path, sniffed.demuxer)
    elif kind == "image":
        problem = _image_problem(path)
    elif sniffed.demuxer is not None:
        problem = _pyav_audio_problem(path, sniffed.demuxer)
    else:
        problem = _soundfile_problem(path)
    if problem:
        raise refuse(f"starts like {sniffed.looks} but {problem}")


def _check_consent(path: Path, size: int, head: bytes, refuse: Callable[[str], ApiRefused]) -> None:
    import yaml

    if size > CONSENT_MAX_BYTES:
        raise refuse(
            f"is {size} bytes, over the {CONSENT_MAX_BYTES}-byte limit of a consent record"
        )
    data = path.read_bytes()
    if b"\x00" in data:
        raise refuse(f"is not text: it looks like {_sniff(head).looks}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise refuse(f"is not UTF-8 text (invalid byte at offset {exc.start})") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        problem = _clip(str(getattr(exc, "problem", None) or exc), 80)
        raise refuse(f"is not valid YAML{at}: {problem}") from None
    if not isinstance(document, dict):
        raise refuse(f"is YAML but holds {type(document).__name__}, expected a mapping")


def _video_problem(path: Path, demuxer: str | None) -> str | None:
    """Why PyAV cannot use the file as a video, or None if it decodes a first frame.

    The demuxer is the one the signature names: left to guess, FFmpeg would also open playlists
    and concat lists, whose entries name other files and URLs.
    """
    import av
    import av.error

    try:
        with av.open(str(path), format=demuxer) as container:
            if not container.streams.video:
                return "it has no video stream"
            for _frame in container.decode(video=0):
                return None
            return "no video frame could be decoded from it (truncated?)"
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as exc:
        return f"it cannot be read as a video ({_reason(exc)}); it may be truncated or damaged"


def _image_problem(path: Path) -> str | None:
    import cv2
    import numpy as np

    data = np.fromfile(str(path), dtype=np.uint8)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        return f"it cannot be decoded ({_clip(str(exc).strip(), 120)})"
    if image is None or image.size == 0:
        return "it cannot be decoded as an image; it may be truncated or damaged"
    return None


def _pyav_audio_problem(path: Path, demuxer: str) -> str | None:
    """Why PyAV cannot read an audio stream from the file (MP3: soundfile's support varies)."""
    import av
    import av.error

    try:
        with av.open(str(path), format=demuxer) as container:
            if not container.streams.audio:
                return "it has no audio stream"
            for _frame in container.decode(audio=0):
                return None
            return "no audio could be decoded from it (truncated?)"
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as exc:
        return f"it cannot be read as audio ({_reason(exc)}); it may be truncated or damaged"


def _soundfile_problem(path: Path) -> str | None:
    """Why soundfile cannot read the file (WAV, FLAC, Ogg), or None."""
    import soundfile

    try:
        info = soundfile.info(str(path))
    except (RuntimeError, OSError, ValueError) as exc:  # LibsndfileError is a RuntimeError
        why = _clip(str(exc), 120)
        return f"it cannot be read as audio ({why}); it may be truncated or damaged"
    if info.frames <= 0:
        return "it holds no audio samples"
    return None


def _reason(error: BaseException) -> str:
    from farm.errors import plain_reason

    return _clip(plain_reason(error), 120)


# ------------------------------------------------------------------------------ file names

_UNSAFE_CHAR = re.compile(r"[^A-Za-z0-9._-]")
FILENAME_MAX_CHARS = 100
_EXTENSION_MAX_CHARS = 16


def safe_filename(name: str | None, *, default: str) -> str:
    """A name safe to create inside a directory, made from a client's file name.

    Keeps only the last path component (``/`` and ``\\`` both separate), drops control
    characters and accents, replaces anything outside ``[A-Za-z0-9._-]`` with ``_``, strips
    leading dots (no hidden files, no ``..``), and caps the length at 100 characters keeping
    the extension. Returns ``default`` when nothing is left.

    Raises:
        ValueError: ``default`` is not itself a safe name (a programming error).
    """
    if not _is_safe_name(default):
        raise ValueError(f"safe_filename: the default {default!r} is not a safe file name")
    if not name:
        return default
    last = re.split(r"[/\\]", name)[-1]
    # NFKD splits "ü" into "u" and a combining mark, which is dropped with the control chars.
    decomposed = unicodedata.normalize("NFKD", last)
    visible = "".join(ch for ch in decomposed if unicodedata.category(ch)[0] not in "CM")
    cleaned = _UNSAFE_CHAR.sub("_", visible).lstrip(".")
    if len(cleaned) > FILENAME_MAX_CHARS:
        stem, dot, extension = cleaned.rpartition(".")
        if dot and stem and len(extension) < _EXTENSION_MAX_CHARS:
            keep = FILENAME_MAX_CHARS - len(extension) - 1
            cleaned = stem[:keep] + "." + extension
        else:
            cleaned = cleaned[:FILENAME_MAX_CHARS]
    return cleaned if _is_safe_name(cleaned) else default


def _is_safe_name(name: str) -> bool:
    return (
        0 < len(name) <= FILENAME_MAX_CHARS
        and not name.startswith(".")
        and _UNSAFE_CHAR.search(name) is None
    )


# ------------------------------------------------------------------------------ input URIs

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")


def _refused(field: str, uri: str, why: str, status: int) -> ApiRefused:
    return ApiRefused(f"{field}: {_clip(uri)!r} {why}", status=status)


def _uri_path(uri: str, field: str) -> str:
    """The absolute POSIX path a ``file://`` URI or plain path names (not yet normalised)."""
    if not uri.strip():
        raise ApiRefused(
            f"{field}: empty; give a file:///absolute/path URI or an absolute path under one of "
            "the operator's input roots",
            status=422,
        )
    if "\x00" in uri:
        raise _refused(field, uri, "contains a NUL byte", 422)
    scheme = _SCHEME.match(uri)
    if scheme is None:
        path = uri
    elif scheme.group(1).lower() == "file":
        parts = urllib.parse.urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise _refused(
                field,
                uri,
                f"names host {_clip(parts.netloc, 60)!r}; file URIs must be local "
                "(file:///absolute/path)",
                422,
            )
        if parts.query or parts.fragment:
            raise _refused(
                field,
                uri,
                "has a query or fragment; percent-encode '?' and '#' in file names (%3F, %23)",
                422,
            )
        try:
            path = urllib.parse.unquote(parts.path, errors="strict")
        except UnicodeDecodeError:
            raise _refused(field, uri, "percent-decodes to bytes that are not UTF-8", 422) from None
        if "\x00" in path:
            raise _refused(field, uri, "contains a NUL byte (%00)", 422)
    else:
        raise _refused(
            field,
            uri,
            f"uses the scheme {_clip(scheme.group(1), 20)!r}; accepted are file:// "
            "URIs and absolute paths (s3:// and other object stores are not supported yet)",
            422,
        )
    if not path.startswith("/"):
        raise _refused(
            field,
            uri,
            "is a relative path; give an absolute path under one of the operator's input roots",
            422,
        )
    if ".." in path.split("/"):
        raise _refused(field, uri, "contains a '..' component; name the file directly", 422)
    return path


def _under(path: PurePosixPath, roots: Sequence[PurePosixPath]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def _real_root(root: PurePosixPath) -> PurePosixPath:
    try:
        return PurePosixPath(Path(root).resolve(strict=False))
    except (OSError, RuntimeError):  # a root in a link loop: only its lexical path counts
        return root


def resolve_input_uri(uri: str, roots: Sequence[Path], *, field: str = "input_uri") -> Path:
    """The real path of a file a client names under one of the operator's input roots.

    Order matters: the URI is checked and normalised lexically, and refused (403) if it is not
    under a root, before the filesystem is touched, so a client cannot probe for files outside
    the roots. Symbolic links are then followed, and a real path that leaves every root's real
    path is refused (403) before existence is reported, so a link inside a root cannot be used
    as a probe either. A root that is itself a symbolic link is fine.

    Args:
        uri: ``file:///abs/path`` (percent-decoded) or a plain absolute path (taken literally).
        roots: the allowed directories (``FARM_API_INPUT_ROOTS``).
        field: the request field, named in messages.

    Returns:
        The resolved path of an existing regular file.

    Raises:
        ApiRefused: 422 for an empty, relative, ``..``-bearing, NUL-bearing or other-scheme URI,
            or a file that does not exist or is not a regular file; 403 when no roots are
            configured or the path (lexically or really) is outside them.
    """
    if not roots:
        raise ApiRefused(
            f"{field}: the operator has not allowed any input roots (FARM_API_INPUT_ROOTS is "
            "empty), so no server-side file can be named; upload the file instead",
            status=403,
        )
    raw = _uri_path(uri, field)
    lexical = PurePosixPath(os.path.normpath("/" + raw.lstrip("/")))
    lexical_roots = [PurePosixPath(os.path.normpath(os.path.abspath(root))) for root in roots]
    allowed = ", ".join(_clip(str(root), 80) for root in lexical_roots[:5])
    # Resolving the operator's roots reveals nothing about the client's path; a root that is a
    # link may then be named by its real path too.
    real_roots = [_real_root(root) for root in lexical_roots]
    if not _under(lexical, [*lexical_roots, *real_roots]):
        raise _refused(field, uri, f"is not under an allowed input root ({allowed})", 403)
    try:
        real = Path(lexical).resolve(strict=False)
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
        raise _refused(field, uri, "cannot be resolved (a symbolic link loop?)", 422) from None
    if not _under(PurePosixPath(real), real_roots):
        raise _refused(
            field,
            uri,
            f"leads, through a symbolic link, outside the allowed input roots ({allowed})",
            403,
        )
    try:
        final = real.resolve(strict=True)
    except FileNotFoundError:
        raise _refused(field, uri, "does not exist", 422) from None
    except (OSError, RuntimeError) as exc:
        raise _refused(field, uri, f"cannot be read ({_reason(exc)})", 422) from None
    if not _under(PurePosixPath(final), real_roots):  # changed between the two resolves
        raise _refused(field, uri, "leads outside the allowed input roots", 403)
    if not final.is_file():
        raise _refused(field, uri, "is not a regular file (a directory?); name a file", 422)
    return final
