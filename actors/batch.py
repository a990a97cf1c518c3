"""Many jobs on one cluster under a concurrency limit; a failed job never stops the others.

Each job is its own job actor; they lease workers from the same fleet, so the batch's later jobs
get workers whose models are already loaded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import ray

from actors.job_actor import follow, submit_job
from farm.batch import BatchEntry
from farm.errors import FarmError
from farm.pipeline.preflight import preflight
from farm.pipeline.progress import Event
from farm.plan.ledger import with_resume_hint


@dataclass(frozen=True)
class BatchResult:
    name: str
    input: str
    output: str
    status: str
    """succeeded or failed"""
    seconds: float
    job_id: str | None = None
    run_id: str | None = None
    error: str | None = None


def run_batch(
    entries: list[BatchEntry],
    *,
    concurrency: int,
    on_result: Callable[[BatchResult], None] | None = None,
    on_event: Callable[[str, Event], None] | None = None,
) -> list[BatchResult]:
    """Run every valid entry, ``concurrency`` at a time; results keep the manifest's order."""
    cpus = float(ray.cluster_resources().get("CPU", 1))
    # Each running job gets its share of the workers, so no job waits on another's.
    share = max(1, math.floor(cpus / max(1, concurrency)))

    def one(entry: BatchEntry) -> BatchResult:
        started = time.perf_counter()
        job_id = run_id = error = None
        if entry.spec is None:
            error = entry.error
        else:
            spec = entry.spec
            if spec.cluster.video_workers is None:
                cluster = spec.cluster.model_copy(update={"video_workers": share})
                spec = spec.model_copy(update={"cluster": cluster})
            try:
                preflight(spec)  # a bad row fails in seconds, without a job actor
                run_id, handle = submit_job(spec)
                outcome = follow(
                    handle, (lambda e: on_event(entry.name, e)) if on_event else (lambda e: None)
                )
                ray.kill(handle)
                if outcome.error is not None:
                    hinted = with_resume_hint(outcome.error, outcome.status.work_dir)
                    error = hinted.one_line()
                elif outcome.report is not None:
                    job_id = outcome.report.job_id
            except FarmError as exc:
                error = exc.one_line()
        result = BatchResult(
            entry.name,
            entry.input,
            entry.output,
            "failed" if error else "succeeded",
            time.perf_counter() - started,
            job_id=job_id,
            run_id=run_id,
            error=error,
        )
        if on_result is not None:
            on_result(result)
        return result

    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="batch") as pool:
        return list(pool.map(one, entries))
