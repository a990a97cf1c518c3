"""`farm`: the command line. Commands only build a JobSpec and call one function."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from farm.errors import FarmError
from farm.spec import JobSpec, parse_spec

app = typer.Typer(
    name="farm",
    help="SyncFarm: consented audio-video doubles on a Ray render farm.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

EXIT_FAILED = 1


def _register_subcommands() -> None:
    from cli.identity import identity_app
    from cli.provenance import consent_app, keys_app, verify

    app.add_typer(identity_app, name="identity")
    app.add_typer(keys_app, name="keys")
    app.add_typer(consent_app, name="consent")
    app.command("verify")(verify)

    from cli.cluster import batch, cancel, logs, status, submit

    app.command("batch")(batch)
    app.command(
        "submit",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(submit)
    app.command("status")(status)
    app.command("logs")(logs)
    app.command("cancel")(cancel)


_register_subcommands()


def _execute(spec: JobSpec, *, as_json: bool, num_cpus: int | None) -> None:
    from farm.job import check_output_writable
    from farm.media.probe import probe

    # Fail on bad input before paying for a Ray start.
    check_output_writable(spec.output)
    probe(spec.input)

    from actors.orchestrator import run_job
    from actors.runtime import ray_session
    from cli.progress import JobProgress
    from farm.metrics import FarmMetrics

    metrics = FarmMetrics()
    if spec.metrics_port is not None:
        metrics.serve(spec.metrics_port)
    console = Console(stderr=True)
    with (
        ray_session(spec.cluster.address, num_cpus),
        JobProgress(console, enabled=not as_json and console.is_terminal) as progress,
    ):
        summary = run_job(spec, on_event=progress, metrics=metrics)
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        console.print(
            f"wrote {summary['output']} ({summary['frames']} frames, {summary['shards']} shards, "
            f"{summary['stage_seconds'].get('job_s', 0):.1f} s)"
        )


@app.command()
def run(
    input: Annotated[Path, typer.Argument(help="source video")],
    output: Annotated[Path, typer.Option("--output", "-o", help="output video (.mp4 or .mov)")],
    passthrough: Annotated[bool, typer.Option(help="copy frames unchanged (no face swap)")] = False,
    identity: Annotated[
        Path | None, typer.Option(help="identity pack directory (farm identity create)")
    ] = None,
    faces: Annotated[str, typer.Option(help="all | largest | reference")] = "all",
    reference: Annotated[Path | None, typer.Option(help="image of the face to swap")] = None,
    work_dir: Annotated[
        Path | None, typer.Option(help="keep intermediates and the ledger here (resumable)")
    ] = None,
    intermediate: Annotated[str, typer.Option(help="fast | lossless shard encoding")] = "fast",
    codec: Annotated[str, typer.Option(help="final video codec: h264 | hevc")] = "h264",
    crf: Annotated[int, typer.Option(help="final quality, 0 = lossless")] = 18,
    preset: Annotated[str, typer.Option(help="x264/x265 preset")] = "veryfast",
    max_shard_seconds: Annotated[float, typer.Option(help="longest shard")] = 10.0,
    min_shard_seconds: Annotated[float, typer.Option(help="shortest scene kept apart")] = 0.6,
    voice: Annotated[str, typer.Option(help="keep | vc | tts")] = "keep",
    tts_backend: Annotated[str, typer.Option(help="gpt-sovits | espeak (with --voice tts)")] = (
        "espeak"
    ),
    transcript: Annotated[
        Path | None, typer.Option(help="SRT/VTT/ASS subtitles or plain text of the speech")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="join this Ray cluster instead of starting one")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="video workers (default: one per CPU)")
    ] = None,
    gpus_per_worker: Annotated[float, typer.Option(help="GPUs per video worker")] = 0.0,
    shard_timeout: Annotated[float, typer.Option(help="seconds before a shard is re-run")] = 600.0,
    metrics_port: Annotated[
        int | None, typer.Option(help="serve Prometheus metrics on this port")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON summary")] = False,
) -> None:
    """Render INPUT into OUTPUT: shard at scene cuts, process on Ray, join frame-exactly."""
    data: dict[str, Any] = {
        "input": input,
        "output": output,
        "work_dir": work_dir,
        "passthrough": passthrough,
        "video": {
            "intermediate": intermediate,
            "codec": codec,
            "crf": crf,
            "preset": preset,
            "max_shard_s": max_shard_seconds,
            "min_shard_s": min_shard_seconds,
        },
        "voice": {"mode": voice, "tts_backend": tts_backend, "transcript": transcript},
        "cluster": {
            "address": address,
            "video_workers": workers,
            "gpus_per_worker": gpus_per_worker,
            "shard_timeout_s": shard_timeout,
        },
        "metrics_port": metrics_port,
    }
    if identity is not None:
        data["face"] = {"identity": identity, "faces": faces, "reference": reference}
    _execute(parse_spec(data), as_json=as_json, num_cpus=None)


@app.command()
def resume(
    work_dir: Annotated[Path, typer.Argument(help="work directory of an interrupted job")],
    address: Annotated[str | None, typer.Option(help="join this Ray cluster")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON summary")] = False,
) -> None:
    """Finish an interrupted job: reuse every finished shard, render the rest."""
    from farm.plan.ledger import Ledger

    ledger = Ledger.load(work_dir)
    data = ledger.spec
    data["work_dir"] = str(work_dir.resolve())
    if address is not None:
        data.setdefault("cluster", {})["address"] = address
    _execute(parse_spec(data), as_json=as_json, num_cpus=None)


def main() -> None:
    """Entry point: every `FarmError` becomes one line on stderr and exit code 1."""
    try:
        app()
    except FarmError as exc:
        print(f"farm: error: {exc.one_line()}", file=sys.stderr)
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        print("farm: interrupted; finished shards are kept in the work directory", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
