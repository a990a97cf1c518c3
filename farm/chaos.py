"""Fault injection for tests and failure drills: make the first attempt at a shard hang or die.

A marker file per shard in ``marker_dir`` records that the fault was injected, so the retry (on
another actor, possibly another node) runs normally. Never set in production specs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class ChaosSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    marker_dir: Path
    hang_shard: str | None = Field(default=None, description="shard whose first try hangs")
    crash_shard: str | None = Field(
        default=None, description="shard whose first try kills its worker process"
    )
    after_frames: int = Field(default=3, ge=0, description="frames rendered before the fault")


def _first_time(chaos: ChaosSettings, shard: str, kind: str) -> bool:
    chaos.marker_dir.mkdir(parents=True, exist_ok=True)
    marker = chaos.marker_dir / f"{kind}-{shard}"
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def inject(chaos: ChaosSettings | None, shard: str, frames_done: int) -> None:
    """Called by a worker as frames complete; hangs or exits the process on the first try."""
    if chaos is None or frames_done < chaos.after_frames:
        return
    if chaos.crash_shard == shard and _first_time(chaos, shard, "crash"):
        os._exit(17)  # a hard death, like the OOM killer: no cleanup, no exception
    if chaos.hang_shard == shard and _first_time(chaos, shard, "hang"):
        while True:
            time.sleep(3600)
