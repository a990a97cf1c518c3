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
