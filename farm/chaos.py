"""Fault injection for tests and failure drills: make the first attempt at a unit hang, die or fail.

Units are named by their key (``"shard 00003"``, ``"sentence 2"``). A marker file per unit and
fault in ``marker_dir`` records that the fault was injected, so the retry (on another actor,
possibly another node) runs normally. Never set in production specs.
"""

from __future__ import annotations

import os
import time

from pydantic import BaseModel, ConfigDict, Field

from farm.errors import ShardFailed
from farm.fsutil import AbsolutePath


class ChaosSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    marker_dir: AbsolutePath
    hang_unit: str | None = Field(default=None, description="unit whose first try hangs")
    crash_unit: str | None = Field(
        default=None, description="unit whose first try kills its worker process"
    )
    fail_unit: str | None = Field(
        default=None, description="unit whose every try fails with a non-retryable error"
    )
    after_frames: int = Field(default=3, ge=0, description="frames rendered before the fault")


def _first_time(chaos: ChaosSettings, unit: str, kind: str) -> bool:
    chaos.marker_dir.mkdir(parents=True, exist_ok=True)
    marker = chaos.marker_dir / f"{kind}-{unit.replace(' ', '-')}"
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def inject(chaos: ChaosSettings | None, unit: str, frames_done: int) -> None:
    """Called by a worker as a unit progresses; hangs, exits or fails on the first try."""
    if chaos is None or frames_done < chaos.after_frames:
        return
    if chaos.fail_unit == unit:
        _first_time(chaos, unit, "fail")
        raise ShardFailed(f"{unit}: injected failure (chaos.fail_unit)", retryable=False)
    if chaos.crash_unit == unit and _first_time(chaos, unit, "crash"):
        os._exit(17)  # a hard death, like the OOM killer: no cleanup, no exception
    if chaos.hang_unit == unit and _first_time(chaos, unit, "hang"):
        while True:
            time.sleep(3600)
