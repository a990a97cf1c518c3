"""Many jobs on one cluster under a concurrency limit; a failed job never stops the others."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import ray

from actors.orchestrator import run_job
from farm.batch import BatchEntry
from farm.errors import FarmError
from farm.metrics import FarmMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchResult:
    name: str
    input: str
    output: str
    status: str
    """succeeded or failed"""
    seconds: float
    job_id: str | None = None
    error: str | None = None


def run_batch(
    entries: list[BatchEntry],
    *,
    concurrency: int,
    metrics: FarmMetrics | None = None,
    on_result: Callable[[BatchResult], None] | None = None,
) -> list[BatchResult]:
    """Run every valid entry, ``concurrency`` at a time; results keep the manifest's order."""
    metrics = metrics or FarmMetrics()
    cpus = float(ray.cluster_resources().get("CPU", 1))
    # Each running job gets its share of the workers, so no job waits on another's actors.
    share = max(1, math.floor(cpus / max(1, concurrency)))

    def one(entry: BatchEntry) -> BatchResult:
        started = time.perf_counter()
        if entry.spec is None:
            return BatchResult(
                entry.name, entry.input, entry.output, "failed", 0.0, error=entry.error
            )
        spec = entry.spec
        if spec.cluster.video_workers is None:
            spec = spec.model_copy(
                update={"cluster": spec.cluster.model_copy(update={"video_workers": share})}
            )
        try:
            summary: dict[str, Any] = run_job(spec, metrics=metrics)
        except FarmError as exc:
            result = BatchResult(
                entry.name,
                entry.input,
                entry.output,
                "failed",
                time.perf_counter() - started,
                error=exc.one_line(),
            )
        except Exception as exc:  # one job's bug must not end the batch
            log.exception("%s failed", entry.name)
            result = BatchResult(
                entry.name,
                entry.input,
                entry.output,
                "failed",
                time.perf_counter() - started,
                error=f"{type(exc).__name__}: {exc}",
            )
        else:
            result = BatchResult(
                entry.name,
                entry.input,
                entry.output,
                "succeeded",
                time.perf_counter() - started,
                job_id=summary["job_id"],
            )
        if on_result is not None:
            on_result(result)
        return result

    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="batch") as pool:
        return list(pool.map(one, entries))
