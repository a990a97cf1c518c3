"""The judges after a job: the committed output against its input, written as OUT.mp4.report.html.

The reducer calls `judge_output` once the signed output is in place. A judge that cannot run is
noted in the report; an evaluation that fails outright never takes the finished double away: the
job keeps its output and says, as a warning, why there is no quality report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from farm.errors import FarmError
from farm.eval.base import SentenceSpan
from farm.eval.evaluate import JUDGES, EvalRequest, EvalSettings, JobFacts, JudgeName, evaluate
from farm.eval.metrics import EvalReport
from farm.spec import JobSpec
from farm.voice.model import VoiceReport


def html_report_path(output: Path) -> Path:
    """``OUT.mp4.report.html``, beside ``OUT.mp4.report.json`` (the extension stays)."""
    return output.with_name(f"{output.name}.report.html")


@dataclass(frozen=True)
class JobQuality:
    report: EvalReport | None
    html: Path | None
    warnings: tuple[str, ...] = ()


def job_judges(spec: JobSpec) -> tuple[tuple[JudgeName, ...], dict[str, str]]:
    """The judges that say something about this job's output, and why the others do not.

    With the input's voice kept, the speaker and words judges would only grade the input.
    """
    left_out: dict[str, str] = {}
    if spec.voice.mode == "keep":
        why = "the voice was kept (--voice keep): the output speaks with the input's voice"
        left_out = {"speaker": why, "words": why}
    return tuple(j.name for j in JUDGES if j.name not in left_out), left_out


def judge_output(
    spec: JobSpec,
    *,
    scene_cuts: tuple[int, ...],
    voice: VoiceReport | None,
) -> JobQuality:
    """Run the judges over ``spec.output`` and write its report page (atomically)."""
    if not spec.report.judges:
        return JobQuality(report=None, html=None)
    from farm.eval.html import write_report

    sentences = None
    if voice is not None and voice.sentences:
        sentences = tuple(
            SentenceSpan(
                index=s.index,
                start_s=s.start_s,
                end_s=s.end_s,
                text=s.text,
                stretch_ratio=s.stretch_ratio,
            )
            for s in voice.sentences
        )
    judges, left_out = job_judges(spec)
    request = EvalRequest(
        input=spec.input,
        output=spec.output,
        identity=spec.face.identity if spec.face is not None else None,
        transcript=spec.voice.transcript,
        settings=EvalSettings(
            pairs=spec.report.pairs, samples=spec.report.samples, judges=judges
        ),
    )
    try:
        facts = JobFacts(
            scene_cuts=scene_cuts, sentences=sentences, left_out=tuple(left_out.items())
        )
        evaluation = evaluate(request, job=facts)
        html = html_report_path(spec.output)
        write_report(html, evaluation.report, evaluation.artifacts)
    except FarmError as exc:
        return JobQuality(
            report=None,
            html=None,
            warnings=(f"no quality report: {exc.one_line()}",),
        )
    return JobQuality(report=evaluation.report, html=html)
