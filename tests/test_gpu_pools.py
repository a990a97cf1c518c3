"""GPU-aware pools on a simulated cluster: a head and two nodes declaring fake GPUs.

Ray trusts the declared counts and assigns GPU ids (``CUDA_VISIBLE_DEVICES``) as on real
hardware; every worker reports the ids it was given, which its backends receive as its device.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from farm.spec import JobSpec
from tests.clips import ClipRecipe, make_clip, make_speech_clip
from tests.jobs import run_on_ray

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def gpu_cluster() -> Iterator[list[str]]:
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    nodes = [cluster.add_node(num_cpus=4, num_gpus=2) for _ in range(2)]
    ray.init(address=cluster.address, logging_level="ERROR", namespace="syncfarm")
    cluster.wait_for_nodes()
    yield [node.node_id for node in nodes]
    ray.shutdown()
    cluster.shutdown()


def test_half_gpus_give_eight_workers_two_per_gpu(gpu_cluster: list[str], tmp_path: Path) -> None:
    src = make_clip(ClipRecipe("gpu-pool", seconds=8.0, size="160x120"), tmp_path)
    spec = JobSpec.model_validate(
        {
            "input": src,
            "output": tmp_path / "out.mp4",
            "passthrough": True,
            "video": {"max_shard_s": 0.5, "min_shard_s": 0.2},
            "cluster": {"device": "cuda", "gpus_per_worker": 0.5, "cpus_per_worker": 1},
        }
    )
    # A first job starts the eight workers (on a loaded CI machine the last ones can come up
    # after a tiny job's last shard); the fleet keeps them, and the measured job uses all eight.
    run_on_ray(spec.model_copy(update={"output": tmp_path / "warm-up.mp4"}))
    report = run_on_ray(spec)
    assert report.device == "cuda"
    video = [w for w in report.workers if w.kind == "video"]
    assert len(video) == 8
    assert all(len(w.gpu_ids) == 1 and w.device == f"cuda:{w.gpu_ids[0]}" for w in video)
    per_gpu = Counter((w.node_id, w.gpu_ids[0]) for w in video)
    assert set(per_gpu.values()) == {2} and len(per_gpu) == 4, per_gpu
    assert {node for node, _ in per_gpu} == set(gpu_cluster)
    assert set(report.shard_workers.values()) <= set(gpu_cluster)


def test_voice_workers_and_the_neural_stack_get_their_gpus(
    gpu_cluster: list[str], identity_pack: Path, tmp_path: Path
) -> None:
    """Voice workers get the GPUs they ask for; the video workers' neural face stack is told
    the GPU Ray gave each of them. onnxruntime here has no CUDA: with --device auto each
    session falls back to the CPU, and the report carries the GPU id (what the CUDA provider
    would have got)."""
    from tests.face_onnx.models import identity_models_dir

    src = make_speech_clip(tmp_path, 3)
    models = tmp_path / "models"
    models.mkdir()
    spec = JobSpec.model_validate(
        {
            "input": src,
            "output": tmp_path / "out.mp4",
            "face": {"identity": identity_pack},
            "models_dir": identity_models_dir(models),
            "voice": {"mode": "vc"},
            "video": {"max_shard_s": 1.0, "min_shard_s": 0.2},
            "cluster": {"device": "auto", "gpus_per_worker": 0.5, "voice_gpus_per_worker": 1.0},
        }
    )
    report = run_on_ray(spec)
    voice = [w for w in report.workers if w.kind == "voice"]
    assert voice and all(len(w.gpu_ids) == 1 for w in voice), report.workers
    assert sum(w.units for w in voice) == len(report.voice.sentences) >= 1  # type: ignore[union-attr]
    assert all(w.node_id in gpu_cluster for w in voice)
    assert report.device == "cuda" and report.face_stack is not None
    assert report.face_stack.backend == "onnx"
    video = [w for w in report.workers if w.kind == "video" and w.units]
    fallbacks = [line for line in report.face_stack.execution if "offers no CUDA" in line]
    told = {line.split("GPU ")[1].split(" ")[0] for line in fallbacks}
    assert told and told <= {w.device for w in video}, (report.face_stack.execution, video)
