"""Bearer tokens, their scopes, the server's pepper, and per-token rate limits.

A token reads ``farm_<token_id>_<secret>``. The token id is public (records, logs and URLs name
it); the secret is shown once, when the token is made (`NewToken`), and only its HMAC under the
server's pepper is stored. A stolen records database therefore yields no usable token, and a
stolen database without the pepper cannot even be brute-forced offline.

Webhook signing secrets are derived from the pepper and the stored hash (`webhook_secret`), so
nothing secret is stored for them either.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from deploy.errors import TooManyRequests
from deploy.records import SCOPES, Scope, TokenRecord, utc_now
from farm.errors import SpecError, StorageError
from farm.fsutil import fsync_dir

TOKEN_PREFIX = "farm"
PEPPER_ENV = "FARM_API_PEPPER"
PEPPER_BYTES = 32
PEPPER_MIN_CHARS = 16
NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
_TOKEN_ID = re.compile(r"[0-9a-f]{12}")
# token_urlsafe(32) gives 43 characters; allow some slack for tokens made by other versions,
# but bound the length so a huge header costs nothing to refuse.
_SECRET = re.compile(r"[A-Za-z0-9_-]{16,128}")


@dataclass(frozen=True)
class NewToken:
    """A token just made: the only time its text exists in clear.

    Attributes:
        token: ``farm_<token_id>_<secret>``, for the client's ``Authorization: Bearer`` header.
        record: what is stored (the secret only as a hash).
        webhook_secret: the key that signs this token's webhooks (derivable again later).
    """

    token: str
    record: TokenRecord
    webhook_secret: str


def _hash_secret(secret: str, pepper: bytes) -> str:
    return hmac.new(pepper, secret.encode("utf-8"), hashlib.sha256).hexdigest()


def check_token_name(name: str) -> str:
    """Return ``name`` if it is a valid token name, else raise `SpecError`."""
    if not NAME_PATTERN.fullmatch(name):
        shown = name if len(name) <= 80 else name[:80] + "…"
        raise SpecError(
            f"token name {shown!r} is not valid: expected 1 to 64 characters from A-Z, a-z, "
            f"0-9, '.', '_' and '-' (found {len(name)} characters); choose a name like "
            "'render-bot.prod'"
        )
    return name


def check_scopes(scopes: Sequence[str]) -> tuple[Scope, ...]:
    """The scopes in the canonical order of `SCOPES`, each once; `SpecError` if any is unknown."""
    if isinstance(scopes, str):  # a bare "read" would otherwise become ('r', 'e', 'a', 'd')
        scopes = [scopes]
    allowed = ", ".join(SCOPES)
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown:
        raise SpecError(
            f"token scopes: {', '.join(repr(s) for s in unknown[:5])} "
            f"{'is' if len(unknown) == 1 else 'are'} not a scope; the scopes are {allowed}"
        )
    if not scopes:
        raise SpecError(f"token scopes: none given; give at least one of {allowed}")
    return tuple(scope for scope in SCOPES if scope in scopes)


def create_token(
    name: str, scopes: Sequence[str], pepper: bytes, *, now: datetime | None = None
) -> NewToken:
    """Make a new token: its clear text (shown once), its record and its webhook secret.

    Args:
        name: a label for people (1 to 64 of ``[A-Za-z0-9._-]``).
        scopes: a non-empty subset of `SCOPES`.
        pepper: the server's pepper (`load_pepper`).
        now: the creation time (timezone-aware UTC); the current time by default.

    Raises:
        SpecError: the name or a scope is not valid.
    """
    check_token_name(name)
    canonical = check_scopes(scopes)
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    record = TokenRecord(
        token_id=token_id,
        name=name,
        scopes=canonical,
        secret_hash=_hash_secret(secret, pepper),
        created_at=now or utc_now(),
    )
    return NewToken(
        token=f"{TOKEN_PREFIX}_{token_id}_{secret}",
        record=record,
        webhook_secret=webhook_secret(record, pepper),
    )


def parse_bearer(header: str | None) -> tuple[str, str] | None:
    """``(token_id, secret)`` from an ``Authorization`` header value, or None if malformed.

    The scheme is case-insensitive (RFC 7235); the token must be ``farm_<12 hex>_<secret>``.
    """
    if not header or len(header) > 512:
        return None
    parts = header.split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return None
    prefix, sep, rest = parts[1].partition("_")
    token_id, sep2, secret = rest.partition("_")  # the secret itself may contain "_"
    if prefix != TOKEN_PREFIX or not sep or not sep2:
        return None
    if not _TOKEN_ID.fullmatch(token_id) or not _SECRET.fullmatch(secret):
        return None
    return token_id, secret


def secret_matches(record: TokenRecord, secret: str, pepper: bytes) -> bool:
    """Whether ``secret`` is the record's secret, compared in constant time.

    Revocation is the caller's check (``record.revoked_at``); this only compares the hashes.
    """
    expected = record.secret_hash.encode("ascii", "replace")
    return hmac.compare_digest(_hash_secret(secret, pepper).encode("ascii"), expected)


def webhook_secret(record: TokenRecord, pepper: bytes) -> str:
    """The key that signs the webhooks of ``record``'s jobs: the same every time it is asked.

    Derived from the pepper and the stored hash, so it is never stored and a token's receivers
    can verify signatures without the server keeping another secret.
    """
    message = b"webhook:" + record.secret_hash.encode("utf-8")
    return hmac.new(pepper, message, hashlib.sha256).hexdigest()


def load_pepper(home: Path, *, environ: Mapping[str, str] | None = None) -> bytes:
    """The server's pepper: ``$FARM_API_PEPPER``, else ``home/api/pepper`` (made on first use).

    Every replica of one deployment must use the same pepper (set the variable, or put ``home``
    on storage every node mounts): tokens made under one pepper do not verify under another.
    The file is 32 random bytes, mode 0600, published with a hard link so that two processes
    that start at once end up with the same pepper (the loser of the race reads the winner's).

    Args:
        home: the farm's home directory.
        environ: the environment to read (``os.environ`` by default).

    Raises:
        SpecError: the variable is shorter than 16 characters, or the file is damaged.
        StorageError: the file cannot be created or read.
    """
    env = os.environ if environ is None else environ
    value = env.get(PEPPER_ENV)
    if value is not None:
        if len(value) < PEPPER_MIN_CHARS:
            raise SpecError(
                f"{PEPPER_ENV} is {len(value)} characters long, expected at least "
                f"{PEPPER_MIN_CHARS}; set it to a long random string, e.g. the output of "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        return value.encode("utf-8")
    path = home / "api" / "pepper"
    try:
        if not path.exists():
            _publish_pepper(path)
        return _read_pepper(path)
    except OSError as exc:
        raise StorageError(
            f"the API pepper file {path} cannot be created or read: {exc.strerror or exc}; "
            f"make {path.parent} writable by the server, or set {PEPPER_ENV}",
            path=str(path),
        ) from None


def _publish_pepper(path: Path) -> None:
    """Write a new pepper beside ``path`` and link it into place unless one is there already."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(PEPPER_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            # link() fails if the name exists: the first complete file wins, and no reader can
            # ever see a half-written pepper (unlike O_EXCL on the final name, then write).
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won; the caller reads its pepper
        else:
            fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _read_pepper(path: Path) -> bytes:
    data = path.read_bytes()
    if len(data) != PEPPER_BYTES:
        raise SpecError(
            f"the API pepper file {path} holds {len(data)} bytes, expected {PEPPER_BYTES}: it is "
            "damaged. Restore it from a backup (every token depends on it); deleting it makes a "
            "new pepper and invalidates every token issued so far"
        )
    return data


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per key (a token id): ``per_minute`` requests a minute, ``burst`` at once.

    A bucket starts full and refills continuously. A bucket idle long enough to be full again is
    forgotten (a fresh one is the same), so memory follows the keys active in the last
    ``burst / rate`` seconds; past ``max_keys`` the least recently used bucket is dropped.
    Thread-safe. ``per_minute=0`` means unlimited.

    Args:
        per_minute: the sustained rate; 0 turns the limiter off.
        burst: the bucket size (requests allowed at once); ``per_minute`` by default.
        clock: seconds on a monotonic clock (tests pass a fake one).
        max_keys: the most buckets kept.
    """

    def __init__(
        self,
        per_minute: int,
        *,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        if per_minute < 0:
            raise SpecError(
                f"rate limit: {per_minute} requests a minute is negative; use 0 for no limit"
            )
        if burst is not None and burst < 1:
            raise SpecError(f"rate limit burst: {burst} must be at least 1 request")
        if max_keys < 1:
            raise SpecError(f"rate limiter max_keys: {max_keys} must be at least 1")
        self.per_minute = per_minute
        self.burst = burst if burst is not None else max(per_minute, 1)
        self._rate_per_s = per_minute / 60.0
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def keys_tracked(self) -> int:
        """How many buckets are kept now (for metrics and tests)."""
        with self._lock:
            return len(self._buckets)

    def check(self, key: str) -> None:
        """Take one request from ``key``'s bucket.

        Raises:
            TooManyRequests: the bucket is empty; ``retry_after_s`` says when one request is
                allowed again.
        """
        if self.per_minute == 0:
            return
        with self._lock:
            now = self._clock()
            self._forget_idle(now)
            bucket = self._buckets.pop(key, None)
            if bucket is None:
                bucket = _Bucket(tokens=float(self.burst), updated=now)
            else:
                elapsed = max(0.0, now - bucket.updated)
                bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self._rate_per_s)
                bucket.updated = now
            self._buckets[key] = bucket  # most recently used goes last
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return
            retry_after_s = (1.0 - bucket.tokens) / self._rate_per_s
        shown = key if len(key) <= 8 else key[:4] + "…"
        raise TooManyRequests(
            f"rate limit of {self.per_minute} requests a minute for token {shown}; "
            f"retry after {max(retry_after_s, 0.1):.1f} s",
            retry_after_s=retry_after_s,
        )

    def _forget_idle(self, now: float) -> None:
        """Drop buckets from the least recently used end while they are full again."""
        refill_s = self.burst / self._rate_per_s
        while self._buckets:
            key, bucket = next(iter(self._buckets.items()))
            if now - bucket.updated < refill_s:
                break
            del self._buckets[key]
