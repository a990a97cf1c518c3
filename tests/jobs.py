"""Running whole jobs from tests, through the same `execute_job` production runs.

The quality judges (a few seconds a job) run only where a test asks for them (``judges=True``):
every other job test is about the farm, and the judges have tests of their own.
"""

from __future__ import annotations

from farm.pipeline.progress import EventSink
from farm.pipeline.report import JobReport
from farm.pipeline.runner import InProcessRunner, execute_job
from farm.spec import JobSpec, ReportSettings


def without_judges(spec: JobSpec) -> JobSpec:
    """``spec`` with ``--no-report``."""
    return spec.model_copy(update={"report": ReportSettings(judges=False)})


def run_local(
    spec: JobSpec, *, on_event: EventSink | None = None, judges: bool = False
) -> JobReport:
    """The whole job in this process (`InProcessRunner`): no Ray, the same steps."""
    chosen = spec if judges else without_judges(spec)
    return execute_job(chosen, InProcessRunner(), on_event=on_event)


def run_on_ray(
    spec: JobSpec, *, on_event: EventSink | None = None, judges: bool = False
) -> JobReport:
    """The whole job on the connected Ray cluster, through a job actor; raises its error."""
    from actors.job_actor import run_attached

    return run_attached(spec if judges else without_judges(spec), on_event)
