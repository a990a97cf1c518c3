"""Running whole jobs from tests, through the same `execute_job` production runs."""

from __future__ import annotations

from farm.pipeline.progress import EventSink
from farm.pipeline.report import JobReport
from farm.pipeline.runner import InProcessRunner, execute_job
from farm.spec import JobSpec


def run_local(spec: JobSpec, *, on_event: EventSink | None = None) -> JobReport:
    """The whole job in this process (`InProcessRunner`): no Ray, the same steps."""
    return execute_job(spec, InProcessRunner(), on_event=on_event)


def run_on_ray(spec: JobSpec, *, on_event: EventSink | None = None) -> JobReport:
    """The whole job on the connected Ray cluster, through a job actor; raises its error."""
    from actors.job_actor import run_attached

    return run_attached(spec, on_event)
