"""`farm`: the command line. Commands only build a JobSpec, hand it to a job actor and follow it.

Heavy stacks (Ray, PyAV, the face and voice models) are imported inside the commands that need
them, so `farm --help` answers at once.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.errors import error_line
from farm.errors import Cancelled, FarmError, SpecError, record_unexpected

if TYPE_CHECKING:
    from farm.spec import JobSpec

app = typer.Typer(
    name="farm",
    help="SyncFarm: consented audio-video doubles on a Ray render farm.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130

RUN_FLAGS = {
    "input": "INPUT",
    "output": "--output",
    "work_dir": "--work-dir",
    "face.identity": "--identity",
    "face.faces": "--faces",
    "face.reference": "--reference",
    "face.backend": "--face-backend",
    "face.swapper": "--swapper",
    "face.detector": "--detector",
    "face.face_parser": "--face-parser",
    "face.enhancer": "--enhancer",
    "face.enhancer_strength": "--enhancer-strength",
    "models_dir": "--models-dir",
    "video.intermediate": "--intermediate",
    "video.codec": "--codec",
    "video.crf": "--crf",
    "video.preset": "--preset",
    "video.max_shard_s": "--max-shard-seconds",
    "video.min_shard_s": "--min-shard-seconds",
    "voice.mode": "--voice",
    "voice.tts_backend": "--tts-backend",
    "voice.revoice": "--revoice",
    "voice.separator": "--separator",
    "voice.rvc": "--rvc-model",
    "voice.rvc.generator": "--rvc-model",
    "voice.rvc.generator_sha256": "--rvc-model-sha256",
    "voice.gpt_sovits.urls": "--gpt-sovits-url",
    "voice.gpt_sovits.gpt_weights": "--gpt-weights",
    "voice.gpt_sovits.sovits_weights": "--sovits-weights",
    "voice.transcript": "--transcript",
    "cluster.address": "--address",
    "cluster.device": "--device",
    "cluster.video_workers": "--workers",
    "cluster.cpus_per_worker": "--cpus-per-worker",
    "cluster.gpus_per_worker": "--gpus-per-worker",
    "cluster.voice_workers": "--voice-workers",
    "cluster.voice_gpus_per_worker": "--voice-gpus-per-worker",
    "cluster.shard_timeout_s": "--shard-timeout",
    "cluster.connect_timeout_s": "--connect-timeout",
    "metrics_port": "--metrics-port",
    "strict": "--strict",
    "report.judges": "--no-report",
}
"""Setting paths of a JobSpec -> the `farm run` flags that set them (errors name the flag)."""


def _register_subcommands() -> None:
    from cli.identity import identity_app
    from cli.jobs import cancel, jobs, watch
    from cli.models import models_app
    from cli.provenance import consent_app, keys_app, verify

    app.add_typer(identity_app, name="identity")
    app.add_typer(models_app, name="models")
    app.add_typer(keys_app, name="keys")
    app.add_typer(consent_app, name="consent")
    app.command("verify")(verify)

    from cli.eval import evaluate

    app.command("eval")(evaluate)

    from cli.api import serve_api, tokens_app

    app.add_typer(tokens_app, name="tokens")
    app.command("serve")(serve_api)

    from cli.cluster import batch, logs, status, submit

    app.command("batch")(batch)
    app.command(
        "submit",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(submit)
    app.command("status")(status)
    app.command("logs")(logs)
    app.command("jobs")(jobs)
    app.command("watch")(watch)
    app.command("cancel")(cancel)


_register_subcommands()


def _execute(spec: JobSpec, *, as_json: bool, detach: bool = False) -> None:
    from farm.pipeline.preflight import preflight

    # Fail on bad input before paying for a Ray start (the job says its warnings itself).
    preflight(spec)
    if detach and not spec.cluster.address:
        raise SpecError(
            "--detach leaves the job on a running cluster: start one (`ray start --head`) and "
            "give its address (--address auto on one of its nodes)"
        )

    from rich.console import Console

    from actors.job_actor import submit_job
    from actors.runtime import ray_session
    from cli.jobs import follow_in_terminal

    console = Console(stderr=True)
    starting = (
        console.status(
            f"joining {spec.cluster.address}" if spec.cluster.address else "starting Ray"
        )
        if console.is_terminal
        else contextlib.nullcontext()
    )
    with contextlib.ExitStack() as session:
        with starting:  # the few seconds before the job's own events begin
            session.enter_context(
                ray_session(spec.cluster.address, connect_timeout_s=spec.cluster.connect_timeout_s)
            )
        run_id, handle = submit_job(spec, detach=detach)
        if detach:
            # Creating an actor is asynchronous: the job exists once it has answered, not
            # before (a client that exits sooner could take the creation with it).
            import ray

            ray.get(handle.status.remote(), timeout=120)
            print(run_id)
            return
        report = follow_in_terminal(handle, run_id, as_json=as_json, metrics_port=spec.metrics_port)
    if as_json:
        print(json.dumps(report.model_dump(mode="json"), indent=2))


@app.command()
def run(
    # str, not Path: a Path folds the "//" of an s3:// URL.
    input: Annotated[str, typer.Argument(help="source video (a path or s3://BUCKET/KEY)")],
    output: Annotated[
        str, typer.Option("--output", "-o", help="output video (.mp4 or .mov; path or s3://)")
    ],
    passthrough: Annotated[bool, typer.Option(help="copy frames unchanged (no face swap)")] = False,
    identity: Annotated[
        Path | None, typer.Option(help="identity pack directory (farm identity create)")
    ] = None,
    faces: Annotated[
        str | None, typer.Option(help="all | largest | reference (default: all, or reference)")
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option(help="image of the one person to swap (implies --faces reference)"),
    ] = None,
    face_backend: Annotated[
        str, typer.Option(help="auto | classic | onnx (auto: the best whose models are present)")
    ] = "auto",
    swapper: Annotated[
        str | None, typer.Option(help="inswapper_128 | simswap_256 | simswap_512 (onnx backend)")
    ] = None,
    detector: Annotated[str, typer.Option(help="auto | yunet | scrfd | dlib-hog")] = "auto",
    face_parser: Annotated[
        str | None, typer.Option(help="bisenet: mask the swap to the face's own regions")
    ] = None,
    enhancer: Annotated[
        str | None, typer.Option(help="gfpgan_1.4 | codeformer: restore the swapped face")
    ] = None,
    enhancer_strength: Annotated[float, typer.Option(help="0..1 blend of the enhancer")] = 0.8,
    models_dir: Annotated[
        Path | None,
        typer.Option(help="directory of user-supplied model files", envvar="FARM_MODELS"),
    ] = None,
    work_dir: Annotated[
        str | None,
        typer.Option(help="keep intermediates and the ledger here (resumable; path or s3://)"),
    ] = None,
    intermediate: Annotated[str, typer.Option(help="fast | lossless shard encoding")] = "fast",
    codec: Annotated[str, typer.Option(help="final video codec: h264 | hevc")] = "h264",
    crf: Annotated[int, typer.Option(help="final quality, 0 = lossless")] = 18,
    preset: Annotated[str, typer.Option(help="x264/x265 preset")] = "veryfast",
    max_shard_seconds: Annotated[float, typer.Option(help="longest shard")] = 10.0,
    min_shard_seconds: Annotated[float, typer.Option(help="shortest scene kept apart")] = 0.6,
    voice: Annotated[str, typer.Option(help="keep | vc | rvc | tts")] = "keep",
    revoice: Annotated[
        str,
        typer.Option(
            help="auto | all | swapped: re-voice only the swapped person's sentences (auto: "
            "when --reference chooses whom to swap)"
        ),
    ] = "auto",
    separator: Annotated[
        str, typer.Option(help="none | mdx (UVR-MDX-NET ONNX in --models-dir): vocals first")
    ] = "none",
    rvc_model: Annotated[
        str | None,
        typer.Option(help="with --voice rvc: the identity's RVC v2 generator (.onnx path or name)"),
    ] = None,
    rvc_model_sha256: Annotated[
        str | None, typer.Option(help="its sha256 (else from the models directory's manifest)")
    ] = None,
    gpt_sovits_url: Annotated[
        list[str] | None,
        typer.Option(help="GPT-SoVITS api_v2 server (repeat for a pool)"),
    ] = None,
    gpt_weights: Annotated[
        str | None, typer.Option(help="the identity's fine-tuned GPT weights, as the server sees")
    ] = None,
    sovits_weights: Annotated[
        str | None, typer.Option(help="the identity's fine-tuned SoVITS weights, likewise")
    ] = None,
    tts_backend: Annotated[str, typer.Option(help="gpt-sovits | espeak (with --voice tts)")] = (
        "espeak"
    ),
    transcript: Annotated[
        Path | None, typer.Option(help="SRT/VTT/ASS subtitles or plain text of the speech")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="join this Ray cluster instead of starting one")
    ] = None,
    detach: Annotated[
        bool, typer.Option(help="leave the job running on the cluster; print its run id")
    ] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | tensorrt")] = "auto",
    workers: Annotated[
        int | None, typer.Option(help="video workers (default: what the cluster holds)")
    ] = None,
    cpus_per_worker: Annotated[float, typer.Option(help="CPUs per video worker")] = 1.0,
    gpus_per_worker: Annotated[
        float, typer.Option(help="GPUs per video worker (0.25: four workers per GPU)")
    ] = 0.0,
    voice_workers: Annotated[int, typer.Option(help="sentence workers when re-voicing")] = 1,
    voice_gpus_per_worker: Annotated[float, typer.Option(help="GPUs per voice worker")] = 0.0,
    connect_timeout: Annotated[
        float, typer.Option(help="seconds to wait for --address to answer")
    ] = 30.0,
    strict: Annotated[
        bool, typer.Option(help="fail when the double did not happen (no frame swapped, ...)")
    ] = False,
    shard_timeout: Annotated[float, typer.Option(help="seconds before a shard is re-run")] = 600.0,
    report: Annotated[
        bool,
        typer.Option(
            help="judge the output independently and write OUT.mp4.report.html beside it "
            "(--no-report skips the judges; the JSON report is always written)"
        ),
    ] = True,
    metrics_port: Annotated[
        int | None, typer.Option(help="serve Prometheus metrics on this port")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON report")] = False,
) -> None:
    """Render INPUT into OUTPUT: shard at scene cuts, process on Ray, join frame-exactly."""
    from farm.spec import parse_spec

    data: dict[str, Any] = {
        "input": input,
        "output": output,
        "work_dir": work_dir,
        "models_dir": models_dir,
        "passthrough": passthrough,
        "video": {
            "intermediate": intermediate,
            "codec": codec,
            "crf": crf,
            "preset": preset,
            "max_shard_s": max_shard_seconds,
            "min_shard_s": min_shard_seconds,
        },
        "voice": {
            "mode": voice,
            "revoice": revoice,
            "tts_backend": tts_backend,
            "transcript": transcript,
            "separator": separator,
            "rvc": {
                "generator": rvc_model,
                "generator_sha256": rvc_model_sha256,
                "models_dir": models_dir,
            },
            "mdx": {"models_dir": models_dir},
            "gpt_sovits": {
                key: value
                for key, value in (
                    ("urls", tuple(gpt_sovits_url or ())),
                    ("gpt_weights", gpt_weights),
                    ("sovits_weights", sovits_weights),
                )
                if value
            },
        },
        "cluster": {
            "address": address,
            "device": device,
            "video_workers": workers,
            "cpus_per_worker": cpus_per_worker,
            "gpus_per_worker": gpus_per_worker,
            "voice_workers": voice_workers,
            "voice_gpus_per_worker": voice_gpus_per_worker,
            "shard_timeout_s": shard_timeout,
            "connect_timeout_s": connect_timeout,
        },
        "metrics_port": metrics_port,
        "strict": strict,
        "report": {"judges": report},
    }
    if identity is None and (faces is not None or reference is not None):
        raise SpecError("--faces and --reference choose whom to swap: give --identity DIR too")
    if identity is not None:
        chosen = faces or ("reference" if reference is not None else "all")
        data["face"] = {
            "identity": identity,
            "faces": chosen,
            "reference": reference,
            "backend": face_backend,
            "swapper": swapper,
            "detector": detector,
            "face_parser": face_parser,
            "enhancer": enhancer,
            "enhancer_strength": enhancer_strength,
        }
    _execute(parse_spec(data, names=RUN_FLAGS), as_json=as_json, detach=detach)


@app.command()
def resume(
    work_dir: Annotated[
        str, typer.Argument(help="work directory of an interrupted job (a path or s3://)")
    ],
    address: Annotated[str | None, typer.Option(help="join this Ray cluster")] = None,
    detach: Annotated[bool, typer.Option(help="leave the job running on the cluster")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON report")] = False,
) -> None:
    """Finish an interrupted job: reuse every finished shard and sentence, run the rest."""
    from farm.objectstore import is_url
    from farm.pipeline.plan import default_work_dir
    from farm.plan.ledger import Ledger
    from farm.spec import parse_spec

    if is_url(work_dir):
        from farm.pipeline.remote import remote_ledger

        data = remote_ledger(work_dir).spec
        # The ledger's spec names its URLs; only a --work-dir given by URL is set again.
        remote = data.get("remote") or {}
        if not remote.get("default_work_dir"):
            data["work_dir"] = work_dir
    else:
        local = Path(work_dir)
        data = Ledger.load(local).spec
        output = Path(str(data.get("output", "")))
        # A default work dir stays a default one (removed once the job is done); a --work-dir
        # stays.
        if local.resolve() != default_work_dir(output).resolve():
            data["work_dir"] = str(local.resolve())
    if address is not None:
        data.setdefault("cluster", {})["address"] = address
    _execute(parse_spec(data), as_json=as_json, detach=detach)


def main() -> None:
    """Entry point: every error becomes one line on stderr and a non-zero exit code."""
    try:
        app()
    except Cancelled as exc:
        print(f"farm: cancelled: {exc.one_line()}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except FarmError as exc:
        print(error_line(exc), file=sys.stderr)
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        print("farm: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # a bug: one line here, the traceback in a log
        from farm.provenance.keys import farm_home

        error = record_unexpected(exc, farm_home() / "logs", what="farm")
        print(error_line(error), file=sys.stderr)
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":
    main()
