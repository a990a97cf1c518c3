"""Signed consent records: who may double whom, for what, until when, from which reference media.

A record is YAML (or JSON). Its Ed25519 signature covers the canonical JSON of every other field,
so changing any byte of the content, the expiry or a media hash breaks it. `check_consent` is the
gate every job and `farm identity create` pass before any work starts; each refusal has its own
message, checked in this order::

    missing -> unreadable -> unsigned -> untrusted signer -> bad signature
            -> expired -> out of scope -> reference media not covered
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
from farm.provenance.keys import Operator, TrustList, verify_signature

Scope = Literal["face", "voice"]
SCOPES: tuple[Scope, ...] = ("face", "voice")


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
    """Hash the reference media and sign a new record with the operator's key."""
    scopes = set(scope)
    unknown = scopes - set(SCOPES)
    if unknown:
        raise ConsentError(f"unknown consent scope {sorted(unknown)}; use face, voice or both")
    if "face" in scopes and not face_files:
        raise ConsentError("face scope needs at least one --face reference image")
    if "voice" in scopes and not voice_files:
        raise ConsentError("voice scope needs at least one --voice reference clip")
    media: list[MediaHash] = []
    for kind, files in (("face", face_files), ("voice", voice_files)):
        for path in files:
            if not path.is_file():
                raise ConsentError(f"reference {kind} file {path} does not exist")
            media.append(MediaHash(kind=kind, name=path.name, sha256=sha256_file(path)))  # type: ignore[arg-type]
    record = ConsentRecord(
        consent_id=uuid.uuid4().hex,
        subject=subject,
        authorised=tuple(authorised) or (operator.key_id,),
        scope=tuple(s for s in SCOPES if s in scopes),
        purpose=purpose,
        expires=expires,
        created=(now or dt.datetime.now(dt.timezone.utc)).replace(microsecond=0),
        media=tuple(media),
    )
    return record.signed_by(operator)


def write_consent(record: ConsentRecord, path: Path) -> None:
    as_yaml = path.suffix.lower() in {".yaml", ".yml"}
    text = record.to_yaml() if as_yaml else record.model_dump_json(indent=2)
    path.write_text(text)


def read_consent(path: Path) -> ConsentRecord:
    """Parse a record (no signature check); ConsentError when missing or malformed."""
    if not path.is_file():
        raise ConsentError(
            f"consent missing: {path} does not exist; create one with `farm consent create`"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return ConsentRecord.model_validate(data)
    except (yaml.YAMLError, UnicodeDecodeError, ValidationError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise ConsentError(f"consent record {path} is unreadable or malformed: {reason}") from None


def verify_consent_signature(record: ConsentRecord, trust: TrustList, *, source: str) -> None:
    """Raise ConsentError unless the record is signed by a trusted key and the signature holds."""
    if not record.signature or not record.signer_key_id:
        raise ConsentError(f"consent {source} is unsigned; sign it with `farm consent create`")
    public_key = trust.public_key(record.signer_key_id)
    if public_key is None:
        raise ConsentError(
            f"consent {source} is signed by untrusted key {record.signer_key_id}; "
            "trust it with `farm keys trust PUBKEY` if you know its operator"
        )
    try:
        signature = base64.b64decode(record.signature, validate=True)
    except ValueError:
        signature = b""
    if not verify_signature(public_key, signature, record.signed_bytes()):
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
) -> ConsentRecord:
    """The gate before any work: return the record, or raise ConsentError naming the reason.

    Reference media are given as files (hashed here) or as ``(kind, name, sha256)`` triples
    recorded earlier, e.g. by an identity pack that keeps only aligned crops of its photos.
    """
    record = read_consent(consent_path)
    verify_consent_signature(record, trust, source=str(consent_path))
    day = today or dt.datetime.now(dt.timezone.utc).date()
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
            if not path.is_file():
                raise ConsentError(f"reference {kind} file {path} does not exist")
            wanted.append((kind, path.name, sha256_file(path)))
    for kind, name, digest in wanted:
        if (kind, digest) not in covered:
            raise ConsentError(
                f"consent {record.consent_id} does not cover reference {kind} {name}: "
                "its sha256 matches no media hash in the record (file changed or not consented)"
            )
    return record
