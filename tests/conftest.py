"""Shared fixtures: the real media beside the repository and generated clips."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
MEDIA = SHARED / "media"


def farm(
    *args: str, timeout: float = 600, env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    """Run the `farm` command line in a subprocess, as a user would (``env`` adds variables)."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )


def farm_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The `farm` command line run in this process: the same `main`, exit code, stdout and
    stderr as `farm`, without an interpreter start per case (for sweeps of inputs refused
    before any cluster starts; `farm` above runs the real process)."""
    import contextlib
    import io

    from cli.main import main

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_argv, saved_cwd = dict(os.environ), sys.argv, Path.cwd()
    code: int = 0
    try:
        os.environ.update(env or {})
        sys.argv = ["farm", *args]
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.argv = saved_argv
        os.chdir(saved_cwd)
    return subprocess.CompletedProcess(["farm", *args], code, out.getvalue(), err.getvalue())


def media_path(relative: str) -> Path:
    """A file under ../shared/media; fails (never skips) when it is missing."""
    path = MEDIA / relative
    if not path.exists():
        pytest.fail(
            f"test media {path} is missing: clone the steering repo's shared/ folder beside this "
            "repository (tests read ../shared/media)"
        )
    return path


@pytest.fixture(scope="session", autouse=True)
def session_farm_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An operator key for the whole session (every output is signed and watermarked).

    Set in os.environ so Ray workers and `farm` subprocesses started later inherit it.
    """
    from farm.provenance.keys import init_keys

    home = tmp_path_factory.mktemp("farm-home")
    # The session's own cache (ffmpeg probes), shared with every process the tests start.
    settings = {"FARM_HOME": str(home), "FARM_CACHE": str(tmp_path_factory.mktemp("farm-cache"))}
    previous = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    init_keys(home, name="test operator")
    yield home
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def media() -> Path:
    if not MEDIA.is_dir():
        pytest.fail(f"{MEDIA} is missing: shared/ must sit beside the repository")
    return MEDIA


@pytest.fixture(scope="session")
def identity_pack(tmp_path_factory: pytest.TempPathFactory, session_farm_home: Path) -> Path:
    """The GRID talker swiz3n (face and voice), consent signed by the session's operator."""
    from farm.face.identity import create_identity
    from farm.models import face_manifest

    voice = media_path(SWIZ3N_VOICE)
    root = tmp_path_factory.mktemp("identity")
    consent = swiz3n_consent(root / "consent.yaml", session_farm_home, [voice])
    create_identity(
        [media_path(SWIZ3N_FACE)], consent, root / "pack", face_manifest(None), voices=[voice]
    )
    return root / "pack"


SWIZ3N_FACE = "faces/grid_talker_swiz3n_frontal.png"
SWIZ3N_VOICE = "audio/grid_swiz3n.wav"


def swiz3n_consent(path: Path, home: Path, voice_files: list[Path]) -> Path:
    """GRID talker swiz3n's consent (face and voice) covering his photo and `voice_files`,
    signed by the operator in `home`."""
    import datetime as dt

    from farm.provenance.consent import create_consent, write_consent
    from farm.provenance.keys import load_operator

    write_consent(
        create_consent(
            subject="GRID talker swiz3n",
            scope=["face", "voice"],
            purpose="tests",
            expires=dt.date(2099, 1, 1),
            face_files=[media_path(SWIZ3N_FACE)],
            voice_files=voice_files,
            operator=load_operator(home),
        ),
        path,
    )
    return path
