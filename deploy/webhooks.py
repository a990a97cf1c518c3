"""Signed job callbacks: a job's final record POSTed to the URL its submitter gave.

Each POST carries ``X-Farm-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>``, computed over
``f"{t}."`` followed by the exact body bytes under the token's webhook secret (Stripe's scheme).
The timestamp is signed too, so a receiver refuses replays of old deliveries by checking it is
recent (`verify_signature`). A receiver verifies the raw body before parsing it.

Delivery is at least once: a receiver may see the same ``X-Farm-Delivery`` id more than once
(after a timeout whose response was lost) and should treat repeats as one.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import urllib.parse
from dataclasses import dataclass

import httpx

from deploy.errors import ApiRefused
from deploy.records import WebhookDelivery
from farm.errors import SpecError

SIGNATURE_HEADER = "X-Farm-Signature"
DELIVERY_HEADER = "X-Farm-Delivery"
ATTEMPT_HEADER = "X-Farm-Attempt"
USER_AGENT = "syncfarm-webhook/1"
ERROR_MAX_CHARS = 300
URL_MAX_CHARS = 2048
RETRY_STATUSES = frozenset({408, 425, 429})
"""4xx answers that mean "try later" (plus every 5xx); any other 4xx is a refusal."""


def _digest(body: bytes, secret: str, timestamp: int) -> str:
    signed = f"{timestamp}.".encode("ascii") + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The ``X-Farm-Signature`` value for ``body`` sent at ``timestamp`` (unix seconds)."""
    return f"t={timestamp},v1={_digest(body, secret, timestamp)}"


def verify_signature(
    body: bytes, header: str, secret: str, *, now: float, tolerance_s: float = 300
) -> bool:
    """Whether ``header`` signs ``body`` under ``secret`` and is at most ``tolerance_s`` old.

    Compares in constant time. Several ``v1=`` entries are allowed (any one may match), so a
    sender can sign with an old and a new secret while a secret is rotated. False for any
    malformed header, a missing timestamp, or one outside ``now ± tolerance_s``.
    """
    if not header or len(header) > 4096:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            return False
        if key == "t":
            if timestamp is not None or not value.isdigit() or len(value) > 12:
                return False
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates or abs(now - timestamp) > tolerance_s:
        return False
    expected = _digest(body, secret, timestamp).encode("ascii")
    matched = False
    for candidate in candidates:  # no early exit: the time taken does not say which matched
        matched |= hmac.compare_digest(expected, candidate.encode("utf-8"))
    return matched


@dataclass(frozen=True)
class WebhookPolicy:
    """How hard a delivery is tried.

    Attributes:
        max_attempts: POSTs before the delivery is given up.
        base_delay_s: the wait after the first failed attempt; it doubles after each one.
        max_delay_s: the longest wait between two attempts.
        timeout_s: the connect, read and write timeout of one POST.
    """

    max_attempts: int = 6
    base_delay_s: float = 2.0
    max_delay_s: float = 300.0
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise SpecError(f"webhook max_attempts: {self.max_attempts} must be at least 1")
        for name in ("base_delay_s", "max_delay_s", "timeout_s"):
            value = getattr(self, name)
            if not value > 0:
                raise SpecError(f"webhook {name}: {value} must be a positive number of seconds")

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1 for the first POST).

        ``base * 2**(attempt - 1)``, capped at ``max_delay_s``; no jitter, so the schedule is
        the same every time (deliveries are spread by when their jobs finish).
        """
        exponent = min(max(attempt, 1) - 1, 60)  # 2.0**1024 would overflow
        return float(min(self.base_delay_s * 2.0**exponent, self.max_delay_s))

    def gives_up_after(self, attempt: int) -> bool:
        """Whether no attempt follows attempt number ``attempt``."""
        return attempt >= self.max_attempts


@dataclass(frozen=True)
class AttemptResult:
    """What one POST of a delivery came to.

    Attributes:
        status_code: the receiver's HTTP status; None when no response came.
        error: one line (≤ 300 characters) saying what went wrong; None when delivered.
        delivered: the receiver answered 2xx.
        retry: trying again later may succeed (network trouble, 408, 425, 429, 5xx).
    """

    status_code: int | None
    error: str | None
    delivered: bool
    retry: bool


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= ERROR_MAX_CHARS else line[: ERROR_MAX_CHARS - 1] + "…"


def post_webhook(
    client: httpx.Client,
    delivery: WebhookDelivery,
    secret: str,
    *,
    now: float,
    policy: WebhookPolicy,
) -> AttemptResult:
    """POST ``delivery``'s body once, signed at ``now`` (unix seconds); never raises for the
    receiver's or the network's failures.

    Redirects are not followed (a receiver that moved must be registered again, and following
    them would let a public URL bounce the POST to a private address). The response body is
    not read.
    """
    timestamp = int(now)
    attempt = delivery.attempts + 1
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: sign(delivery.body, secret, timestamp),
        DELIVERY_HEADER: str(delivery.delivery_id),
        ATTEMPT_HEADER: str(attempt),
    }
    try:
        with client.stream(
            "POST",
            delivery.url,
            content=delivery.body,
            headers=headers,
            timeout=policy.timeout_s,
            follow_redirects=False,
        ) as response:
            status = response.status_code
            location = response.headers.get("location", "")
    except httpx.TimeoutException as exc:
        return AttemptResult(
            None,
            _one_line(f"timed out after {policy.timeout_s:g} s ({type(exc).__name__})"),
            delivered=False,
            retry=True,
        )
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        return AttemptResult(
            None, _one_line(f"the webhook URL cannot be used: {exc}"), delivered=False, retry=False
        )
    except httpx.TransportError as exc:
        return AttemptResult(
            None,
            _one_line(f"{type(exc).__name__}: {exc or 'no response'}"),
            delivered=False,
            retry=True,
        )
    return _judge(status, location)


def _judge(status: int, location: str) -> AttemptResult:
    """The outcome of a response with HTTP ``status``."""
    if 200 <= status < 300:
        return AttemptResult(status, None, delivered=True, retry=False)
    if status >= 500 or status in RETRY_STATUSES:
        return AttemptResult(
            status, f"the receiver answered HTTP {status}; will retry", delivered=False, retry=True
        )
    if 300 <= status < 400:
        where = f" to {location}" if location else ""
        return AttemptResult(
            status,
            _one_line(
                f"the receiver answered HTTP {status} (a redirect{where}); webhooks do not follow "
                "redirects: register the final URL"
            ),
            delivered=False,
            retry=False,
        )
    return AttemptResult(
        status,
        f"the receiver refused the delivery with HTTP {status}; not retried",
        delivered=False,
        retry=False,
    )


def _private_kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``address`` is not a public one, or None if it is."""
    for test, kind in (
        (address.is_loopback, "a loopback"),
        (address.is_link_local, "a link-local"),
        (address.is_unspecified, "an unspecified"),
        (address.is_multicast, "a multicast"),
        (address.is_private, "a private"),
        (address.is_reserved, "a reserved"),
    ):
        if test:
            return kind
    return None


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address ``host`` spells, including the legacy IPv4 forms resolvers accept."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    # getaddrinfo (which httpx uses) also reads "2130706433", "0x7f.1" and "127.1" as IPv4
    # addresses; ipaddress does not, so check them the way the resolver reads them.
    if all(ch in "0123456789abcdefxABCDEFX." for ch in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def check_webhook_url(url: str, *, allow_private: bool) -> str:
    """Return ``url`` if a job may POST its result there, else raise.

    Only http and https URLs with a host are accepted. Unless ``allow_private``, a host that is
    ``localhost`` or an IP literal in a loopback, private, link-local, multicast, unspecified
    or reserved range is refused: a guard against making the server call its own network
    (SSRF). This checks the URL as written only: a public name that resolves to a private
    address (or is re-pointed there later, DNS rebinding) is not caught here; that needs a
    check when the connection is made, or an egress proxy.

    Raises:
        ApiRefused: 422, naming the field ``webhook_url``, what is wrong and what is accepted.
    """

    def refuse(why: str) -> ApiRefused:
        shown = url if len(url) <= 200 else url[:200] + "…"
        return ApiRefused(f"webhook_url: {shown!r} {why}", status=422)

    if len(url) > URL_MAX_CHARS:
        raise refuse(f"is {len(url)} characters long, over the {URL_MAX_CHARS}-character limit")
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise refuse("contains whitespace or control characters; percent-encode them")
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise refuse(f"is not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise refuse("is not an http:// or https:// URL")
    if not host:
        raise refuse("has no host; give a URL like https://example.com/farm-hook")
    if allow_private:
        return url
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        raise refuse(
            "points at this machine (localhost); webhooks must reach a public host, or the "
            "operator sets FARM_API_WEBHOOK_ALLOW_PRIVATE=true"
        )
    address = _ip_literal(name.split("%", 1)[0])  # an IPv6 zone id ("fe80::1%eth0")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 reaches 127.0.0.1
    kind = _private_kind(address) if address is not None else None
    if kind is not None:
        raise refuse(
            f"points at {kind} address ({address}); webhooks must reach a public host, or the "
            "operator sets FARM_API_WEBHOOK_ALLOW_PRIVATE=true"
        )
    return url
