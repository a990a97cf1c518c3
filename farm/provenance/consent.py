"""Signed consent records: who may double whom, for what, until when, from which reference media.

A record is YAML (or JSON). Its Ed25519 signature covers the canonical JSON of every other field,
so changing any byte of the content, the expiry or a media hash breaks it. `check_consent` is the
gate every job and `farm identity create` pass before any work starts; each refusal has its own
message, checked in this order::

    missing -> unreadable -> unsigned -> untrusted signer -> bad signature
            -> created in the future -> expired -> out of scope -> reference media not covered

`create_consent` refuses what would make a record useless or misleading (an empty subject or
purpose, an unknown scope, an expiry that has passed, missing reference media), naming the
`farm consent create` flag that was wrong.

Dates: ``expires`` is the last valid day (inclusive), compared with today's UTC date; ``created``
may lie at most `CLOCK_SKEW` ahead of this machine's clock (the signer's clock may run fast).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from farm.errors import ConsentError
from farm.fsutil import sha256_file
from farm.provenance.keys import Operator, TrustList, signature_problem

Scope = Literal["face", "voice"]
SCOPES: tuple[Scope, ...] = ("face", "voice")

CLOCK_SKEW = dt.timedelta(minutes=5)
"""How far a record's ``created`` time may lie ahead of this machine's clock."""

FLAGS = {
    "subject": "--subject",
    "authorised": "--authorised",
    "scope": "--scope",
    "purpose": "--purpose",
    "expires": "--expires",
    "created": "the creation time",
    "media": "--face / --voice",
}
"""`farm consent create`'s flag for each record field, for messages about bad values."""


class MediaHash(BaseModel):
    """One reference file the consent covers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Scope
    name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ConsentRecord(BaseModel):
    """A subject's consent to be doubled, signed by a trusted operator."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    consent_id: str
    subject: str = Field(min_length=1)
    authorised: tuple[str, ...] = Field(min_length=1, description="who may make the double")
    scope: tuple[Scope, ...] = Field(min_length=1)
    purpose: str = Field(min_length=1)
    expires: dt.date = Field(description="last day the consent is valid (inclusive)")
    created: dt.datetime
    media: tuple[MediaHash, ...] = Field(min_length=1)
    signer_key_id: str | None = None
    signature: str | None = Field(default=None, description="base64 Ed25519 signature")

    @field_validator("scope")
    @classmethod
    def _unique_scope(cls, value: tuple[Scope, ...]) -> tuple[Scope, ...]:
        return tuple(s for s in SCOPES if s in value)

    def signed_bytes(self) -> bytes:
        """The canonical bytes the signature covers (everything but the signature)."""
        body = self.model_dump(mode="json", exclude={"signature"})
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    def signed_by(self, operator: Operator) -> ConsentRecord:
        unsigned = self.model_copy(update={"signer_key_id": operator.key_id, "signature": None})
        signature = operator.sign(unsigned.signed_bytes())
        return unsigned.model_copy(update={"signature": base64.b64encode(signature).decode()})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _utc(moment: dt.datetime) -> dt.datetime:
    """An aware UTC datetime (a naive one is taken as UTC)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc)


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _hash_reference(kind: str, path: Path, label: str) -> MediaHash:
    """A reference file's hash; ConsentError (starting with `label`) when it cannot be read."""
    if path.is_dir():
        raise ConsentError(f"{label} {path} is a directory, not a file")
    if not path.is_file():
        raise ConsentError(f"{label} {path} does not exist")
    try:
        digest = sha256_file(path)
    except OSError as exc:
        raise ConsentError(f"{label} {path} cannot be read: {_reason(exc)}") from None
    return MediaHash(kind=kind, name=path.name, sha256=digest)  # type: ignore[arg-type]


def _validation_message(exc: ValidationError, names: dict[str, str] | None = None) -> str:
    """A pydantic ValidationError in plain words: `names` maps a field to what the user calls it
    (`farm consent create`'s flags); without it the record's field names are used."""
    problems: list[str] = []
    fields: set[str] = set()
    for error in exc.errors():
        location = tuple(error.get("loc") or ())
        kind = str(error.get("type", ""))
        if not location:
            problems.append("it does not hold a consent record (a mapping of its fields)")
            continue
        head = str(location[0])
        if head in fields:
            continue  # the first problem of each field is enough
        fields.add(head)
        field = (names or {}).get(head) or "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in location
        ).lstrip(".")
        if kind in {"string_too_short", "too_short"}:
            problem = f"{field} must not be empty"
        elif kind == "missing":
            problem = f"{field} is missing"
        elif kind == "extra_forbidden":
            problem = f"{field} is not a consent record field"
        elif kind == "literal_error":
            problem = f"{field} must be face or voice"
        else:
            text = str(error.get("msg", "is not valid")).removeprefix("Value error, ")
            problem = f"{field} is not valid: {text[:1].lower()}{text[1:]}"
        problems.append(problem)
    return "; ".join(problems[:4]) or "the consent record is not valid"


def create_consent(
    *,
    subject: str,
    scope: Iterable[str],
    purpose: str,
    expires: dt.date,
    face_files: Sequence[Path] = (),
    voice_files: Sequence[Path] = (),
    operator: Operator,
    authorised: Sequence[str] = (),
    now: dt.datetime | None = None,
) -> ConsentRecord:
    """Hash the reference media and sign a new record with the operator's key.

    ConsentError, naming the `farm consent create` flag, for an empty subject, purpose or
    authorised party, an unknown or empty scope, an expiry before today (UTC), or reference media
    that are missing or unreadable.
    """
    clock = _utc(now or dt.datetime.now(dt.timezone.utc))
    if not subject.strip():
        raise ConsentError("--subject must not be empty: name the person who consents")
    if not purpose.strip():
        raise ConsentError("--purpose must not be empty: say what the double may be used for")
    if any(not party.strip() for party in authorised):
        raise ConsentError("--authorised must not be empty: name who may make the double")
    scopes = {s.strip() for s in scope}
    unknown = sorted(scopes - set(SCOPES))
    if unknown:
        names = ", ".join(repr(s) for s in unknown)
        raise ConsentError(f"--scope {names} is not a consent scope; use face, voice or face,voice")
    if not scopes:
        raise ConsentError("--scope must name face, voice or face,voice")
    if expires < clock.date():
        raise ConsentError(f"consent expires {expires}, which has passed; give a future --expires")
    if "face" in scopes and not face_files:
        raise ConsentError("face scope needs at least one --face reference image")
    if "voice" in scopes and not voice_files:
        raise ConsentError("voice scope needs at least one --voice reference clip")
    media = [
        _hash_reference(kind, path, f"--{kind}")
        for kind, files in (("face", face_files), ("voice", voice_files))
        for path in files
    ]
    try:
        record = ConsentRecord(
            consent_id=uuid.uuid4().hex,
            subject=subject,
            authorised=tuple(authorised) or (operator.key_id,),
            scope=tuple(s for s in SCOPES if s in scopes),
            purpose=purpose,
            expires=expires,
            created=clock.replace(microsecond=0),
            media=tuple(media),
        )
    except ValidationError as exc:
        raise ConsentError(_validation_message(exc, FLAGS)) from None
    return record.signed_by(operator)


def write_consent(record: ConsentRecord, path: Path) -> None:
    """Write the record as YAML (.yaml, .yml) or JSON; ConsentError when it cannot be written."""
    as_yaml = path.suffix.lower() in {".yaml", ".yml"}
    text = record.to_yaml() if as_yaml else record.model_dump_json(indent=2)
    try:
        path.write_text(text)
    except OSError as exc:
        raise ConsentError(f"cannot write consent record {path}: {_reason(exc)}") from None


def read_consent(path: Path) -> ConsentRecord:
    """Parse a record (no signature check); ConsentError when missing or malformed."""
    if path.is_dir():
        raise ConsentError(f"consent record {path} is a directory, not a consent file")
    if not path.is_file():
        raise ConsentError(
            f"consent missing: {path} does not exist; create one with `farm consent create`"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return ConsentRecord.model_validate(data)
    except OSError as exc:
        raise ConsentError(f"consent record {path} cannot be read: {_reason(exc)}") from None
    except UnicodeDecodeError:
        reason = "it is not UTF-8 text"
    except yaml.YAMLError as exc:
        reason = "it is not YAML or JSON: " + " ".join(str(exc).split())[:160]
    except ValidationError as exc:
        reason = _validation_message(exc)
    raise ConsentError(f"consent record {path} is unreadable or malformed: {reason}")


def verify_consent_signature(record: ConsentRecord, trust: TrustList, *, source: str) -> None:
    """Raise ConsentError unless the record is signed by a trusted key and the signature holds."""
    problem = signature_problem(
        record.signer_key_id, record.signature, record.signed_bytes(), trust
    )
    if problem == "unsigned":
        raise ConsentError(f"consent {source} is unsigned; sign it with `farm consent create`")
    if problem == "untrusted":
        raise ConsentError(
            f"consent {source} is signed by untrusted key {record.signer_key_id}; "
            "trust it with `farm keys trust PUBKEY` if you know its operator"
        )
    if problem == "bad":
        raise ConsentError(
            f"consent {source} has a bad signature from key {record.signer_key_id}: "
            "the record was altered after signing"
        )


def check_consent(
    consent_path: Path,
    *,
    scope: set[str],
    face_files: Sequence[Path] = (),
    voice_files: Sequence[Path] = (),
    media_hashes: Sequence[tuple[str, str, str]] = (),
    trust: TrustList,
    today: dt.date | None = None,
    now: dt.datetime | None = None,
) -> ConsentRecord:
    """The gate before any work: return the record, or raise ConsentError naming the reason.

    Reference media are given as files (hashed here) or as ``(kind, name, sha256)`` triples
    recorded earlier, e.g. by an identity pack that keeps only aligned crops of its photos.
    ``now`` is the clock the record's ``created`` time is checked against (default: this
    machine's); ``today`` the day its expiry is checked against (default: now's UTC date).
    """
    record = read_consent(consent_path)
    verify_consent_signature(record, trust, source=str(consent_path))
    clock = _utc(now or dt.datetime.now(dt.timezone.utc))
    created = _utc(record.created)
    if created - clock > CLOCK_SKEW:
        minutes = int(CLOCK_SKEW.total_seconds() // 60)
        raise ConsentError(
            f"consent {record.consent_id} for {record.subject} was created in the future: "
            f"{created:%Y-%m-%d %H:%M:%S} UTC is more than {minutes} minutes after this machine's "
            f"clock ({clock:%Y-%m-%d %H:%M:%S} UTC); check the signing machine's clock and sign "
            "a new record"
        )
    day = today or clock.date()
    if record.expires < day:
        raise ConsentError(
            f"consent {record.consent_id} for {record.subject} expired on {record.expires} "
            f"(today is {day}); ask the subject for a new record"
        )
    missing_scope = sorted(set(scope) - set(record.scope))
    if missing_scope:
        raise ConsentError(
            f"consent {record.consent_id} for {record.subject} is out of scope: the job needs "
            f"{', '.join(missing_scope)} but the record covers only {', '.join(record.scope)}"
        )
    covered = {(m.kind, m.sha256) for m in record.media}
    wanted = list(media_hashes)
    for kind, files in (("face", face_files), ("voice", voice_files)):
        for path in files:
            reference = _hash_reference(kind, path, f"reference {kind} file")
            wanted.append((kind, reference.name, reference.sha256))
    for kind, name, digest in wanted:
        if (kind, digest) not in covered:
            raise ConsentError(
                f"consent {record.consent_id} does not cover reference {kind} {name}: "
                "its sha256 matches no media hash in the record (file changed or not consented)"
            )
    return record
