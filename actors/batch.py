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

    def attempt(entry: BatchEntry) -> tuple[str | None, str | None]:
        """(job id, None) on success, (None, one-line reason) on failure."""
        if entry.spec is None:
            return None, entry.error
        spec = entry.spec
        if spec.cluster.video_workers is None:
            cluster = spec.cluster.model_copy(update={"video_workers": share})
            spec = spec.model_copy(update={"cluster": cluster})
        try:
            summary: dict[str, Any] = run_job(spec, metrics=metrics)
        except FarmError as exc:
            return None, exc.one_line()
        except Exception as exc:  # one job's bug must not end the batch
            log.exception("%s failed", entry.name)
            return None, f"{type(exc).__name__}: {exc}"
        return str(summary["job_id"]), None

    def one(entry: BatchEntry) -> BatchResult:
        started = time.perf_counter()
        job_id, error = attempt(entry)
        result = BatchResult(
            entry.name,
            entry.input,
            entry.output,
            "failed" if error else "succeeded",
            time.perf_counter() - started,
            job_id=job_id,
            error=error,
        )
        if on_result is not None:
            on_result(result)
        return result

    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="batch") as pool:
        return list(pool.map(one, entries))
