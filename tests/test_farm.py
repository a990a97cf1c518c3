"""The farm on a local Ray cluster: job actors, warm pools, errors across Ray, identical reruns.

Every job here goes through `actors.job_actor.submit_job` and the `RayRunner`, exactly as
`farm run` sends it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest
import ray

from actors.errors import unwrap
from deploy.errors import (
    ApiRefused,
    IdempotencyConflict,
    IdentityInUse,
    QuotaExceeded,
    RecordConflict,
    TooManyRequests,
)
from deploy.launcher import ClusterUnavailable
from farm.chaos import ChaosSettings
from farm.errors import (
    Cancelled,
    ChecksumMismatch,
    ConsentError,
    DeviceUnavailable,
    FarmError,
    FfmpegFailed,
    FrameCountMismatch,
    MediaError,
    ModelError,
    ProbeError,
    ShardFailed,
    SourceUnavailable,
    SpecError,
    StageNotBuilt,
    StorageError,
    UnexpectedError,
    UnitFailed,
)
from farm.provenance.audit import AuditError, AuditLog
from farm.provenance.keys import OperatorKeyError, farm_home
from farm.provenance.manifest import ManifestError
from farm.spec import JobSpec
from farm.voice.synth.gpt_sovits import GptSovitsRejected, GptSovitsUnavailable
from tests.clips import (
    TWO_TALKER_CUT,
    ClipRecipe,
    make_clip,
    make_speech_clip,
    make_two_talker_clip,
)
from tests.jobs import run_on_ray

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> Iterator[None]:
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level="ERROR",
        namespace="syncfarm",
    )
    yield
    ray.shutdown()


def _packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(video=0) if p.size]


# -- errors across Ray ------------------------------------------------------------------------


def _subclasses(cls: type[FarmError]) -> set[type[FarmError]]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def _every_farm_error() -> set[type[FarmError]]:
    """Every FarmError class in the code base (each module imported, so none is missed)."""
    import importlib
    import pkgutil

    import actors
    import deploy
    import farm

    for package in (farm, actors, deploy):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            importlib.import_module(module.name)
    return _subclasses(FarmError) | {FarmError}


ERROR_EXAMPLES: dict[type[FarmError], FarmError] = {
    FarmError: FarmError("something failed"),
    SpecError: SpecError("invalid job setting video.crf: must be <= 51"),
    MediaError: MediaError("in.mp4: decoding the audio failed"),
    ProbeError: ProbeError("x.mp4 is not a readable video"),
    FrameCountMismatch: FrameCountMismatch("shard 00003 [75, 100)", 25, 24),
    SourceUnavailable: SourceUnavailable("in.mp4: reading frames [0, 25) failed: gone"),
    FfmpegFailed: FfmpegFailed(["ffmpeg", "-i", "x"], 1, "a\nOption not found\n"),
    ModelError: ModelError("model file missing"),
    ChecksumMismatch: ChecksumMismatch("sha256 differs"),
    DeviceUnavailable: DeviceUnavailable("--device cuda: onnxruntime offers only CPU"),
    ConsentError: ConsentError("consent expired"),
    StorageError: StorageError("node abc cannot read /p", node="abc", path="/p"),
    ShardFailed: ShardFailed("shard 00001: boom", retryable=True),
    UnitFailed: UnitFailed("shard 00001 failed 3 times", unit="shard 00001", attempts=3),
    Cancelled: Cancelled("the job was cancelled", work_dir="/work"),
    UnexpectedError: UnexpectedError("unexpected KeyError: 'x'", log_path="/logs/e.log"),
    StageNotBuilt: StageNotBuilt("the rvc backend is not built yet"),
    AuditError: AuditError("cannot append to the audit log"),
    ManifestError: ManifestError("C2PA signing failed"),
    OperatorKeyError: OperatorKeyError("operator key missing"),
    GptSovitsRejected: GptSovitsRejected("sentence 2: GPT-SoVITS answered 400: bad language"),
    GptSovitsUnavailable: GptSovitsUnavailable("sentence 2: no GPT-SoVITS server at :9880"),
    ApiRefused: ApiRefused("the upload is not a video", status=415),
    RecordConflict: RecordConflict("job j1 has already ended"),
    IdempotencyConflict: IdempotencyConflict("Idempotency-Key k1 was used for another request"),
    IdentityInUse: IdentityInUse("identity p1 is used by 2 active jobs"),
    TooManyRequests: TooManyRequests("over 60 requests a minute", retry_after_s=12.5),
    QuotaExceeded: QuotaExceeded("4 jobs are already active", retry_after_s=30.0),
    ClusterUnavailable: ClusterUnavailable("the Ray cluster does not answer"),
}
RETRYABLE = {
    SourceUnavailable,
    ShardFailed,
    GptSovitsUnavailable,
    TooManyRequests,
    QuotaExceeded,
    ClusterUnavailable,
}


def test_every_farm_error_has_an_example() -> None:
    assert set(ERROR_EXAMPLES) == _every_farm_error()


@ray.remote(num_cpus=0)
class _Raiser:
    def raise_(self, error: BaseException) -> None:
        raise error


@pytest.mark.parametrize("cls", sorted(ERROR_EXAMPLES, key=lambda c: c.__name__))
def test_farm_errors_cross_an_actor_intact(cls: type[FarmError], tmp_path: Path) -> None:
    error = ERROR_EXAMPLES[cls]
    raiser = _Raiser.remote()  # type: ignore[attr-defined]
    with pytest.raises(ray.exceptions.RayTaskError) as info:
        ray.get(raiser.raise_.remote(error))
    back = unwrap(info.value, log_dir=tmp_path)
    assert type(back) is cls
    assert str(back) == str(error) and back.one_line() == error.one_line()
    assert vars(back) == vars(error)
    assert back.retryable == error.retryable
    assert back.retryable == (cls in RETRYABLE)
    ray.kill(raiser)


def test_an_unknown_error_becomes_one_line_and_a_logged_traceback(tmp_path: Path) -> None:
    raiser = _Raiser.remote()  # type: ignore[attr-defined]
    with pytest.raises(ray.exceptions.RayTaskError) as info:
        ray.get(raiser.raise_.remote(KeyError("missing-key")))
    back = unwrap(info.value, log_dir=tmp_path, what="shard 00004")
    assert isinstance(back, UnexpectedError) and not back.retryable
    assert "\n" not in back.one_line() and "shard 00004 failed with KeyError" in str(back)
    log = Path(back.log_path)
    text = log.read_text()
    assert log.parent == tmp_path and "\x1b[" not in text
    assert 'test_farm.py", line' in text and "KeyError: 'missing-key'" in text, text


# -- identical reruns ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def face_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_two_talker_clip(tmp_path_factory.mktemp("face-clip"))


def _face_spec(src: Path, out: Path, pack: Path, **cluster: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "input": src,
            "output": out,
            "face": {"identity": pack},
            # Forced splits inside each shot (with tracker context), and the real cut.
            "video": {"max_shard_s": 0.4, "min_shard_s": 0.2},
            "cluster": cluster,
        }
    )


def test_a_face_swap_job_renders_identically_whatever_the_workers(
    face_clip: Path, identity_pack: Path, tmp_path: Path
) -> None:
    one = run_on_ray(_face_spec(face_clip, tmp_path / "one.mp4", identity_pack, video_workers=1))
    assert one.frames == 50 and one.shards >= 5 and TWO_TALKER_CUT in one.scene_cuts
    assert one.frames_changed >= 0.9 * one.frames, "both talkers are swapped"
    reference = _packets(tmp_path / "one.mp4")
    two = run_on_ray(_face_spec(face_clip, tmp_path / "two.mp4", identity_pack, video_workers=2))
    assert len({w.pid for w in two.workers}) == 2
    assert _packets(tmp_path / "two.mp4") == reference
    chaos = ChaosSettings(marker_dir=tmp_path / "markers", crash_unit="shard 00002")
    spec = _face_spec(face_clip, tmp_path / "killed.mp4", identity_pack, video_workers=2)
    killed = run_on_ray(spec.model_copy(update={"chaos": chaos}))
    assert (tmp_path / "markers" / "crash-shard-00002").exists(), "a worker died mid-shard"
    assert killed.retries >= 1
    assert _packets(tmp_path / "killed.mp4") == reference
    # Execution settings are not the job's identity: same id and watermark, a new run each time.
    assert one.job_id == two.job_id == killed.job_id
    assert one.provenance.watermark_payload == two.provenance.watermark_payload
    assert len({one.run_id, two.run_id, killed.run_id}) == 3
    with AuditLog(farm_home() / "audit.sqlite") as audit:
        runs = {e.run_id: e.job_id for e in audit.entries()}
    assert all(runs.get(r.run_id) == one.job_id for r in (one, two, killed))


def test_the_next_job_gets_warm_workers_that_reconfigure(
    face_clip: Path, identity_pack: Path, tmp_path: Path
) -> None:
    first = run_on_ray(_face_spec(face_clip, tmp_path / "a.mp4", identity_pack, video_workers=2))
    spec = _face_spec(face_clip, tmp_path / "b.mp4", identity_pack, video_workers=2)
    other = spec.model_copy(update={"face": spec.face.model_copy(update={"faces": "largest"})})  # type: ignore[union-attr]
    second = run_on_ray(other)
    assert first.job_id != second.job_id, "other settings: another job"
    assert {w.pid for w in second.workers} == {w.pid for w in first.workers}, "same processes"
    # The face models (dlib's stack and YuNet) were loaded once per worker, for both jobs.
    assert all(w.model_loads == 2 for w in second.workers), second.workers


# -- a failure in one stage stops the other ---------------------------------------------------


@pytest.fixture(scope="module")
def speech_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_speech_clip(tmp_path_factory.mktemp("speech-clip"), 30)


def _voice_spec(src: Path, out: Path, pack: Path, chaos: ChaosSettings) -> JobSpec:
    return JobSpec.model_validate(
        {
            "input": src,
            "output": out,
            "face": {"identity": pack},
            "voice": {"mode": "vc"},
            "video": {"max_shard_s": 1.0, "min_shard_s": 0.2},
            # Without cancellation the hung unit would hold the job for five minutes.
            "cluster": {"shard_timeout_s": 300, "video_workers": 2},
            "chaos": chaos,
        }
    )


@pytest.mark.timeout(150)
@pytest.mark.parametrize(
    # Units go out in order (sentence 0, shard 00000, 00001, ...), two at a time per worker:
    # the failing one must not be queued on the hung worker behind the hanging one.
    ("fails", "hangs"),
    [("sentence 0", "shard 00000"), ("shard 00003", "sentence 0")],
)
def test_a_failing_stage_cancels_the_other(
    fails: str, hangs: str, speech_clip: Path, identity_pack: Path, tmp_path: Path
) -> None:
    chaos = ChaosSettings(
        marker_dir=tmp_path / "markers", fail_unit=fails, hang_unit=hangs, after_frames=1
    )
    events: list[dict[str, Any]] = []
    out = tmp_path / "out.mp4"
    with pytest.raises(ShardFailed, match=f"{fails}: injected failure"):
        run_on_ray(_voice_spec(speech_clip, out, identity_pack, chaos), on_event=events.append)
    assert (tmp_path / "markers" / f"hang-{hangs.replace(' ', '-')}").exists(), "it hung"
    done = [e for e in events if e["event"] in ("shard_done", "sentence_done")]
    assert len(done) < 10, "the job stopped at the failure, not after the other stage"
    assert events[-1]["event"] == "failed" and not out.exists()


# -- storage is checked, not assumed ----------------------------------------------------------


def test_a_node_that_cannot_reach_a_path_stops_the_job_before_any_work(tmp_path: Path) -> None:
    src = make_clip(ClipRecipe("storage", seconds=1.0, size="160x120"), tmp_path)
    missing = tmp_path / "models-not-mounted"
    spec = JobSpec.model_validate(
        {"input": src, "output": tmp_path / "o.mp4", "passthrough": True, "models_dir": missing}
    )
    events: list[dict[str, Any]] = []
    with pytest.raises(StorageError) as info:
        run_on_ray(spec, on_event=events.append)
    error = info.value
    assert error.path == str(missing) and error.node
    assert f"node {error.node}" in str(error) and "cannot read" in str(error)
    assert not [e for e in events if e["event"] == "shard_done"]
    assert not (tmp_path / "o.mp4").exists()


def test_worker_reports_its_node_and_device() -> None:
    from actors.worker import FarmWorker

    worker = ray.remote(FarmWorker).remote(1)
    info = ray.get(worker.describe.remote())
    assert info["device"] == "cpu" and info["gpu_ids"] == [] and info["pid"] != os.getpid()
    ray.kill(worker)
