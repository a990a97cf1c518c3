"""Per-stage wall-clock accounting (what the benchmark prints; never asserted on in tests)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class StageTimer:
    """Accumulates seconds and call counts per named stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)

    def add(self, stage: str, seconds: float, calls: int = 1) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
        self.calls[stage] = self.calls.get(stage, 0) + calls

    def merge(self, other: StageTimer) -> None:
        for stage, seconds in other.seconds.items():
            self.add(stage, seconds, other.calls.get(stage, 0))

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()
