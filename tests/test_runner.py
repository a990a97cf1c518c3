"""The one pipeline in-process: cancellation, resume of shards and sentences, progress, storage,
devices handed to backends, the order of units, and run ids in the audit log."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from farm.chaos import ChaosSettings
from farm.devices import Device, WorkerResources
from farm.errors import Cancelled
from farm.media.ffmpeg import run_ffmpeg, select_ffmpeg
from farm.pipeline.plan import prepare_job, shard_task
from farm.pipeline.progress import ProgressTracker
from farm.pipeline.runner import InProcessRunner, execute_job
from farm.pipeline.storage import StorageAccess, check_access, storage_error
from farm.pipeline.units import schedule_units
from farm.pipeline.voice import SentenceResult, pending_sentences, plan_voice_units
from farm.processing import FrameProcessor, IdentityProcessor, build_processors
from farm.provenance.audit import AuditLog
from farm.spec import ClusterSettings, JobSpec
from tests.clips import ClipRecipe, make_clip, make_speech_clip

NO_JUDGES = {"judges": False}
"""These jobs test the runner; the judges have tests of their own."""


def _passthrough(src: Path, out: Path, **extra: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "input": src,
            "output": out,
            "passthrough": True,
            "video": {"max_shard_s": 0.4, "min_shard_s": 0.2},
            "report": NO_JUDGES,
            **extra,
        }
    )


def test_cancel_keeps_finished_shards_and_the_rerun_reuses_them(tmp_path: Path) -> None:
    src = make_clip(ClipRecipe("cancel-me", seconds=3.0, size="160x120"), tmp_path)
    work, out = tmp_path / "work", tmp_path / "out.mp4"
    cancel = threading.Event()
    done: list[str] = []

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "shard_done":
            done.append(event["shard"])
            if len(done) == 2:
                cancel.set()

    spec = _passthrough(src, out, work_dir=work)
    with pytest.raises(Cancelled) as info:
        execute_job(spec, InProcessRunner(), on_event=on_event, cancel=cancel)
    assert info.value.work_dir == str(work) and f"farm resume {work}" in str(info.value)
    assert not out.exists() and len(done) == 2
    report = execute_job(spec, InProcessRunner())
    assert sorted(report.shards_reused) == sorted(done) and out.exists()


@pytest.fixture(scope="module")
def speech_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_speech_clip(tmp_path_factory.mktemp("runner-speech"), 6)


def test_a_resumed_voice_job_reuses_its_voiced_sentences(
    speech_clip: Path, identity_pack: Path, tmp_path: Path
) -> None:
    spec = JobSpec.model_validate(
        {
            "input": speech_clip,
            "output": tmp_path / "out.mp4",
            "work_dir": tmp_path / "work",
            "face": {"identity": identity_pack},
            "voice": {"mode": "vc"},
            "report": NO_JUDGES,
        }
    )
    first = execute_job(spec, InProcessRunner())
    assert first.voice is not None and first.voice.sentences
    assert first.sync.audio_samples == first.sync.source_audio_samples
    second = execute_job(spec, InProcessRunner())
    assert second.sentences_reused == [s.index for s in first.voice.sentences]
    assert second.voice is not None and second.voice.sentences == first.voice.sentences
    # A sentence file that no longer holds its samples is voiced again.
    plan, ledger = prepare_job(spec)
    units = plan_voice_units(plan)
    assert units is not None
    units.tasks[0].out_path.write_bytes(b"")
    todo, reused = pending_sentences(units, ledger)
    assert [t.sentence.index for t in todo] == [units.tasks[0].sentence.index]
    assert len(reused) == len(units.tasks) - 1


def test_sentence_records_round_trip(tmp_path: Path) -> None:
    from farm.voice.model import SentenceReport

    report = SentenceReport(
        index=3, start_sample=10, end_sample=20, start_s=0.1, end_s=0.2, text=None,
        backend="vc", seed=7, length_ratio=1.0, stretch_ratio=1.0, in_band=True,
        borrowed_samples=0, trimmed_samples=0, loudness="rms", gain_db=0.5, synth_seconds=0.1,
        notes=("a note",),
    )  # fmt: skip
    result = SentenceResult(3, 10, 10, tmp_path / "voice" / "sentence-00003.f32", report, 0.2)
    assert SentenceResult.from_record(3, result.record(), tmp_path) == result


def test_the_worker_hands_its_device_to_every_backend() -> None:
    seen: list[WorkerResources] = []

    def factory(spec: JobSpec, resources: WorkerResources) -> FrameProcessor:
        seen.append(resources)
        return IdentityProcessor()

    resources = WorkerResources(device=Device.from_gpu_ids(["3"]))
    spec = JobSpec.model_validate({"input": "a.mp4", "output": "b.mp4", "passthrough": True})
    build_processors(spec, resources, factories={"identity": factory})
    assert seen == [resources] and seen[0].device.describe() == "cuda:3"
    assert seen[0].device.local_ids == (0,)  # what CUDA sees under CUDA_VISIBLE_DEVICES=3
    assert seen[0].device.onnx_providers()[0] == ("CUDAExecutionProvider", {"device_id": 0})
    assert Device.from_gpu_ids([]).onnx_providers() == ["CPUExecutionProvider"]


def test_units_go_out_voice_probe_first_then_longest_shards(tmp_path: Path) -> None:
    src = make_clip(ClipRecipe("order", seconds=3.0, size="160x120", scene_seconds=0.7), tmp_path)
    plan, _ = prepare_job(_passthrough(src, tmp_path / "o.mp4", work_dir=tmp_path / "w"))
    shards = [shard_task(plan, s) for s in plan.shards]
    assert schedule_units(shards, []) == sorted(
        shards, key=lambda t: (-t.shard.frames, t.shard.index)
    )
    fake_sentences: list[Any] = ["s0", "s1", "s2"]
    order = schedule_units(shards[:2], fake_sentences)
    assert order[0] == "s0" and order[-2:] == ["s1", "s2"]


def test_progress_adds_up_to_a_status() -> None:
    tracker = ProgressTracker(run_id="r", input="in.mp4", output="out.mp4")
    tracker.apply({"event": "planning"})
    assert tracker.status().state == "planning"
    tracker.apply(
        {
            "event": "planned",
            "job_id": "j",
            "frames": 100,
            "shards": [["00000", 60], ["00001", 40]],
            "reused": ["00001"],
            "sentences": 3,
            "sentences_reused": [0],
        }
    )
    tracker.apply({"event": "progress", "active": {"00000": 30}})
    status = tracker.status()
    assert (status.state, status.frames_done, status.shards_done) == ("running", 70, 1)
    assert status.eta_s is not None
    tracker.apply({"event": "shard_done", "shard": "00000", "frames": 60, "seconds": 1.0})
    tracker.apply({"event": "progress", "active": {"00000": 60}})  # stale, after the end
    tracker.apply({"event": "sentence_done", "sentence": 1, "seconds": 0.1})
    tracker.apply({"event": "retry", "unit": "sentence 2", "reason": "Timeout"})
    status = tracker.status()
    assert (status.frames_done, status.shards_done, status.sentences_done) == (100, 2, 2)
    assert status.retries == 1 and not status.finished
    tracker.apply({"event": "failed", "error": "shard 00003: boom"})
    status = tracker.status()
    assert status.finished and status.state == "failed" and status.error == "shard 00003: boom"


def test_storage_check_names_each_problem(tmp_path: Path) -> None:
    readable = tmp_path / "in.mp4"
    readable.write_bytes(b"x")
    not_a_dir = tmp_path / "file"
    not_a_dir.write_bytes(b"")
    access = StorageAccess(read=(readable, tmp_path / "missing"), write=(not_a_dir / "work",))
    problems = check_access(access)
    assert [p for p, _ in problems] == [str(tmp_path / "missing"), str(not_a_dir / "work")]
    error = storage_error("node-7", problems)
    assert error.node == "node-7" and error.path == str(tmp_path / "missing")
    assert "node node-7 cannot read" in str(error) and "1 more" in str(error)
    assert check_access(StorageAccess(read=(readable, tmp_path), write=(tmp_path / "w",))) == []


def test_audit_logs_from_before_run_ids_still_verify(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    with AuditLog(path) as audit:
        audit.append(
            job_id="old", identity="", consent_id="none", operator_key_id="k",
            input_sha256={"input": "a"}, output_sha256={"output": "b"},
        )  # fmt: skip
    # The log as an earlier version wrote it: no run_id column.
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER jobs_no_update")
        db.execute("ALTER TABLE jobs DROP COLUMN run_id")
    with AuditLog(path) as audit:
        entry = audit.append(
            job_id="new", run_id="r1", identity="", consent_id="none", operator_key_id="k",
            input_sha256={"input": "a"}, output_sha256={"output": "c"},
        )  # fmt: skip
        audit.verify_chain()
        assert [e.run_id for e in audit.entries()] == ["", "r1"] and entry.run_id == "r1"


def test_execution_settings_are_not_the_jobs_identity(tmp_path: Path) -> None:
    base = _passthrough(tmp_path / "in.mp4", tmp_path / "out.mp4")
    varied = base.model_copy(
        update={
            "output": tmp_path / "elsewhere.mov",
            "work_dir": tmp_path / "work",
            "metrics_port": 9187,
            "chaos": ChaosSettings(marker_dir=tmp_path, hang_unit="shard 00001"),
            "cluster": ClusterSettings(
                address="auto",
                device="cuda",
                video_workers=7,
                cpus_per_worker=2,
                gpus_per_worker=0.25,
                shard_timeout_s=5,
                voice_gpus_per_worker=1,
            ),
        }
    )
    assert varied.content_hash() == base.content_hash()
    other = base.model_copy(update={"video": base.video.model_copy(update={"crf": 20})})
    assert other.content_hash() != base.content_hash()


def test_the_default_work_dir_of_another_job_is_replaced_and_the_same_job_resumes(
    tmp_path: Path,
) -> None:
    src = make_clip(ClipRecipe("two-jobs", seconds=1.0, size="160x120"), tmp_path)
    out = tmp_path / "out.mp4"
    first, first_ledger = prepare_job(_passthrough(src, out))
    first_ledger.mark_done("00000", {"frames": 1, "path": "shards/00000.mkv"})
    again, _ = prepare_job(_passthrough(src, out))
    assert again.work_dir == first.work_dir and not again.warnings, "the same job keeps its work"
    other_spec = _passthrough(src, out).model_copy(
        update={"video": _passthrough(src, out).video.model_copy(update={"crf": 23})}
    )
    other, ledger = prepare_job(other_spec)
    assert any("different earlier job" in w for w in other.warnings)
    assert ledger.done_names() == set(), "nothing of the other job is reused"
    events: list[dict[str, Any]] = []
    execute_job(_passthrough(src, out, work_dir=tmp_path / "w"), InProcessRunner())
    (out.parent / "out.mp4").unlink()
    spec = _passthrough(src, out, work_dir=tmp_path / "w")
    # A kept work dir with its output removed: the rerun reuses every shard and says so.
    execute_job(spec, InProcessRunner(), on_event=events.append)
    notices = [e["message"] for e in events if e["event"] == "notice"]
    assert notices and "resuming an earlier run of this job" in notices[0]


def test_a_double_that_did_not_happen_is_said_and_strict_fails_it(
    identity_pack: Path, tmp_path: Path
) -> None:
    from farm.errors import SpecError

    no_faces = make_clip(ClipRecipe("pattern", seconds=1.0, size="160x120"), tmp_path)
    spec = JobSpec.model_validate(
        {
            "input": no_faces,
            "output": tmp_path / "o.mp4",
            "face": {"identity": identity_pack},
            "report": NO_JUDGES,
        }
    )
    report = execute_job(spec, InProcessRunner())
    assert report.frames_changed == 0
    assert any("no frame was swapped" in w for w in report.warnings)
    strict = spec.model_copy(update={"strict": True, "output": tmp_path / "strict.mp4"})
    with pytest.raises(SpecError, match="--strict: no frame was swapped"):
        execute_job(strict, InProcessRunner())
    assert not (tmp_path / "strict.mp4").exists()


def test_streams_the_output_does_not_carry_are_named(tmp_path: Path) -> None:
    from farm.errors import SpecError

    src = tmp_path / "two-tracks.mp4"
    run_ffmpeg(
        [select_ffmpeg({"libx264", "aac"}).path, "-loglevel", "error", "-y", "-f", "lavfi", "-i",
         "testsrc2=size=160x120:duration=1", "-f", "lavfi", "-i", "sine=duration=1", "-f", "lavfi",
         "-i", "sine=frequency=220:duration=1", "-map", "0", "-map", "1", "-map", "2",
         "-metadata:s:a:1", "language=deu", "-c:v", "libx264", "-c:a", "aac", str(src)]
    )  # fmt: skip
    report = execute_job(_passthrough(src, tmp_path / "o.mp4"), InProcessRunner())
    assert report.warnings == [
        "two-tracks.mp4: stream #2 (audio, aac, language deu) is not carried to the output"
    ]
    with pytest.raises(SpecError, match=r"--strict: two-tracks\.mp4: stream #2"):
        execute_job(_passthrough(src, tmp_path / "s.mp4", strict=True), InProcessRunner())
