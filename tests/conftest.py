"""Shared fixtures: the real media beside the repository and generated clips."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
MEDIA = SHARED / "media"


def media_path(relative: str) -> Path:
    """A file under ../shared/media; fails (never skips) when it is missing."""
    path = MEDIA / relative
    if not path.exists():
        pytest.fail(
            f"test media {path} is missing: clone the steering repo's shared/ folder beside this "
            "repository (tests read ../shared/media)"
        )
    return path


@pytest.fixture(scope="session")
def media() -> Path:
    if not MEDIA.is_dir():
        pytest.fail(f"{MEDIA} is missing: shared/ must sit beside the repository")
    return MEDIA
