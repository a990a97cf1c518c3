"""Provenance fixtures: an isolated FARM_HOME with a fresh operator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from farm.provenance.keys import (
    ENV_C2PA_CERT,
    ENV_C2PA_KEY,
    ENV_HOME,
    ENV_OPERATOR_KEY,
    ENV_TRUST,
    Operator,
    init_keys,
)


@pytest.fixture
def farm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """FARM_HOME in a temporary directory; no cluster secrets leak in from the environment."""
    home = tmp_path / "farm-home"
    monkeypatch.setenv(ENV_HOME, str(home))
    for variable in (ENV_OPERATOR_KEY, ENV_C2PA_CERT, ENV_C2PA_KEY, ENV_TRUST):
        monkeypatch.delenv(variable, raising=False)
    yield home


@pytest.fixture
def operator(farm_home: Path) -> Operator:
    return init_keys(farm_home, name="test farm")
