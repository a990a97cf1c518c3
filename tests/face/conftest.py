"""Face-stack fixtures: one identity pack and one model load per module, a few dozen real frames."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from farm.face.dlib_stack import DlibFaceStack
from farm.face.identity import IdentityPack, create_identity
from farm.models import ModelManifest, builtin_face_manifest
from tests.conftest import media_path

SOURCE_FACE = "faces/grid_talker_swiz3n_frontal.png"


def decode(relative: str, start: int = 0, stop: int = 50) -> list[np.ndarray]:
    """BGR frames ``[start, stop)`` of a clip under shared/media (PyAV)."""
    frames = []
    with av.open(str(media_path(relative))) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index >= stop:
                break
            if index >= start:
                frames.append(frame.to_ndarray(format="bgr24"))
    assert len(frames) == stop - start, f"{relative} has fewer than {stop} frames"
    return frames


@pytest.fixture(scope="session")
def manifest() -> ModelManifest:
    return builtin_face_manifest()


@pytest.fixture(scope="session")
def stack(manifest: ModelManifest) -> DlibFaceStack:
    return DlibFaceStack(manifest)


@pytest.fixture(scope="session")
def consent_file(tmp_path_factory: pytest.TempPathFactory, session_farm_home: Path) -> Path:
    """A consent record signed by the session's operator, covering the GRID talker's photo and
    voice clip."""
    import datetime as dt

    from farm.provenance.consent import create_consent, write_consent
    from farm.provenance.keys import load_operator

    record = create_consent(
        subject="GRID talker swiz3n",
        scope=["face", "voice"],
        purpose="SyncFarm test renders",
        expires=dt.date(2099, 12, 31),
        face_files=[media_path(SOURCE_FACE)],
        voice_files=[media_path("audio/grid_swiz3n.wav")],
        operator=load_operator(session_farm_home),
    )
    path = tmp_path_factory.mktemp("consent") / "consent.yaml"
    write_consent(record, path)
    return path


@pytest.fixture(scope="session")
def pack_dir(
    tmp_path_factory: pytest.TempPathFactory, manifest: ModelManifest, consent_file: Path
) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("identity") / "swiz3n"
    create_identity(
        [media_path(SOURCE_FACE)],
        consent_file,
        out,
        manifest,
        voices=[media_path("audio/grid_swiz3n.wav")],
    )
    yield out


@pytest.fixture(scope="session")
def pack(pack_dir: Path) -> IdentityPack:
    from farm.face.identity import load_identity

    return load_identity(pack_dir)
