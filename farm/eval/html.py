"""The evaluation's report page: one self-contained, offline HTML file beside ``metrics.json``.

`render_report` turns an `EvalReport` and its `EvalArtifacts` into HTML: a contact sheet of the
random frame pairs (source | output, as in the method paper's figure), the metrics table with the
paper's numbers beside ours, plots over time, the per-sentence audio and the provenance check.
Every image is inlined as a data URI (JPEG photos, SVG plots), so the page makes no request and
runs no script. The same inputs give the same bytes: plots carry no dates and their SVG ids are
salted with a constant.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import matplotlib
import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from farm.eval.base import EvalArtifacts, SentenceSpan
from farm.eval.metrics import EvalReport
from farm.fsutil import write_text_atomic

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

CONTACT_WIDTH = 480
"""Contact-sheet frames are downscaled to this width (px) before they are inlined."""
IDENTITY_HEIGHT = 160
"""Identity faces are downscaled to at most this height (px)."""
JPEG_QUALITY = 82
ENVELOPE_BINS = 600
"""Columns of the audio envelope plot."""
TEXT_CHARS = 90
"""Sentence texts in the per-sentence table are cut to this many characters."""

_RC: dict[RcKeyType, Any] = {
    "svg.hashsalt": "syncfarm-eval-report",
    "svg.fonttype": "path",
    "font.family": "DejaVu Sans",
    "font.size": 9.0,
    "axes.titlesize": 10.0,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.labelsize": 9.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e6ec",
    "grid.linewidth": 0.6,
    "legend.fontsize": 8.0,
    "legend.frameon": False,
    "lines.linewidth": 1.3,
    "path.simplify": True,
    "figure.dpi": 100,
}
"""matplotlib settings of every plot (the SVG salt makes its ids, and so its bytes, stable)."""

_BLUE, _ORANGE, _GREEN, _GREY, _RED = "#2b5fab", "#d9822b", "#2e8b57", "#8a93a3", "#c0392b"




# --- view model -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricRow:
    name: str
    ours: str
    paper: str = ""
    note: str = ""


@dataclass(frozen=True)
class MetricGroup:
    title: str
    judge: str = ""
    rows: tuple[MetricRow, ...] = ()
    missing: str | None = None
    """Why the judge did not run (the group then has no rows)."""


@dataclass(frozen=True)
class Plot:
    key: str
    title: str
    uri: str | None = None
    alt: str = ""
    caption: str = ""
    missing: str | None = None


@dataclass(frozen=True)
class ContactView:
    frame: int
    time: str
    source_uri: str
    output_uri: str
    note: str = ""


@dataclass(frozen=True)
class SentenceRow:
    index: int
    span: str
    text: str
    stretch: str
    to_reference: str
    to_original: str
    offset: str
    confidence: str


@dataclass(frozen=True)
class ShotRow:
    shot: int
    frames: str
    faces: str
    changed: str
    share: str


@dataclass(frozen=True)
class ProvenanceView:
    verdict: str
    tone: str
    explanation: str
    rows: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class WordsView:
    reference_label: str
    reference_text: str
    output_text: str
    source_text: str | None


@dataclass(frozen=True)
class PageView:
    title: str
    header: tuple[tuple[str, str], ...]
    warnings: tuple[str, ...]
    contact: tuple[ContactView, ...]
    identity_uris: tuple[str, ...]
    groups: tuple[MetricGroup, ...]
    skipped: tuple[tuple[str, str], ...]
    plots: tuple[Plot, ...]
    audio_plot: Plot
    sentences: tuple[SentenceRow, ...]
    shots: tuple[ShotRow, ...]
    words: WordsView | None
    provenance: ProvenanceView | None
    provenance_missing: str | None
    timings: tuple[tuple[str, str], ...] = field(default=())


# --- public API -------------------------------------------------------------------------------


def render_report(report: EvalReport, artifacts: EvalArtifacts) -> str:
    """The report page as one self-contained HTML document (same inputs, same string)."""
    with matplotlib.rc_context(_RC):
        plots = (
            _identity_plot(report),
            _coverage_plot(report),
            _fidelity_plot(report),
            _temporal_plot(report),
        )
        audio_plot = _audio_plot(report, artifacts)
    view = PageView(
        title=f"SyncFarm evaluation — {Path(report.output).name}",
        header=_header(report),
        warnings=tuple(report.warnings),
        contact=_contact(report, artifacts),
        identity_uris=tuple(
            _jpeg_uri(_fit(face, max_height=IDENTITY_HEIGHT)) for face in artifacts.identity_faces
        ),
        groups=_metric_groups(report),
        skipped=tuple(sorted(report.skipped.items())),
        plots=plots,
        audio_plot=audio_plot,
        sentences=_sentence_rows(report, artifacts.sentences),
        shots=_shot_rows(report),
        words=_words(report),
        provenance=_provenance(report),
        provenance_missing=(
            _skip_reason(report, "provenance") if report.provenance is None else None
        ),
        timings=tuple(
            (name, f"{seconds:.1f} s") for name, seconds in sorted(report.judge_seconds.items())
        ),
    )
    return _environment().get_template("report.html.j2").render(page=view)


def write_report(path: Path, report: EvalReport, artifacts: EvalArtifacts) -> None:
    """Write the page to ``path`` atomically (a temporary file beside it, fsync, rename)."""
    write_text_atomic(path, render_report(report, artifacts))


# --- formatting -------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _environment() -> Environment:
    # the template is ``*.html.j2``: name "j2" too, or select_autoescape's default would not
    # escape it (it matches on the final extension)
    return Environment(
        loader=PackageLoader("farm.eval", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html", "j2"), default=True),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


DASH = "—"


def _num(value: float | None, digits: int = 3) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return DASH if value is None else f"{100.0 * value:.0f} %"


def _ratio(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}×"


def _ms(value: float | None) -> str:
    if value is None:
        return DASH
    return "0 ms" if round(value) == 0 else f"{value:+.0f} ms"


def _clock(seconds: float) -> str:
    minutes, rest = divmod(max(seconds, 0.0), 60.0)
    return f"{int(minutes)}:{rest:06.3f}"


def _skip_reason(report: EvalReport, section: str) -> str:
    from farm.eval.evaluate import JUDGES

    for judge in JUDGES:
        if judge.section == section and judge.name in report.skipped:
            return report.skipped[judge.name]
    return "the judge did not run (no reason recorded)"


# --- header, contact sheet --------------------------------------------------------------------


def _header(report: EvalReport) -> tuple[tuple[str, str], ...]:
    rows = [
        ("Input", report.input),
        ("Output", report.output),
        ("Identity", report.identity or "none"),
    ]
    if report.transcript:
        rows.append(("Transcript", report.transcript))
    rows.append(
        (
            "Video",
            f"{report.width}×{report.height}, {report.fps:.3f} fps, {report.frames} frames, "
            f"{report.duration_s:.2f} s",
        )
    )
    rows.append(("Sampling", f"seed {report.seed}, eval version {report.eval_version}"))
    return tuple(rows)


def _contact(report: EvalReport, artifacts: EvalArtifacts) -> tuple[ContactView, ...]:
    scores = {p.frame: p for p in report.fidelity.pairs} if report.fidelity else {}
    views = []
    for pair in sorted(artifacts.contact, key=lambda p: p.frame):
        score = scores.get(pair.frame)
        note = ""
        if score is not None:
            note = f"SSIM {score.ssim:.3f} · PSNR {score.psnr_db:.1f} dB"
        views.append(
            ContactView(
                frame=pair.frame,
                time=_clock(pair.time_s),
                source_uri=_jpeg_uri(_fit(pair.source, max_width=CONTACT_WIDTH)),
                output_uri=_jpeg_uri(_fit(pair.output, max_width=CONTACT_WIDTH)),
                note=note,
            )
        )
    return tuple(views)


def _fit(image: np.ndarray, max_width: int | None = None, max_height: int | None = None) -> Any:
    """``image`` downscaled (area filter) to fit the bounds; never upscaled."""
    height, width = image.shape[:2]
    scale = 1.0
    if max_width is not None and width > max_width:
        scale = min(scale, max_width / width)
    if max_height is not None and height > max_height:
        scale = min(scale, max_height / height)
    if scale >= 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _jpeg_uri(image: np.ndarray) -> str:
    picture = np.ascontiguousarray(image)
    if picture.dtype != np.uint8:
        picture = np.clip(picture, 0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("could not encode a contact-sheet image as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


# --- metrics table ----------------------------------------------------------------------------


def _metric_groups(report: EvalReport) -> tuple[MetricGroup, ...]:
    return (
        _identity_group(report),
        _coverage_group(report),
        _fidelity_group(report),
        _temporal_group(report),
        _speaker_group(report),
        _words_group(report),
        _lip_sync_group(report),
    )


def _identity_group(report: EvalReport) -> MetricGroup:
    title = "Identity similarity"
    m = report.identity_similarity
    if m is None:
        return MetricGroup(title, missing=_skip_reason(report, "identity_similarity"))
    threshold = f"the same person above {m.same_person_threshold:.3f}"
    rows = [
        MetricRow("Output face ↔ identity (cosine)", _num(m.mean_to_identity), note=threshold),
        MetricRow("Output face ↔ original face (cosine)", _num(m.mean_to_original)),
        MetricRow(
            "Share closer to the identity",
            _pct(m.closer_to_identity),
            note="than to the original face at the same place",
        ),
    ]
    if m.arcface_to_identity is not None:
        rows.append(MetricRow("ArcFace ↔ identity (cosine)", _num(m.arcface_to_identity)))
    rows.append(MetricRow("Faces compared", str(m.faces), note=f"{m.frames_sampled} frames"))
    return MetricGroup(title, judge=m.judge, rows=tuple(rows))


def _coverage_group(report: EvalReport) -> MetricGroup:
    title = "Coverage"
    m = report.coverage
    if m is None:
        return MetricGroup(title, missing=_skip_reason(report, "coverage"))
    rows = (
        MetricRow(
            "Input faces changed",
            _pct(m.share_changed),
            note=f"{m.faces_changed} of {m.faces_in_input} in {m.frames_sampled} frames; "
            f"changed below SSIM {m.changed_threshold:.2f}",
        ),
        MetricRow("Shots", str(len(m.shots))),
    )
    return MetricGroup(title, judge="YuNet on input and output", rows=rows)


def _fidelity_group(report: EvalReport) -> MetricGroup:
    title = "Fidelity (the paper's table)"
    m = report.fidelity
    if m is None:
        return MetricGroup(title, missing=_skip_reason(report, "fidelity"))
    pairs = f"{len(m.pairs)} random frame pairs"
    rows = (
        MetricRow(
            "SSIM source ↔ output",
            _num(m.ssim_source_output),
            paper=f"{m.paper_ssim_source_output:.2f}",
            note=f"whole frame, luma; {pairs}",
        ),
        MetricRow(
            "SSIM identity ↔ output",
            _num(m.ssim_identity_output),
            paper=f"{m.paper_ssim_identity_output:.2f}",
            note="aligned 112 px face crops",
        ),
        MetricRow("SSIM inside the face", _num(m.ssim_face)),
        MetricRow("SSIM outside the face", _num(m.ssim_outside_face), note="1.0 is untouched"),
        MetricRow("PSNR source ↔ output", f"{m.psnr_db:.1f} dB"),
    )
    return MetricGroup(title, judge="SSIM / PSNR", rows=rows)


def _temporal_group(report: EvalReport) -> MetricGroup:
    title = "Temporal stability"
    m = report.temporal
    if m is None:
        return MetricGroup(title, missing=_skip_reason(report, "temporal"))
    rows = (
        MetricRow(
            "Face jitter, output ÷ input",
            _ratio(m.jitter_ratio),
            note=f"output {_num(m.jitter_output, 2)}, input {_num(m.jitter_input, 2)} "
            "px/frame² (landmark acceleration); 1.00× is as steady",
        ),
        MetricRow(
            "Face flicker, output ÷ input",
            _ratio(m.flicker_ratio),
            note=f"output {_num(m.flicker_output, 2)}, input {_num(m.flicker_input, 2)} "
            "(mean |luma second difference|)",
        ),
    )
    return MetricGroup(title, judge="YuNet landmarks, face-region luma", rows=rows)


def _speaker_group(report: EvalReport) -> MetricGroup:
    title = "Speaker similarity"
    m = report.speaker
    if m is None:
        return MetricGroup(title, missing=_skip_reason(report, "speaker"))
    rows = (
        MetricRow("Output voice ↔ reference voice (cosine)", _num(m.mean_to_reference)),
        MetricRow("Output voice ↔ source voice (cosine)", _num(m.mean_to_original)),
        MetricRow("Sentences closer to the reference", _pct(m.closer_to_reference)),
        MetricRow(
            "Source voice ↔ reference voice (cosine)",
            _num(m.source_to_reference),
            note="where the output started from",
        ),
    )
    return MetricGroup(title, judge=m.judge, rows=rows)


def _words_group(report: EvalReport) -> MetricGroup:
    title = "Words"
    m = report.words
    if m is None:
        return MetricGroup(title, missing=_skip_reason(report, "words"))
    reference = "the transcript" if m.reference == "transcript" else "the ASR of the source"
    rows = [MetricRow("Word error rate of the output", _pct(m.wer), note=f"against {reference}")]
    if m.source_wer is not None:
        rows.append(
            MetricRow("Word error rate of the source", _pct(m.source_wer), note="the ASR's floor")
        )
    return MetricGroup(title, judge=m.judge, rows=tuple(rows))


def _lip_sync_group(report: EvalReport) -> MetricGroup:
    title = "Lip sync"
    m = report.lip_sync
    if m is None:
        return MetricGroup(title, missing=_skip_reason(report, "lip_sync"))
    trend = DASH if m.trend_ms_per_min is None else f"{m.trend_ms_per_min:+.1f} ms/min"
    rows = (
        MetricRow(
            "Audio–video offset of the output",
            "not found" if m.offset_ms is None else _ms(m.offset_ms),
            note=(
                f"positive: the audio comes after the mouth; confidence {m.confidence:.2f}"
                if m.offset_ms is not None
                else f"the mouth does not follow the speech (confidence {m.confidence:.2f}, "
                f"below {m.min_confidence:.2f})"
            ),
        ),
        MetricRow("Audio–video offset of the input", _ms(m.source_offset_ms)),
        MetricRow("Drift over the clip", trend, note="slope of the sentence offsets"),
        MetricRow("Frames with a mouth", str(m.face_frames)),
    )
    return MetricGroup(title, judge="mouth opening against the speech envelope", rows=rows)


def _shot_rows(report: EvalReport) -> tuple[ShotRow, ...]:
    if report.coverage is None:
        return ()
    return tuple(
        ShotRow(
            shot=s.shot,
            frames=f"{s.start_frame}–{s.end_frame - 1}",
            faces=str(s.faces_in_input),
            changed=str(s.faces_changed),
            share=_pct(s.share_changed),
        )
        for s in report.coverage.shots
    )


def _words(report: EvalReport) -> WordsView | None:
    m = report.words
    if m is None:
        return None
    label = "Transcript" if m.reference == "transcript" else "Source (ASR)"
    return WordsView(label, m.reference_text, m.output_text, m.source_text)


def _provenance(report: EvalReport) -> ProvenanceView | None:
    m = report.provenance
    if m is None:
        return None

    def found(value: bool | None) -> str:
        return "not checked" if value is None else ("found" if value else "not found")

    verdict = m.verdict.replace("_", " ")
    tone = {"labelled": "good", "unlabelled": "warn"}.get(m.verdict, "bad")
    rows = (
        ("Video watermark", found(m.video_watermark)),
        ("Audio watermark", found(m.audio_watermark)),
        ("C2PA manifest", m.c2pa),
        ("Job", m.job_id or DASH),
        ("Consent", m.consent_id or DASH),
    )
    return ProvenanceView(verdict, tone, m.explanation, rows)


def _sentence_rows(report: EvalReport, spans: Sequence[SentenceSpan]) -> tuple[SentenceRow, ...]:
    speakers = {s.index: s for s in report.speaker.sentences} if report.speaker else {}
    syncs = {s.index: s for s in report.lip_sync.sentences} if report.lip_sync else {}
    by_index = {s.index: s for s in spans}
    rows = []
    for index in sorted(set(by_index) | set(speakers) | set(syncs)):
        span, speaker, sync = by_index.get(index), speakers.get(index), syncs.get(index)
        timed = span or speaker or sync
        assert timed is not None
        text = (span.text if span else None) or ""
        if len(text) > TEXT_CHARS:
            text = text[: TEXT_CHARS - 1].rstrip() + "…"
        stretch = span.stretch_ratio if span else None
        rows.append(
            SentenceRow(
                index=index,
                span=f"{timed.start_s:.2f}–{timed.end_s:.2f} s",
                text=text,
                stretch=DASH if stretch is None else f"{stretch:.3f}×",
                to_reference=_num(speaker.to_reference if speaker else None),
                to_original=_num(speaker.to_original if speaker else None),
                offset=_ms(sync.offset_ms if sync else None),
                confidence=_num(sync.confidence if sync else None, 2),
            )
        )
    return tuple(rows)


# --- plots ------------------------------------------------------------------------------------


def _figure(rows: int, height: float) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(9.6, height), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(rows, 1, sharex=True, squeeze=False)
    return figure, [grid[i][0] for i in range(rows)]


def _svg_uri(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _times(frames: Sequence[int], fps: float) -> np.ndarray:
    return np.asarray(frames, dtype=np.float64) / (fps if fps > 0 else 1.0)


def _series(values: Sequence[float | None]) -> np.ndarray:
    """Values with None as NaN (matplotlib leaves a gap)."""
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


def _shot_lines(axes: Axes, report: EvalReport) -> None:
    if report.coverage is None:
        return
    for shot in report.coverage.shots[1:]:
        axes.axvline(shot.start_frame / max(report.fps, 1e-9), color=_GREY, lw=0.8, ls=":")


def _identity_plot(report: EvalReport) -> Plot:
    key, title = "identity", "Identity similarity per frame"
    m = report.identity_similarity
    if m is None:
        return Plot(key, title, missing=_skip_reason(report, "identity_similarity"))
    if not m.series:
        return Plot(key, title, missing="no per-frame series")
    points = sorted(m.series, key=lambda p: p.frame)
    t = np.asarray([p.time_s for p in points])
    figure, (axes,) = _figure(1, 2.6)
    axes.plot(t, _series([p.to_identity for p in points]), color=_BLUE, label="to identity")
    axes.plot(t, _series([p.to_original for p in points]), color=_ORANGE, label="to original")
    axes.axhline(m.same_person_threshold, color=_GREY, lw=0.9, ls="--", label="same person")
    _shot_lines(axes, report)
    axes.set_ylabel("SFace cosine")
    axes.set_xlabel("time (s)")
    axes.legend(loc="lower right", ncols=3)
    return Plot(
        key,
        title,
        uri=_svg_uri(figure),
        alt="SFace cosine of the output face to the identity and to the original, over time",
        caption="Cosine of each output face to the identity and to the input face at the same "
        "place; dashed: the same-person threshold; dotted: shot cuts.",
    )


def _coverage_plot(report: EvalReport) -> Plot:
    key, title = "coverage", "Coverage per frame"
    m = report.coverage
    if m is None:
        return Plot(key, title, missing=_skip_reason(report, "coverage"))
    if not m.series:
        return Plot(key, title, missing="no per-frame series")
    points = sorted(m.series, key=lambda p: p.frame)
    t = _times([p.frame for p in points], report.fps)
    figure, (axes,) = _figure(1, 2.2)
    faces = np.asarray([p.faces for p in points], dtype=np.float64)
    changed = np.asarray([p.changed for p in points], dtype=np.float64)
    axes.fill_between(t, 0, faces, step="mid", color="#d5dae3", lw=0, label="faces in input")
    axes.step(t, changed, where="mid", color=_GREEN, lw=1.6, label="faces changed")
    missed = np.where(changed < faces, faces, np.nan)
    axes.step(t, missed, where="mid", color=_RED, lw=1.6, label="missed")
    _shot_lines(axes, report)
    top = max(float(faces.max()), float(changed.max()), 1.0)
    axes.set_ylim(0.0, top + 1.0)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("faces")
    axes.set_xlabel("time (s)")
    axes.legend(loc="upper right", ncols=3)
    return Plot(
        key,
        title,
        uri=_svg_uri(figure),
        alt="faces found in the input and faces the output changed, per sampled frame",
        caption="Faces YuNet finds in the input (grey) against those the output changed "
        "(green); red: frames where a face was left unchanged; dotted: shot cuts.",
    )


def _fidelity_plot(report: EvalReport) -> Plot:
    key, title = "fidelity", "SSIM over the random frame pairs"
    m = report.fidelity
    if m is None:
        return Plot(key, title, missing=_skip_reason(report, "fidelity"))
    if not m.pairs:
        return Plot(key, title, missing="no frame pairs")
    pairs = sorted(m.pairs, key=lambda p: p.frame)
    t = _times([p.frame for p in pairs], report.fps)
    figure, (axes,) = _figure(1, 2.6)
    style: dict[str, Any] = {"marker": "o", "markersize": 4, "lw": 0.9}
    axes.plot(t, [p.ssim for p in pairs], color=_BLUE, label="whole frame", **style)
    axes.plot(
        t,
        _series([p.ssim_outside_face for p in pairs]),
        color=_GREEN,
        label="outside face",
        **style,
    )
    axes.plot(t, _series([p.ssim_face for p in pairs]), color=_ORANGE, label="inside face", **style)
    axes.axhline(m.paper_ssim_source_output, color=_GREY, lw=0.9, ls="--", label="paper")
    values = _series(
        [v for p in pairs for v in (p.ssim, p.ssim_face, p.ssim_outside_face)]
        + [m.paper_ssim_source_output]
    )
    low = float(np.nanmin(values))
    axes.set_ylim(max(0.0, np.floor(low * 10.0) / 10.0 - 0.05), 1.02)
    axes.set_ylabel("SSIM")
    axes.set_xlabel("time (s)")
    axes.legend(loc="lower right", ncols=4)
    return Plot(
        key,
        title,
        uri=_svg_uri(figure),
        alt="SSIM of each random frame pair: whole frame, inside and outside the face",
        caption=f"The {len(pairs)} pairs of the contact sheet; dashed: the paper's "
        f"{m.paper_ssim_source_output:.2f} (source ↔ output).",
    )


def _temporal_plot(report: EvalReport) -> Plot:
    key, title = "temporal", "Face jitter and flicker"
    m = report.temporal
    if m is None:
        return Plot(key, title, missing=_skip_reason(report, "temporal"))
    if not m.series:
        return Plot(key, title, missing="no per-frame series")
    points = sorted(m.series, key=lambda p: p.frame)
    t = _times([p.frame for p in points], report.fps)
    figure, (jitter, flicker) = _figure(2, 3.4)
    jitter.plot(t, _series([p.jitter_input for p in points]), color=_GREY, label="input")
    jitter.plot(t, _series([p.jitter_output for p in points]), color=_RED, label="output")
    jitter.set_ylabel("jitter (px/frame²)")
    jitter.legend(loc="upper right", ncols=2)
    flicker.plot(t, _series([p.flicker_input for p in points]), color=_GREY, label="input")
    flicker.plot(t, _series([p.flicker_output for p in points]), color=_BLUE, label="output")
    flicker.set_ylabel("flicker")
    flicker.set_xlabel("time (s)")
    flicker.legend(loc="upper right", ncols=2)
    for axes in (jitter, flicker):
        _shot_lines(axes, report)
    return Plot(
        key,
        title,
        uri=_svg_uri(figure),
        alt="face landmark jitter and face-region flicker of input and output over time",
        caption="Landmark acceleration of the face (top) and mean |luma second difference| in "
        "the face (bottom), input against output.",
    )


def _envelope(samples: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(bin centre times, peak |amplitude|) of ``samples`` in at most `ENVELOPE_BINS` bins."""
    data = np.abs(np.asarray(samples, dtype=np.float32).reshape(-1))
    if data.size == 0:
        return np.zeros(0), np.zeros(0)
    bins = min(ENVELOPE_BINS, data.size)
    edges = np.linspace(0, data.size, bins + 1).astype(np.int64)
    peaks = np.maximum.reduceat(data, edges[:-1])
    centres = (edges[:-1] + edges[1:]) / 2.0 / sample_rate
    return centres, np.nan_to_num(peaks.astype(np.float64))


def _audio_plot(report: EvalReport, artifacts: EvalArtifacts) -> Plot:
    key, title = "audio", "Audio before and after"
    audio = artifacts.audio
    tracks = [(name, a) for name, a in (("source", audio.source), ("output", audio.output))]
    if all(a is None for _, a in tracks):
        return Plot(key, title, missing="neither file has audio")
    figure, axes_list = _figure(2, 3.2)
    peak = 1e-6
    for (name, samples), axes, colour in zip(tracks, axes_list, (_GREY, _BLUE), strict=True):
        axes.set_ylabel(name)
        axes.grid(False)
        if samples is None:
            axes.text(0.5, 0.5, "no audio", transform=axes.transAxes, ha="center", color=_GREY)
            continue
        t, env = _envelope(samples, audio.sample_rate)
        if env.size:
            peak = max(peak, float(env.max()))
            axes.fill_between(t, -env, env, color=colour, lw=0)
    for axes in axes_list:
        axes.set_ylim(-1.1 * peak, 1.1 * peak)
        axes.set_yticks([])
        for span in artifacts.sentences:
            axes.axvspan(span.start_s, span.end_s, color=_ORANGE, alpha=0.13, lw=0)
    top = axes_list[0]
    for span in artifacts.sentences:
        top.text(
            (span.start_s + span.end_s) / 2,
            1.0,
            f"#{span.index}",
            transform=top.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=8,
            color="#333333",
        )
    axes_list[-1].set_xlabel("time (s)")
    return Plot(
        key,
        title,
        uri=_svg_uri(figure),
        alt="peak envelopes of the source and the output audio with the sentences shaded",
        caption="Peak envelope of the source (top) and the output (bottom); shaded: the "
        "sentence slots, numbered as in the table below.",
    )
