"""Fault tolerance on a simulated 3-node cluster with fake GPUs: node loss, worker death, hangs.

Every disturbed run must produce the same video stream as an undisturbed one.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import av
import pytest
import ray
from ray.cluster_utils import Cluster

from farm.chaos import ChaosSettings
from farm.spec import JobSpec
from tests.clips import ClipRecipe, make_clip
from tests.jobs import run_on_ray

# A fault test that wedges must fail fast, not eat the CI budget.
pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]

CLIP = ClipRecipe("faults", fps="25", seconds=8.0, size="320x240", scene_seconds=None)


@pytest.fixture(scope="module")
def cluster() -> Any:
    # Head plus two nodes, one fake GPU each (Ray trusts the declared count).
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "num_gpus": 1, "include_dashboard": False},
    )
    workers = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    ray.init(address=cluster.address, logging_level="ERROR", namespace="syncfarm")
    cluster.wait_for_nodes()
    yield cluster, workers
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(CLIP, tmp_path_factory.mktemp("fault-clips"))


def _spec(src: Path, out: Path, **cluster: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "input": src,
            "output": out,
            "passthrough": True,
            "video": {"max_shard_s": 0.6, "min_shard_s": 0.2},
            "cluster": {"gpus_per_worker": 1, "max_inflight_per_worker": 1, **cluster},
        }
    )


def _packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(video=0) if p.size]


@pytest.fixture(scope="module")
def undisturbed(cluster: Any, source: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = tmp_path_factory.mktemp("reference") / "reference.mp4"
    summary = run_on_ray(_spec(source, out))
    return summary, _packets(out)


def test_shards_spread_across_nodes(undisturbed: Any) -> None:
    summary, _ = undisturbed
    nodes = set(summary.shard_workers.values())
    assert len(nodes) == 3, f"shards ran on {len(nodes)} nodes"
    assert summary.retries == 0


def test_worker_killed_mid_shard(undisturbed: Any, source: Path, tmp_path: Path) -> None:
    chaos = {"marker_dir": tmp_path / "markers", "crash_unit": "shard 00003", "after_frames": 1}
    spec = _spec(source, tmp_path / "out.mp4").model_copy(
        update={"chaos": ChaosSettings.model_validate(chaos)}
    )
    summary = run_on_ray(spec)
    assert (tmp_path / "markers" / "crash-shard-00003").exists(), "the fault was injected"
    assert summary.retries >= 1
    assert _packets(tmp_path / "out.mp4") == undisturbed[1]


def test_hung_worker_is_timed_out_and_rerun_elsewhere(
    undisturbed: Any, source: Path, tmp_path: Path
) -> None:
    chaos = {"marker_dir": tmp_path / "markers", "hang_unit": "shard 00002", "after_frames": 1}
    events: list[dict[str, Any]] = []
    spec = _spec(source, tmp_path / "out.mp4", shard_timeout_s=6).model_copy(
        update={"chaos": ChaosSettings.model_validate(chaos)}
    )
    summary = run_on_ray(spec, on_event=events.append)
    retries = [e for e in events if e["event"] == "retry"]
    assert any(e["unit"] == "shard 00002" and e["reason"] == "Timeout" for e in retries), retries
    assert _packets(tmp_path / "out.mp4") == undisturbed[1]
    assert summary.shards == undisturbed[0].shards


def test_node_removed_during_job(
    cluster: Any, undisturbed: Any, source: Path, tmp_path: Path
) -> None:
    handle, workers = cluster
    removed = threading.Event()

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "shard_done" and not removed.is_set():
            removed.set()
            handle.remove_node(workers[0])

    summary = run_on_ray(
        _spec(source, tmp_path / "out.mp4", actor_start_timeout_s=10), on_event=on_event
    )
    assert removed.is_set()
    assert _packets(tmp_path / "out.mp4") == undisturbed[1]
    assert summary.shards == undisturbed[0].shards
