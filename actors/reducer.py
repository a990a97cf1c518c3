"""The reducer actor: runs `farm.pipeline.reduce.reduce_job` where the work directory is.

The fleet keeps one per node, warm for the next job (a threaded actor: jobs of a batch reduce at
once). A job uses the reducer of its own node, which wrote the ledger and so reaches the work
directory. It loads the operator's keys itself; they never travel through Ray.
"""

from __future__ import annotations

import ray

from farm.pipeline.reduce import ReduceRequest, reduce_job
from farm.pipeline.report import JobReport


class Reducer:
    def __init__(self) -> None:
        # Load the reducer's stacks now, while the job is still planning, not on its first mux.
        import farm.media.join
        import farm.provenance.audio_watermark
        import farm.provenance.manifest  # noqa: F401

    def reduce(self, request: ReduceRequest) -> JobReport:
        # ray.cancel sets this task's flag; reduce_job asks before each step and the rename.
        return reduce_job(request, should_stop=ray.get_runtime_context().is_canceled)
