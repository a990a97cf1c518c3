"""The evaluation's report page (`farm.eval.html`): deterministic, escaped, self-contained, and
readable in a real browser (headless Chromium through Playwright)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from farm.eval.base import EVAL_SAMPLE_RATE, ContactPair, EvalArtifacts, EvalAudio, SentenceSpan
from farm.eval.html import render_report, write_report
from farm.eval.metrics import (
    CoverageMetrics,
    CoveragePoint,
    EvalReport,
    FidelityMetrics,
    FramePairScore,
    IdentityMetrics,
    IdentityPoint,
    LipSyncMetrics,
    ProvenanceCheck,
    SentenceSpeaker,
    SentenceSync,
    ShotCoverage,
    SpeakerMetrics,
    TemporalMetrics,
    TemporalPoint,
    WordsMetrics,
)

REPO = Path(__file__).resolve().parents[2]
FPS = 25.0
FRAMES = 200
WIDTH, HEIGHT = 640, 360
DURATION = FRAMES / FPS
PAIR_FRAMES = (7, 31, 58, 90, 104, 133, 161, 188)
SENTENCES = ((0.4, 2.3), (2.9, 5.1), (5.6, 7.6))


# --- synthetic inputs -------------------------------------------------------------------------


def _frame(index: int, swapped: bool) -> np.ndarray:
    """A deterministic BGR frame: gradient, noise, a face-like ellipse (another tint if swapped)."""
    rng = np.random.default_rng(index)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    image = np.stack(
        [
            60 + 120 * x / WIDTH,
            80 + 60 * np.sin(y / 40.0 + index / 10.0),
            150 - 90 * y / HEIGHT,
        ],
        axis=-1,
    )
    image += rng.normal(0, 6, image.shape)
    picture = np.clip(image, 0, 255).astype(np.uint8)
    centre = (WIDTH // 2 + int(40 * np.sin(index / 15.0)), HEIGHT // 2)
    skin = (120, 160, 215) if not swapped else (105, 140, 200)
    cv2.ellipse(picture, centre, (58, 76), 0, 0, 360, skin, -1)
    eyes = (40, 40, 40) if not swapped else (90, 60, 30)
    for dx in (-22, 22):
        cv2.circle(picture, (centre[0] + dx, centre[1] - 18), 7, eyes, -1)
    cv2.ellipse(
        picture, (centre[0], centre[1] + 30), (20, 6 + index % 5), 0, 0, 180, (60, 60, 150), 2
    )
    return picture


def _identity_face() -> np.ndarray:
    face = np.full((112, 112, 3), (200, 215, 225), np.uint8)
    cv2.ellipse(face, (56, 58), (38, 48), 0, 0, 360, (105, 140, 200), -1)
    for dx in (-15, 15):
        cv2.circle(face, (56 + dx, 48), 5, (90, 60, 30), -1)
    return face


def _speech(seed: int, gain: float) -> np.ndarray:
    """Tone bursts in the sentence slots, with a little noise between."""
    rng = np.random.default_rng(seed)
    n = int(DURATION * EVAL_SAMPLE_RATE)
    t = np.arange(n) / EVAL_SAMPLE_RATE
    audio = 0.01 * rng.standard_normal(n)
    for i, (start, end) in enumerate(SENTENCES):
        inside = (t >= start) & (t < end)
        syllables = 0.5 + 0.5 * np.sin(2 * np.pi * 3.5 * t[inside]) ** 2
        audio[inside] += gain * syllables * np.sin(2 * np.pi * (140 + 30 * i) * t[inside])
    return audio.astype(np.float32)


def _artifacts(*, audio: bool = True, identity: bool = True) -> EvalArtifacts:
    return EvalArtifacts(
        contact=tuple(
            ContactPair(f, f / FPS, _frame(f, swapped=False), _frame(f, swapped=True))
            for f in PAIR_FRAMES
        ),
        identity_faces=(_identity_face(),) if identity else (),
        audio=EvalAudio(
            source=_speech(1, 0.5) if audio else None,
            output=_speech(2, 0.42) if audio else None,
        ),
        sentences=tuple(
            SentenceSpan(
                index=i,
                start_s=start,
                end_s=end,
                text=f"Sentence number {i} of the synthetic clip, said once.",
                stretch_ratio=1.0 + 0.03 * (i - 1),
            )
            for i, (start, end) in enumerate(SENTENCES)
        )
        if audio
        else (),
    )


def _full_report(input_path: str = "/media/in/interview.mp4") -> EvalReport:
    rng = np.random.default_rng(7)
    sampled = list(range(0, FRAMES, 4))
    shots = [(0, 90), (90, FRAMES)]
    return EvalReport(
        input=input_path,
        output="/media/out/interview.double.mp4",
        identity="/packs/alex/identity.json",
        transcript="/media/in/interview.srt",
        frames=FRAMES,
        fps=FPS,
        width=WIDTH,
        height=HEIGHT,
        duration_s=DURATION,
        seed=0,
        judge_seconds={"identity": 3.21, "fidelity": 1.02, "speaker": 0.55, "words": 4.8},
        identity_similarity=IdentityMetrics(
            frames_sampled=len(sampled),
            faces=len(sampled),
            mean_to_identity=0.58,
            mean_to_original=0.21,
            closer_to_identity=0.96,
            same_person_threshold=0.363,
            arcface_to_identity=None,
            series=[
                IdentityPoint(
                    frame=f,
                    time_s=f / FPS,
                    to_identity=float(0.58 + 0.05 * rng.standard_normal()),
                    to_original=float(0.21 + 0.04 * rng.standard_normal()),
                )
                for f in sampled
            ],
        ),
        coverage=CoverageMetrics(
            frames_sampled=len(sampled),
            faces_in_input=len(sampled) + 4,
            faces_changed=len(sampled) + 1,
            share_changed=(len(sampled) + 1) / (len(sampled) + 4),
            changed_threshold=0.9,
            shots=[
                ShotCoverage(
                    shot=i,
                    start_frame=a,
                    end_frame=b,
                    faces_in_input=n,
                    faces_changed=c,
                    share_changed=c / n,
                )
                for i, ((a, b), n, c) in enumerate(zip(shots, (24, 30), (23, 28), strict=True))
            ],
            series=[
                CoveragePoint(frame=f, faces=2 if 100 <= f < 120 else 1, changed=1) for f in sampled
            ],
        ),
        fidelity=FidelityMetrics(
            pairs=[
                FramePairScore(
                    frame=f,
                    ssim=float(0.9 + 0.02 * rng.standard_normal()),
                    ssim_face=float(0.55 + 0.05 * rng.standard_normal()),
                    ssim_outside_face=float(0.985 + 0.005 * rng.standard_normal()),
                    psnr_db=float(33 + rng.standard_normal()),
                    identity_ssim=float(0.5 + 0.03 * rng.standard_normal()),
                )
                for f in PAIR_FRAMES
            ],
            ssim_source_output=0.903,
            ssim_identity_output=0.497,
            ssim_outside_face=0.986,
            ssim_face=0.552,
            psnr_db=33.2,
        ),
        temporal=TemporalMetrics(
            jitter_input=0.42,
            jitter_output=0.47,
            jitter_ratio=0.47 / 0.42,
            flicker_input=1.9,
            flicker_output=2.2,
            flicker_ratio=2.2 / 1.9,
            series=[
                TemporalPoint(
                    frame=f,
                    jitter_input=float(abs(0.42 + 0.1 * rng.standard_normal())),
                    jitter_output=float(abs(0.47 + 0.12 * rng.standard_normal())),
                    flicker_input=float(abs(1.9 + 0.3 * rng.standard_normal())),
                    flicker_output=None
                    if f == 100
                    else float(abs(2.2 + 0.3 * rng.standard_normal())),
                )
                for f in range(2, FRAMES)
            ],
        ),
        speaker=SpeakerMetrics(
            mean_to_reference=0.74,
            mean_to_original=0.41,
            closer_to_reference=1.0,
            source_to_reference=0.18,
            sentences=[
                SentenceSpeaker(
                    index=i, start_s=a, end_s=b, to_reference=0.72 + 0.02 * i, to_original=0.4
                )
                for i, (a, b) in enumerate(SENTENCES)
            ],
        ),
        words=WordsMetrics(
            reference="transcript",
            reference_text="Sentence number zero. Sentence number one. Sentence number two.",
            output_text="Sentence number zero. Sentence number one. Sentence number too.",
            source_text="Sentence number zero. Sentence number one. Sentence number two.",
            wer=0.111,
            source_wer=0.0,
        ),
        lip_sync=LipSyncMetrics(
            offset_ms=40.0,
            confidence=0.81,
            source_offset_ms=0.0,
            trend_ms_per_min=3.5,
            sentences=[
                SentenceSync(index=i, start_s=a, end_s=b, offset_ms=20.0 * i, confidence=0.8)
                for i, (a, b) in enumerate(SENTENCES)
            ],
            face_frames=190,
        ),
        provenance=ProvenanceCheck(
            verdict="labelled",
            explanation="the C2PA manifest verifies and the video watermark carries the job id",
            video_watermark=True,
            audio_watermark=True,
            c2pa="valid",
            job_id="job-3f2a9c",
            consent_id="consent-alex-2024",
        ),
        warnings=["the output's last sentence was cut to end with the audio"],
    )


def _bare_report(input_path: str = "/media/in/silent.mp4") -> EvalReport:
    return EvalReport(
        input=input_path,
        output="/media/out/silent.double.mp4",
        identity=None,
        transcript=None,
        frames=FRAMES,
        fps=FPS,
        width=WIDTH,
        height=HEIGHT,
        duration_s=DURATION,
        seed=3,
        skipped={
            "identity": "no identity was given",
            "speaker": "the input has no audio",
            "words": "the input has no audio",
            "lip_sync": "the input has no audio",
            "provenance": "c2pa-python is not installed",
        },
    )


@pytest.fixture(scope="module")
def full() -> tuple[EvalReport, EvalArtifacts]:
    return _full_report(), _artifacts()


@pytest.fixture(scope="module")
def full_html(full: tuple[EvalReport, EvalArtifacts]) -> str:
    return render_report(*full)


@pytest.fixture(scope="module")
def bare() -> tuple[EvalReport, EvalArtifacts]:
    return _bare_report(), _artifacts(audio=False, identity=False)


# --- the page as text -------------------------------------------------------------------------


class _Links(HTMLParser):
    """Every tag, and every URL-bearing attribute, of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in {"src", "href", "srcset", "poster", "data", "action"} and value:
                self.urls.append((tag, name, value))


def _links(html: str) -> _Links:
    parser = _Links()
    parser.feed(html)
    return parser


def test_the_page_is_the_same_for_the_same_inputs(
    full: tuple[EvalReport, EvalArtifacts], full_html: str
) -> None:
    assert render_report(*full) == full_html
    assert "dc:date" not in full_html  # (the SVGs are base64; this guards the page text)


def test_the_bare_report_renders_and_is_deterministic(
    bare: tuple[EvalReport, EvalArtifacts],
) -> None:
    page = render_report(*bare)
    assert page == render_report(*bare)
    assert 'id="contact-sheet"' in page and 'id="metrics"' in page
    assert page.count("not measured") >= 6  # every judge that did not run, in the table
    for reason in ("no identity was given", "the input has no audio", "c2pa-python"):
        assert reason in page
    assert "neither file has audio" in page
    assert "the judge did not run" in page  # coverage etc.: skipped without a reason


def test_the_page_shows_ours_beside_the_papers_numbers(full_html: str) -> None:
    for text in ("0.903", "0.89", "0.497", "0.51", "0.580", "96 %", "33.2 dB", "11 %", "+40 ms"):
        assert text in full_html, text
    assert (
        "labelled" in full_html and "consent-alex-2024" in full_html and "job-3f2a9c" in full_html
    )
    assert full_html.count('class="pair"') == len(PAIR_FRAMES)
    for key in ("identity", "coverage", "fidelity", "temporal", "audio"):
        assert f'id="plot-{key}"' in full_html
    assert 'id="sentences"' in full_html and "1.030×" in full_html


def test_paths_and_texts_are_escaped() -> None:
    hostile = '/clips/<script>alert("x")</script>&.mp4'
    report = _bare_report(input_path=hostile)
    report = report.model_copy(
        update={"warnings": ["<img src=x onerror=alert(1)>"], "skipped": {"coverage": "<b>no</b>"}}
    )
    page = render_report(report, _artifacts(audio=False, identity=False))
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;.mp4" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<b>no</b>" not in page and "&lt;b&gt;no&lt;/b&gt;" in page


def test_the_page_references_nothing_outside_itself(full_html: str) -> None:
    links = _links(full_html)
    assert links.urls, "the page has images"
    for tag, name, value in links.urls:
        assert value.startswith(("data:image/jpeg;base64,", "data:image/svg+xml;base64,")), (
            tag,
            name,
            value[:80],
        )
    assert not {"script", "link", "iframe", "object", "embed"} & set(links.tags)
    lowered = full_html.lower()
    assert "@import" not in lowered and "url(" not in lowered
    assert "http://" not in lowered and "https://" not in lowered


def test_the_photos_are_small(full_html: str) -> None:
    import base64

    jpeg = [v for _, _, v in _links(full_html).urls if v.startswith("data:image/jpeg")]
    assert len(jpeg) == 2 * len(PAIR_FRAMES) + 1
    for uri in jpeg:
        image = cv2.imdecode(
            np.frombuffer(base64.b64decode(uri.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR
        )
        assert image is not None and image.shape[1] <= 480
    assert len(full_html) < 2_500_000


def test_write_report_replaces_the_file_atomically(
    full: tuple[EvalReport, EvalArtifacts], full_html: str, tmp_path: Path
) -> None:
    target = tmp_path / "report.html"
    target.write_text("old", encoding="utf-8")
    write_report(target, *full)
    assert target.read_text(encoding="utf-8") == full_html
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary left
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask, "as readable as the output beside it"


# --- the page in a browser --------------------------------------------------------------------


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("FARM_REQUIRE_SYSTEM_TOOLS") == "1":
            pytest.fail("no chromium on PATH; FARM_REQUIRE_SYSTEM_TOOLS=1 requires it")
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    return found


def _artifact_dir() -> Path:
    folder = Path(os.environ.get("FARM_TEST_ARTIFACTS") or REPO / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        try:
            yield launched
        finally:
            launched.close()


def _open(browser: Any, path: Path) -> tuple[Any, list[str], list[str]]:
    """A page showing ``path``, with the errors and requests it will have reported."""
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri(), wait_until="load")
    return page, errors, requests


def _decoded_widths(page: Any) -> list[int]:
    widths: list[int] = page.evaluate(
        """() => Promise.all(Array.from(document.images).map(
            img => img.decode().then(() => img.naturalWidth, () => 0)))"""
    )
    return widths


@pytest.mark.parametrize("variant", ["full", "bare"])
def test_the_page_in_chromium(
    variant: str,
    browser: Any,
    full_html: str,
    bare: tuple[EvalReport, EvalArtifacts],
    tmp_path: Path,
) -> None:
    path = tmp_path / f"report-{variant}.html"
    if variant == "full":
        path.write_text(full_html, encoding="utf-8")  # (write_report is tested above)
    else:
        write_report(path, *bare)
    page, errors, requests = _open(browser, path)
    try:
        widths = _decoded_widths(page)
        assert widths and all(w > 0 for w in widths), widths
        expected_images = 2 * len(PAIR_FRAMES) + (6 if variant == "full" else 0)
        assert len(widths) == expected_images
        assert page.locator("#contact-sheet figure.pair").count() == len(PAIR_FRAMES)
        assert page.locator("#metrics tbody tr").count() >= 7
        assert page.locator("#metrics").is_visible()
        # nothing overflows the layout sideways on a laptop screen
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 1366

        shot = _artifact_dir() / f"report-page-{variant}.png"
        page.screenshot(path=str(shot), full_page=True)
        image = cv2.imread(str(shot), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[0] > 900 and image.shape[1] >= 1000
        assert shot.stat().st_size > 50_000 and float(image.std()) > 10.0

        page.emulate_media(media="print")
        assert page.locator("#metrics").is_visible()
        page.set_viewport_size({"width": 794, "height": 1123})  # A4 at 96 dpi
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 794
        background = page.evaluate(
            "() => getComputedStyle(document.documentElement).backgroundColor"
        )
        assert background == "rgb(255, 255, 255)"
        pdf = page.pdf(format="A4", print_background=True)
        assert pdf.startswith(b"%PDF") and len(pdf) > 20_000
        (_artifact_dir() / f"report-page-{variant}.pdf").write_bytes(pdf)

        assert errors == []
        page_url = path.as_uri()
        assert all(url == page_url or url.startswith("data:") for url in requests), requests
    finally:
        page.close()
