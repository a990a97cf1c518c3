"""`farm eval`: the independent judges over any output and its input (registered by cli/main.py).

Writes ``report.html`` and ``metrics.json`` into ``-o DIR`` (default ``OUTPUT.eval/`` beside the
output) and prints the headline numbers. When the output's job report (``OUTPUT.report.json``)
is there and describes this very file, its scene cuts and sentence slots are used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.errors import fail
from farm.errors import FarmError

if TYPE_CHECKING:
    from farm.eval.evaluate import JobFacts
    from farm.eval.metrics import EvalReport

EVAL_FLAGS = {
    "input": "INPUT",
    "output": "OUTPUT",
    "identity": "--identity",
    "transcript": "--transcript",
    "settings.pairs": "--pairs",
    "settings.samples": "--samples",
    "settings.seed": "--seed",
    "settings.judges": "--judge",
}


def evaluate(
    input: Annotated[Path, typer.Argument(help="the source video the output was made from")],
    output: Annotated[Path, typer.Argument(help="the output video to judge")],
    identity: Annotated[
        Path | None, typer.Option(help="the identity pack the output should show")
    ] = None,
    transcript: Annotated[
        Path | None, typer.Option(help="what is said (SRT/VTT/ASS or text); default: ASR of INPUT")
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out-dir", "-o", help="where report.html and metrics.json go"),
    ] = None,
    pairs: Annotated[int, typer.Option(help="random frame pairs (the paper uses 10)")] = 10,
    samples: Annotated[int, typer.Option(help="frames measured for the plots")] = 60,
    seed: Annotated[int, typer.Option(help="chooses the random frame pairs")] = 0,
    judge: Annotated[
        list[str] | None,
        typer.Option(
            help="run only these judges (repeat): identity, coverage, fidelity, "
            "temporal, speaker, words, lip_sync"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print metrics.json")] = False,
) -> None:
    """Judge OUTPUT against INPUT with models the pipeline never uses; write an HTML report."""
    from farm.eval.evaluate import EvalRequest
    from farm.spec import parse_model

    settings: dict[str, Any] = {"pairs": pairs, "samples": samples, "seed": seed}
    if judge:
        settings["judges"] = tuple(judge)
    try:
        request = parse_model(
            EvalRequest,
            {
                "input": input,
                "output": output,
                "identity": identity,
                "transcript": transcript,
                "settings": settings,
            },
            names=EVAL_FLAGS,
        )
        report = _run(request, out_dir or output.with_name(f"{output.name}.eval"))
    except FarmError as exc:
        fail(exc)
    if as_json:
        typer.echo(json.dumps(report.model_dump(mode="json"), indent=2))
    else:
        for line in headline(report):
            typer.echo(line)


def _run(request: Any, out_dir: Path) -> EvalReport:
    from farm.errors import StorageError
    from farm.eval.evaluate import evaluate as run_judges
    from farm.eval.html import write_report
    from farm.fsutil import write_json_atomic

    if out_dir.exists() and not out_dir.is_dir():
        raise StorageError(f"--out-dir {out_dir} is a file; give a directory")
    evaluation = run_judges(request, job=_job_facts(request.output))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"--out-dir {out_dir} cannot be created: {exc.strerror}") from None
    write_json_atomic(out_dir / "metrics.json", evaluation.report.model_dump(mode="json"))
    write_report(out_dir / "report.html", evaluation.report, evaluation.artifacts)
    typer.echo(f"wrote {out_dir / 'report.html'} and metrics.json", err=True)
    return evaluation.report


def _job_facts(output: Path) -> JobFacts | None:
    """What the output's own job report says, if it is there and is about this very file."""
    from pydantic import ValidationError

    from farm.eval.base import SentenceSpan
    from farm.eval.evaluate import JobFacts
    from farm.fsutil import sha256_file
    from farm.pipeline.plan import report_path
    from farm.pipeline.report import JobReport

    path = report_path(output)
    try:
        job = JobReport.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValidationError, ValueError):
        return None
    if job.output_sha256 != sha256_file(output):
        return None
    sentences = None
    if job.voice is not None and job.voice.sentences:
        sentences = tuple(
            SentenceSpan(s.index, s.start_s, s.end_s, s.text, s.stretch_ratio)
            for s in job.voice.sentences
        )
    return JobFacts(scene_cuts=tuple(job.scene_cuts), sentences=sentences)


def headline(report: EvalReport) -> list[str]:
    """The few numbers a reviewer reads first, one per line."""
    lines = [f"{report.output}: {report.frames} frames judged against {report.input}"]

    def number(value: float | None, fmt: str = "{:.3f}") -> str:
        return "-" if value is None else fmt.format(value)

    ident = report.identity_similarity
    if ident is not None:
        lines.append(
            f"  identity (SFace): to identity {number(ident.mean_to_identity)}, to original "
            f"{number(ident.mean_to_original)}, closer to identity on "
            f"{number(ident.closer_to_identity, '{:.0%}')} of {ident.faces} faces"
        )
    if report.coverage is not None:
        lines.append(
            f"  coverage: {report.coverage.faces_changed} of {report.coverage.faces_in_input} "
            "input faces changed"
        )
    fid = report.fidelity
    if fid is not None:
        lines.append(
            f"  SSIM source-output {fid.ssim_source_output:.3f} (paper "
            f"{fid.paper_ssim_source_output}), identity-output {number(fid.ssim_identity_output)} "
            f"(paper {fid.paper_ssim_identity_output}), outside the face "
            f"{number(fid.ssim_outside_face)}, PSNR {fid.psnr_db:.1f} dB"
        )
    if report.temporal is not None:
        lines.append(
            f"  jitter x{number(report.temporal.jitter_ratio, '{:.2f}')} of the input's, "
            f"flicker x{number(report.temporal.flicker_ratio, '{:.2f}')}"
        )
    if report.speaker is not None:
        lines.append(
            f"  speaker (d-vector): to reference {number(report.speaker.mean_to_reference)}, "
            f"to original {number(report.speaker.mean_to_original)}"
        )
    if report.words is not None:
        lines.append(f"  words (Whisper tiny.en): WER {report.words.wer:.3f}")
    if report.lip_sync is not None:
        lines.append(f"  lip sync: offset {number(report.lip_sync.offset_ms, '{:+.0f}')} ms")
    for name, why in report.skipped.items():
        lines.append(f"  {name}: not measured ({why})")
    return lines
