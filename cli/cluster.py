"""`farm batch` and the Ray Jobs commands: `farm submit`, `status`, `logs` (and, through
`farm cancel` with a dashboard URL, stopping a Ray Job)."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from farm.errors import FarmError, SpecError

EXIT_FAILED = 1


def batch(
    manifest: Annotated[
        Path | None, typer.Argument(help="YAML or CSV manifest (or use --glob)")
    ] = None,
    glob_pattern: Annotated[
        str | None, typer.Option("--glob", help="one job per matching input")
    ] = None,
    output_dir: Annotated[
        Path | None, typer.Option(help="with --glob: where outputs go (<stem>.mp4)")
    ] = None,
    passthrough: Annotated[bool, typer.Option(help="with --glob: copy frames")] = False,
    identity: Annotated[Path | None, typer.Option(help="with --glob: identity pack")] = None,
    voice: Annotated[str, typer.Option(help="with --glob: keep | vc | tts")] = "keep",
    concurrency: Annotated[int, typer.Option(min=1, help="jobs running at once")] = 2,
    address: Annotated[str | None, typer.Option(help="join this Ray cluster")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print results as JSON")] = False,
) -> None:
    """Run many jobs; keep going past failures; exit non-zero if any job failed."""
    from farm.batch import glob_entries, read_manifest

    if (manifest is None) == (glob_pattern is None):
        raise SpecError("give a manifest file or --glob PATTERN (one of them)")
    if manifest is not None:
        entries = read_manifest(manifest)
    else:
        if output_dir is None:
            raise SpecError("--glob needs --output-dir DIR")
        defaults: dict[str, Any] = {"passthrough": passthrough, "voice": {"mode": voice}}
        if identity is not None:
            defaults = {"face": {"identity": str(identity.resolve())}, "voice": {"mode": voice}}
        output_dir.mkdir(parents=True, exist_ok=True)
        entries = glob_entries(str(glob_pattern), output_dir, defaults)

    from actors.batch import run_batch
    from actors.runtime import ray_session

    console = Console(stderr=True)
    with ray_session(address):
        results = run_batch(
            entries,
            concurrency=concurrency,
            on_result=lambda r: console.print(f"{r.name}: {r.status} ({r.input})"),
        )
    if as_json:
        print(json.dumps([r.__dict__ for r in results], indent=2))
    else:
        table = Table(title="farm batch")
        for column in ("job", "input", "output", "status", "seconds", "error"):
            table.add_column(column)
        for r in results:
            table.add_row(r.name, r.input, r.output, r.status, f"{r.seconds:.1f}", r.error or "")
        Console().print(table)
    failed = sum(1 for r in results if r.status != "succeeded")
    if failed:
        print(f"farm: error: {failed} of {len(results)} jobs failed", file=sys.stderr)
        raise typer.Exit(EXIT_FAILED)


def _client(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # connection errors come in several types
        raise FarmError(f"cannot reach the Ray Jobs API at {address}: {exc}") from None


def _job_call(address: str, job_id: str, call: Callable[[Any], Any]) -> Any:
    """One Jobs API call about ``job_id``; any failure becomes one clear line."""
    client = _client(address)
    try:
        return call(client)
    except Exception as exc:
        raise FarmError(f"no job {job_id} at {address}: {exc}") from None


def submit_entrypoint(farm_args: list[str]) -> str:
    """The command a Ray Job runs on the head: this CLI, joined to the job's own cluster."""
    if not farm_args or farm_args[0] not in {"run", "batch", "resume"}:
        raise SpecError("submit what? give `-- run ...`, `-- batch ...` or `-- resume ...`")
    args = list(farm_args)
    if "--address" not in args:
        args += ["--address", "auto"]
    return shlex.join(["python", "-m", "cli.main", *args])


def submit(
    ctx: typer.Context,
    address: Annotated[str, typer.Option(help="Ray dashboard, e.g. http://HEAD:8265")],
    submission_id: Annotated[str | None, typer.Option(help="choose the job id")] = None,
) -> None:
    """Submit `farm run|batch|resume ...` (after --) as a Ray Job and print its id."""
    entrypoint = submit_entrypoint(list(ctx.args))
    client = _client(address)
    try:
        job_id = client.submit_job(
            entrypoint=entrypoint,
            submission_id=submission_id,
            metadata={"submitted_by": "farm submit"},
        )
    except Exception as exc:
        raise FarmError(f"the Ray Jobs API refused the job: {exc}") from None
    print(job_id)


def status(
    job_id: Annotated[str, typer.Argument(help="id printed by farm submit")],
    address: Annotated[str, typer.Option(help="Ray dashboard, e.g. http://HEAD:8265")],
) -> None:
    """Print a submitted job's status (PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED)."""
    print(_job_call(address, job_id, lambda c: c.get_job_status(job_id).value))


def logs(
    job_id: Annotated[str, typer.Argument(help="id printed by farm submit")],
    address: Annotated[str, typer.Option(help="Ray dashboard, e.g. http://HEAD:8265")],
) -> None:
    """Print a submitted job's log."""
    sys.stdout.write(_job_call(address, job_id, lambda c: c.get_job_logs(job_id)))


def stop_ray_job(job_id: str, address: str) -> None:
    """Stop a submitted Ray Job (finished shards stay in its work directory)."""
    stopped = _job_call(address, job_id, lambda c: c.stop_job(job_id))
    print("stopping" if stopped else "already finished")
