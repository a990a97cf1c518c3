"""``farm identity``: make identity packs (a consenting person's faces, voice and consent)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.errors import fail
from farm.errors import FarmError

identity_app = typer.Typer(help="Identity packs: who may be put into a video, with their consent.")


@identity_app.callback()
def identity() -> None:
    """Identity packs: who may be put into a video, with their consent."""


@identity_app.command("create")
def create(
    face: Annotated[
        list[Path],
        typer.Option("--face", help="photo of the person (repeat for more poses)"),
    ],
    consent: Annotated[
        Path, typer.Option("--consent", help="the person's consent record (stored with its sha256)")
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="new pack directory")],
    voice: Annotated[
        list[Path] | None,
        typer.Option("--voice", help="WAV reference of the person's voice (repeatable)"),
    ] = None,
    models_dir: Annotated[
        Path | None,
        typer.Option(
            "--models-dir",
            help="models directory: with ArcFace (w600k_r50) there, its embeddings are stored",
            envvar="FARM_MODELS",
        ),
    ] = None,
) -> None:
    """Write an identity pack: aligned faces, landmarks, descriptors, voice references, consent."""
    from farm.face.identity import create_identity
    from farm.face.stack_choice import pack_embedder
    from farm.models import face_manifest
    from farm.provenance.consent import check_consent
    from farm.provenance.keys import load_trust

    try:
        # Refused before anything is written: signed, trusted, current, in scope, covering
        # exactly these photos and voice clips.
        scope = {"face", "voice"} if voice else {"face"}
        check_consent(
            consent,
            scope=scope,
            face_files=list(face),
            voice_files=list(voice or []),
            trust=load_trust(),
        )
        created = create_identity(
            list(face),
            consent,
            output,
            face_manifest(models_dir),
            voices=list(voice or []),
            embedder=pack_embedder(models_dir),
        )
    except FarmError as exc:
        fail(exc)
    for warning in created.warnings:
        typer.echo(f"warning: {warning}", err=True)
    pack = created.pack
    embedded = " with ArcFace embeddings" if pack.manifest.faces[0].arcface is not None else ""
    typer.echo(
        f"identity pack {output}: {len(pack.faces)} face(s){embedded}, {len(pack.voice_refs)} "
        f"voice reference(s), consent sha256 {pack.consent.sha256[:16]}…"
    )
