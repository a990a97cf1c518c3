"""`farm jobs`, `farm watch`, `farm cancel`, and following a job from a terminal.

Jobs are job actors on a cluster (``--address``). `farm cancel` also stops a Ray Job when given
the dashboard's URL (``http://HEAD:8265``), as `farm submit` prints ids for those.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from farm.errors import FarmError

if TYPE_CHECKING:
    from farm.pipeline.report import JobReport


def follow_in_terminal(
    handle: Any, run_id: str, *, as_json: bool, metrics_port: int | None = None
) -> JobReport:
    """Draw a job's progress until it ends; Ctrl-C cancels it cleanly. Returns its report or
    raises its error."""
    import ray
    from rich.console import Console

    from actors.job_actor import follow
    from cli.progress import JobProgress
    from farm.metrics import FarmMetrics

    metrics = FarmMetrics()
    if metrics_port is not None:
        metrics.serve(metrics_port)
    console = Console(stderr=True)
    with JobProgress(console, enabled=not as_json and console.is_terminal) as progress:

        def on_event(event: dict[str, Any]) -> None:
            progress(event)
            metrics.record(event)

        try:
            outcome = follow(handle, on_event)
        except KeyboardInterrupt:
            console.print(
                f"cancelling run {run_id}: finished shards stay in its work directory "
                "(Ctrl-C again leaves at once)"
            )
            ray.get(handle.cancel.remote())
            outcome = follow(handle, on_event)
    if outcome.error is not None:
        from farm.plan.ledger import with_resume_hint

        raise with_resume_hint(outcome.error, outcome.status.work_dir)
    report = outcome.report
    if report is None:
        raise FarmError(f"run {run_id} ended without a report")
    if not as_json:
        shards = f"{report.shards} shard{'s' if report.shards != 1 else ''}"
        console.print(
            f"wrote {report.output}: {report.frames} frames in {shards}, "
            f"{report.stage_seconds.get('job_s', 0):.1f} s wall time",
            soft_wrap=True,
        )
    return report


def jobs(
    address: Annotated[str, typer.Option(help="the cluster (e.g. auto, or HEAD:6379)")],
    as_json: Annotated[bool, typer.Option("--json", help="print statuses as JSON")] = False,
) -> None:
    """List the jobs on a cluster with their state and progress."""
    from rich.console import Console
    from rich.table import Table

    from actors.job_actor import list_jobs
    from actors.runtime import ray_session

    with ray_session(address):
        statuses = list_jobs()
    if as_json:
        print(json.dumps([s.model_dump(mode="json") for s in statuses], indent=2))
        return
    table = Table(title="farm jobs")
    for column in ("run", "job", "state", "frames", "shards", "sentences", "eta", "output"):
        table.add_column(column)
    for s in statuses:
        table.add_row(
            s.run_id,
            s.job_id or "",
            s.state,
            f"{s.frames_done}/{s.frames_total}",
            f"{s.shards_done}/{s.shards_total}",
            f"{s.sentences_done}/{s.sentences_total}" if s.sentences_total else "",
            f"{s.eta_s:.0f} s" if s.eta_s else "",
            s.output,
        )
    Console().print(table)


def watch(
    job: Annotated[str, typer.Argument(help="run id (from farm run --detach) or job id")],
    address: Annotated[str, typer.Option(help="the cluster (e.g. auto, or HEAD:6379)")],
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON report")] = False,
) -> None:
    """Follow a job until it ends; exit 0 when it succeeded."""
    import ray

    from actors.job_actor import find_job
    from actors.runtime import ray_session

    with ray_session(address):
        handle = find_job(job)
        status = ray.get(handle.status.remote())
        report = follow_in_terminal(handle, status.run_id, as_json=as_json)
    if as_json:
        print(json.dumps(report.model_dump(mode="json"), indent=2))


def cancel(
    job: Annotated[str, typer.Argument(help="run id or job id (or a Ray Job id, see --address)")],
    address: Annotated[
        str, typer.Option(help="the cluster; a http:// dashboard URL stops a Ray Job instead")
    ],
) -> None:
    """Stop a job; its finished shards stay in its work directory (`farm resume` finishes it)."""
    if address.startswith(("http://", "https://")):
        from cli.cluster import stop_ray_job

        stop_ray_job(job, address)
        return
    import ray

    from actors.job_actor import find_job
    from actors.runtime import ray_session

    with ray_session(address):
        handle = find_job(job)
        status = ray.get(handle.status.remote())
        if status.finished:
            print(f"run {status.run_id} already {status.state}")
            return
        ray.get(handle.cancel.remote())
    print(f"cancelling run {status.run_id}", file=sys.stderr)
