"""What every pipeline benchmark needs: an operator key of its own (outputs are always signed)."""

from __future__ import annotations

import os
from pathlib import Path


def use_bench_operator(directory: Path) -> None:
    """Point FARM_HOME at ``directory`` (inherited by Ray workers and `farm` subprocesses) and
    create a throwaway operator key there, leaving the user's own keys alone."""
    from farm.provenance.keys import init_keys

    os.environ["FARM_HOME"] = str(directory)
    init_keys(directory, name="benchmark operator")


def make_identity(work: Path, face: Path, voice: Path | None = None) -> Path:
    """A signed identity pack (consent signed by the bench operator) of one photo and voice clip."""
    import datetime as dt

    from farm.face.identity import create_identity
    from farm.models import face_manifest
    from farm.provenance.consent import create_consent, write_consent
    from farm.provenance.keys import load_operator

    voices = [voice] if voice is not None else []
    consent = work / "consent.yaml"
    write_consent(
        create_consent(
            subject=f"benchmark identity ({face.name})",
            scope=["face", "voice"] if voices else ["face"],
            purpose="SyncFarm benchmarks",
            expires=dt.date.today() + dt.timedelta(days=30),
            face_files=[face],
            voice_files=voices,
            operator=load_operator(),
        ),
        consent,
    )
    pack = work / "identity"
    create_identity([face], consent, pack, face_manifest(None), voices=voices)
    return pack
