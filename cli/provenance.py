"""`farm keys`, `farm consent` and `farm verify` (registered by cli/main.py).

Errors print one line to stderr, ``farm: error: ...`` (the prefix cli/main.py uses), and exit with
`EXIT_ERROR`. `farm verify` exits with the verdict's code: `EXIT_LABELLED`, `EXIT_UNLABELLED`,
`EXIT_TAMPERED` or `EXIT_NOT_MEDIA`; a path that does not exist is an error.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated

import typer

from cli.errors import fail
from farm.errors import FarmError

EXIT_LABELLED = 0
EXIT_UNLABELLED = 3
EXIT_TAMPERED = 4
EXIT_NOT_MEDIA = 5

keys_app = typer.Typer(help="The operator's signing keys and trust list.", no_args_is_help=True)
consent_app = typer.Typer(help="Signed consent records.", no_args_is_help=True)


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # PEM text is no file name (too long, NUL bytes)
        return False


def _read_text(path: Path, flag: str) -> str:
    if path.is_dir():
        fail(f"{flag} {path} is a directory, not a file")
    try:
        return path.read_text()
    except FileNotFoundError:
        fail(f"{flag} {path} does not exist")
    except OSError as exc:
        fail(f"{flag} {path} cannot be read: {exc.strerror or type(exc).__name__}")
    except UnicodeDecodeError:
        fail(f"{flag} {path} is not a text (PEM) file")


@keys_app.command("init")
def keys_init(
    name: Annotated[str, typer.Option(help="a label for this farm in trust lists")] = "",
) -> None:
    """Create the operator's Ed25519 key, C2PA certificate and a trust list trusting them."""
    from farm.provenance.keys import farm_home, init_keys

    home = farm_home()
    try:
        operator = init_keys(home, name=name)
    except FarmError as exc:
        fail(exc)
    typer.echo(f"operator key {operator.key_id} created in {home}")


@keys_app.command("trust")
def keys_trust(
    pubkey: Annotated[str, typer.Argument(help="a .pub PEM file, PEM text or 64 hex digits")],
    name: Annotated[str, typer.Option(help="who the key belongs to")] = "",
    ca: Annotated[
        Path | None, typer.Option(help="that operator's C2PA CA certificate (PEM)")
    ] = None,
) -> None:
    """Trust another operator's key for consent records (and their CA for C2PA)."""
    from farm.provenance.keys import farm_home, trust_key

    try:
        text = _read_text(Path(pubkey), "PUBKEY") if _is_file(pubkey) else pubkey
        ca_pem = _read_text(ca, "--ca") if ca is not None else None
        entry = trust_key(farm_home(), text, name=name, c2pa_ca_pem=ca_pem)
    except FarmError as exc:
        fail(exc)
    typer.echo(f"trusted key {entry.key_id}")


@keys_app.command("show")
def keys_show() -> None:
    """Print this farm's key id and the trusted keys."""
    from farm.provenance.keys import load_operator

    try:
        operator = load_operator()
    except FarmError as exc:
        fail(exc)
    typer.echo(f"operator key {operator.key_id}")
    for entry in operator.trust.keys:
        typer.echo(f"trusted {entry.key_id} {entry.name}")


def _parse_date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        fail(f"--expires must be a date, YYYY-MM-DD, not {text!r}")


@consent_app.command("create")
def consent_create(
    subject: Annotated[str, typer.Option(help="the person who consents")],
    scope: Annotated[str, typer.Option(help="face, voice or face,voice")],
    purpose: Annotated[str, typer.Option(help="what the double may be used for")],
    expires: Annotated[str, typer.Option(help="last valid day, YYYY-MM-DD")],
    output: Annotated[Path, typer.Option("-o", "--output", help="consent.yaml to write")],
    face: Annotated[list[Path] | None, typer.Option(help="reference face image (repeat)")] = None,
    voice: Annotated[list[Path] | None, typer.Option(help="reference voice clip (repeat)")] = None,
    authorised: Annotated[
        list[str] | None, typer.Option(help="who may make the double (default: this operator)")
    ] = None,
) -> None:
    """Write a consent record signed with this farm's operator key.

    Refused, with the flag named: an empty --subject, --purpose or --authorised, a --scope other
    than face, voice or face,voice, an --expires date that has passed, a --face or --voice file
    that is missing or unreadable.
    """
    from farm.provenance.consent import create_consent, write_consent
    from farm.provenance.keys import load_operator

    expiry = _parse_date(expires)
    try:
        record = create_consent(
            subject=subject,
            scope=[s.strip() for s in scope.split(",") if s.strip()],
            purpose=purpose,
            expires=expiry,
            face_files=face or [],
            voice_files=voice or [],
            operator=load_operator(),
            authorised=authorised or [],
        )
        write_consent(record, output)
    except FarmError as exc:
        fail(exc)
    typer.echo(f"consent {record.consent_id} for {record.subject} written to {output}")


@consent_app.command("verify")
def consent_verify(
    record_path: Annotated[Path, typer.Argument(help="consent.yaml")],
    scope: Annotated[str | None, typer.Option(help="also require this scope")] = None,
    face: Annotated[list[Path] | None, typer.Option(help="also require this image")] = None,
    voice: Annotated[list[Path] | None, typer.Option(help="also require this clip")] = None,
) -> None:
    """Check a record's signature, expiry, and optionally scope and reference media."""
    from farm.provenance.consent import check_consent
    from farm.provenance.keys import load_trust

    try:
        record = check_consent(
            record_path,
            scope={s.strip() for s in (scope or "").split(",") if s.strip()},
            face_files=face or [],
            voice_files=voice or [],
            trust=load_trust(),
        )
    except FarmError as exc:
        fail(exc)
    typer.echo(
        f"consent {record.consent_id} valid: {record.subject}, {'+'.join(record.scope)}, "
        f"until {record.expires}, signed by {record.signer_key_id}"
    )


VERIFY_EXIT_CODES = {
    "labelled": EXIT_LABELLED,
    "unlabelled": EXIT_UNLABELLED,
    "tampered": EXIT_TAMPERED,
    "not_media": EXIT_NOT_MEDIA,
}
"""`farm verify`'s exit code for each verdict (errors, such as a missing file, exit 1)."""


def verify(
    file: Annotated[Path, typer.Argument(help="a video or audio file to check")],
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON report")] = False,
) -> None:
    """Check watermarks and C2PA manifest: exit 0 labelled, 3 unlabelled, 4 tampered, 5 not media.

    \b
    Exit codes, each with a one-line explanation:
    0  labelled: the C2PA manifest verifies, or a SyncFarm watermark is found
    3  unlabelled: video or audio with no C2PA manifest and no watermark
    4  tampered: a C2PA manifest is there but no longer verifies
    5  not a media file: a directory, or an empty, text or other file
    1  error: FILE does not exist or cannot be read; an unusable trust list
    """
    from farm.provenance.keys import load_trust
    from farm.provenance.verify import Verdict, verify_file

    try:
        report = verify_file(file, load_trust())
    except FarmError as exc:
        fail(exc)
    if as_json:
        typer.echo(json.dumps(report.to_json_dict(), indent=2))
    else:
        typer.echo(f"{file}: {report.verdict.label}")
        typer.echo(f"  {report.explanation}")
        if report.verdict is not Verdict.NOT_MEDIA:
            m = report.manifest
            manifest = (
                "absent"
                if not m.present
                else f"{m.state} (valid={m.valid}, trusted={m.trusted}, tampered={m.tampered})"
            )
            typer.echo(f"  C2PA manifest: {manifest}")
            for label, reading in (("video", report.video), ("audio", report.audio)):
                if reading is None:
                    typer.echo(f"  {label} watermark: no {label} stream")
                    continue
                payload = reading.payload.hex() if reading.payload else "-"
                accuracy = "-" if reading.bit_accuracy is None else f"{reading.bit_accuracy:.3f}"
                typer.echo(
                    f"  {label} watermark: {'found' if reading.found else 'not found'}, "
                    f"payload {payload}, bit accuracy {accuracy}"
                )
            typer.echo(f"  job id: {report.job_id or '-'}")
    raise typer.Exit(code=VERIFY_EXIT_CODES[report.verdict.value])
