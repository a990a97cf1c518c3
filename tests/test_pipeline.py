"""End to end through the pipeline: frames, timestamps, audio and tags survive the farm.

These run the job in-process (`InProcessRunner`), which runs exactly the steps the Ray runner
distributes; tests/test_farm.py runs jobs on Ray.
"""

from __future__ import annotations

import json
import urllib.request
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from farm.media.audio import decode_audio
from farm.media.probe import MediaInfo, probe
from farm.metrics import FarmMetrics
from farm.pipeline.plan import prepare_job, shard_task
from farm.pipeline.units import UnitWorker
from farm.provenance.keys import load_trust
from farm.provenance.verify import verify_file
from farm.render import ShardResult
from farm.spec import JobSpec
from tests.clips import RECIPES, make_clip
from tests.conftest import media_path
from tests.jobs import run_local


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


def _spec(src: Path, out: Path, **video: Any) -> JobSpec:
    data: dict[str, Any] = {"input": src, "output": out, "passthrough": True}
    if video:
        data["video"] = video
    return JobSpec.model_validate(data)


def _seconds(info: MediaInfo) -> list[Fraction]:
    return [p * info.video.time_base for p in info.video.frame_pts]


def _planes(frame: av.VideoFrame) -> list[np.ndarray]:
    return [np.frombuffer(bytes(p), dtype=np.uint8) for p in frame.planes]


def _yuv_psnr(a: av.VideoFrame, b: av.VideoFrame) -> float:
    """PSNR over the raw planes (no RGB conversion, so tags cannot bias it)."""
    x = np.concatenate([np.asarray(a.to_ndarray(), dtype=np.float64).ravel()])
    y = np.concatenate([np.asarray(b.to_ndarray(), dtype=np.float64).ravel()])
    peak = 1023.0 if "10" in a.format.name else 255.0
    mse = float(np.mean((x - y) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(peak**2 / mse)


def _assert_same_timeline(src: MediaInfo, out: MediaInfo) -> None:
    assert out.video.frame_count == src.video.frame_count
    # Equal presentation times, to within one tick of the coarser time base.
    tick = max(src.video.time_base, out.video.time_base)
    src_t, out_t = _seconds(src), _seconds(out)
    worst = max(abs(a - b) for a, b in zip(src_t, out_t, strict=True))
    assert worst <= tick, f"presentation times differ by up to {float(worst)} s"


def _assert_tags(src: MediaInfo, out: MediaInfo) -> None:
    assert out.video.rotation == src.video.rotation
    assert out.video.color == src.video.color
    assert (out.video.width, out.video.height) == (src.video.width, src.video.height)


def _assert_audio(src: MediaInfo, out: MediaInfo) -> None:
    if src.audio is None:
        assert out.audio is None
        return
    assert out.audio is not None
    assert out.audio.sample_count == src.audio.sample_count
    assert out.audio.channels == src.audio.channels
    assert out.audio.sample_rate == src.audio.sample_rate
    a = decode_audio(src.path, src.audio)
    b = decode_audio(out.path, out.audio)
    # Unchanged apart from the one AAC encode and the watermark: correlation stays near 1.
    corr = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    assert corr > 0.97, f"audio correlation {corr:.4f}"


@pytest.mark.parametrize("name", sorted(set(RECIPES) - {"long2min"}))
def test_lossless_passthrough_keeps_every_frame(name: str, clips: Path, tmp_path: Path) -> None:
    src = make_clip(RECIPES[name], clips)
    out = tmp_path / f"{name}.mp4"
    summary = run_local(
        _spec(src, out, intermediate="lossless", crf=0, max_shard_s=0.8, min_shard_s=0.2)
    )
    assert summary.join == "encode"
    assert summary.shards >= 2, "short shards force joins inside the clip"
    s, o = probe(src), probe(out)
    _assert_same_timeline(s, o)
    _assert_tags(s, o)
    _assert_audio(s, o)
    worst = 99.0
    with av.open(str(src)) as a, av.open(str(out)) as b:
        pairs = zip(a.decode(video=0), b.decode(video=0), strict=True)
        for index, (fa, fb) in enumerate(pairs):
            psnr = _yuv_psnr(fa, fb)
            assert psnr >= 45, f"frame {index}: PSNR {psnr:.1f} dB"
            worst = min(worst, psnr)
    print(f"{name}: {o.video.frame_count} frames, worst PSNR {worst:.1f} dB")


@pytest.mark.parametrize(
    "name", ["fps2997", "vfr", "rotated", "mono44k", "surround51", "noaudio", "tenbit", "odd1921"]
)
def test_fast_mp4_output_matches_source(name: str, clips: Path, tmp_path: Path) -> None:
    src = make_clip(RECIPES[name], clips)
    out = tmp_path / f"{name}.mp4"
    summary = run_local(_spec(src, out, max_shard_s=0.8, min_shard_s=0.2))
    assert summary.join == "copy"
    s, o = probe(src), probe(out)
    _assert_same_timeline(s, o)
    _assert_tags(s, o)
    _assert_audio(s, o)
    assert o.video.pix_fmt.replace("444", "420") == s.video.pix_fmt.replace("444", "420")


def test_two_minute_clip_with_many_scenes(clips: Path, tmp_path: Path) -> None:
    src = make_clip(RECIPES["long2min"], clips)
    out = tmp_path / "long.mp4"
    summary = run_local(_spec(src, out))
    assert len(summary.scene_cuts) >= 30
    s, o = probe(src), probe(out)
    _assert_same_timeline(s, o)
    _assert_audio(s, o)
    # Every shard edge is a detected cut (no scene in this clip is longer than the cap).
    starts = {a for a, _ in summary.shard_ranges} - {0}
    assert starts <= set(summary.scene_cuts)


@pytest.mark.parametrize(
    ("relative", "cuts"),
    [
        ("video/grid_hardcuts_4_speakers_12s.mp4", [75, 150, 225]),
        ("video/tears_of_steel_10s_cuts_noaudio.mp4", [21, 65, 185]),
    ],
)
def test_shard_joins_fall_on_real_cuts(relative: str, cuts: list[int], tmp_path: Path) -> None:
    src = media_path(relative)
    out = tmp_path / "out.mp4"
    summary = run_local(_spec(src, out, max_shard_s=4.0))
    starts = sorted(a for a, _ in summary.shard_ranges if a > 0)
    for cut in cuts:
        assert any(abs(cut - s) <= 1 for s in starts), f"no shard edge near cut {cut}: {starts}"
    fps = summary.fps.fraction()
    cap = int(4.0 * fps)
    assert all(b - a <= cap for a, b in summary.shard_ranges), "long scenes are capped"
    s, o = probe(src), probe(out)
    _assert_same_timeline(s, o)
    _assert_audio(s, o)
    # Every output is labelled: both watermarks and a valid, trusted C2PA manifest.
    report = verify_file(out, load_trust())
    assert report.verdict == "labelled", report.to_json_dict()
    expected = bytes.fromhex(summary.provenance.watermark_payload)
    assert report.video is not None and report.video.payload == expected
    assert report.manifest.trusted and report.job_id == summary.job_id
    if s.audio is not None:
        assert report.audio is not None and report.audio.payload == expected
        print(f"{relative}: audio watermark bits {report.audio.bit_accuracy:.3f}")
    print(f"{relative}: video watermark bits {report.video.bit_accuracy:.3f}")


def _video_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(video=0) if p.size]


def test_resume_reuses_finished_shards(clips: Path, tmp_path: Path) -> None:
    src = make_clip(RECIPES["fps25"], clips)
    reference = tmp_path / "reference.mp4"
    run_local(_spec(src, reference, max_shard_s=0.8, min_shard_s=0.2))

    work = tmp_path / "work"
    out = tmp_path / "resumed.mp4"
    spec = _spec(src, out, max_shard_s=0.8, min_shard_s=0.2).model_copy(update={"work_dir": work})
    # A first run that stops after two shards: they are rendered and recorded, nothing else.
    plan, ledger = prepare_job(spec)
    worker = UnitWorker()
    for shard in plan.shards[:2]:
        result = worker.run(plan.spec, shard_task(plan, shard))
        assert isinstance(result, ShardResult)
        ledger.mark_done(result.name, result.record(plan.work_dir))
    assert not out.exists()
    first_two = {s.name: shard_task(plan, s).out_path.stat().st_mtime_ns for s in plan.shards[:2]}

    summary = run_local(spec)
    assert sorted(summary.shards_reused) == sorted(first_two)
    for name, mtime in first_two.items():
        assert (work / "shards" / f"{name}.mkv").stat().st_mtime_ns == mtime
    assert _video_packets(out) == _video_packets(reference)
    ledger = json.loads((work / "ledger.json").read_text())
    assert set(ledger["done"]) == {s.name for s in plan.shards}


def test_metrics_are_served(clips: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    metrics = FarmMetrics()
    metrics.serve(port)
    src = make_clip(RECIPES["fps25"], clips)
    summary = run_local(
        _spec(src, tmp_path / "m.mp4", max_shard_s=1.0, min_shard_s=0.2), on_event=metrics.record
    )
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    job = f'job_id="{summary.job_id}"'
    assert f'farm_frames_total{{{job},stage="video"}} {float(summary.frames)}' in body
    assert f'farm_shards_total{{{job},status="done"}} {float(summary.shards)}' in body
    assert f'farm_shard_seconds_bucket{{{job},le="+Inf",stage="video"}}' in body
    assert 'farm_jobs_total{status="succeeded"} 1.0' in body
    # the job has ended: nothing of it is left counted as running or queued
    assert f'farm_job_state{{{job},state="running"}} 0.0' in body
    assert f'farm_queue_depth{{{job},stage="video"}} 0.0' in body


def test_identity_job_swaps_revoices_and_labels(identity_pack: Path, tmp_path: Path) -> None:
    src = media_path("video/grid_jumpcut_same_speaker_6s.mp4")
    out = tmp_path / "double.mp4"
    spec = JobSpec.model_validate(
        {
            "input": src,
            "output": out,
            "face": {"identity": identity_pack},
            "voice": {"mode": "vc"},
        }
    )
    summary = run_local(spec)
    s, o = probe(src), probe(out)
    _assert_same_timeline(s, o)
    assert s.audio is not None and o.audio is not None
    assert o.audio.sample_count == s.audio.sample_count
    assert summary.frames_changed >= 0.9 * summary.frames, "the talker is swapped"
    voice = summary.voice
    assert voice is not None
    assert voice.mode == "vc" and voice.total_samples == s.audio.sample_count
    assert voice.sentences, "the speech was re-voiced sentence by sentence"
    for sentence in voice.sentences:
        assert sentence.in_band or sentence.notes
    assert summary.sync.audio_samples == s.audio.sample_count
    report = verify_file(out, load_trust())
    assert report.verdict == "labelled" and report.manifest.trusted
    assert report.manifest.consent_id == summary.provenance.consent_id != "none"


def test_bad_consent_stops_the_job_before_any_work(tmp_path: Path) -> None:
    import datetime as dt

    from farm.errors import ConsentError
    from farm.face.identity import create_identity
    from farm.models import face_manifest
    from farm.provenance.consent import create_consent, write_consent
    from farm.provenance.keys import init_keys

    src = media_path("video/grid_jumpcut_same_speaker_6s.mp4")
    face = media_path("faces/grid_talker_swiz3n_frontal.png")
    # A pack this farm signed, holding a consent record signed by an operator it does not trust.
    stranger = init_keys(tmp_path / "stranger-home")
    consent_file = tmp_path / "consent.yaml"
    write_consent(
        create_consent(
            subject="x",
            scope=["face"],
            purpose="t",
            expires=dt.date(2099, 1, 1),
            face_files=[face],
            operator=stranger,
        ),
        consent_file,
    )
    pack = create_identity([face], consent_file, tmp_path / "pack", face_manifest(None)).pack
    out = tmp_path / "out.mp4"
    work = tmp_path / "work"
    spec = JobSpec.model_validate(
        {"input": src, "output": out, "work_dir": work, "face": {"identity": pack.root}}
    )
    with pytest.raises(ConsentError, match=r"untrusted|not trusted|unknown"):
        run_local(spec)
    assert not out.exists() and not (tmp_path / "work").exists()


def test_revoicing_a_video_without_audio_still_renders_it(
    identity_pack: Path, clips: Path, tmp_path: Path
) -> None:
    src = make_clip(RECIPES["noaudio"], clips)
    out = tmp_path / "silent.mp4"
    spec = JobSpec.model_validate(
        {"input": src, "output": out, "face": {"identity": identity_pack}, "voice": {"mode": "vc"}}
    )
    summary = run_local(spec)
    assert out.exists() and probe(out).audio is None
    assert summary.voice is not None and summary.voice.skipped is True
    assert any("no audio stream" in w for w in summary.warnings)


@pytest.mark.parametrize("name", ["rotated", "vfr", "surround51"])
def test_with_debians_ffmpeg_as_the_system_binary(name: str, clips: Path, tmp_path: Path) -> None:
    """Debian 12's ffmpeg 5.1 cannot restore a rotation: the job picks a binary that can, and
    uses the system's where it is enough."""
    import os
    import shutil

    from farm.media.ffmpeg import probe_ffmpeg

    system = shutil.which("ffmpeg")
    if system is None:
        if os.environ.get("FARM_REQUIRE_SYSTEM_TOOLS") == "1":
            pytest.fail("no system ffmpeg on PATH; FARM_REQUIRE_SYSTEM_TOOLS=1 requires it")
        pytest.skip("no system ffmpeg on PATH (Debian: apt-get install ffmpeg)")
    src = make_clip(RECIPES[name], clips)
    out = tmp_path / f"{name}.mp4"
    summary = run_local(_spec(src, out, max_shard_s=0.8, min_shard_s=0.2))
    s, o = probe(src), probe(out)
    _assert_same_timeline(s, o)
    _assert_tags(s, o)
    _assert_audio(s, o)
    can_rotate = "display_rotation" in probe_ffmpeg(system).capabilities
    if s.video.rotation and not can_rotate:
        assert summary.ffmpeg.path != system, "the system ffmpeg cannot restore the rotation"
    else:
        assert summary.ffmpeg.path == system
