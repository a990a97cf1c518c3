"""Pool sizing from what the cluster has (pure): fractional GPUs, CPU nodes, voice workers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from farm.errors import SpecError
from farm.pipeline.pools import NodeResources, PoolRequest, WorkerShape, plan_pools
from farm.spec import ClusterSettings

GPU_NODES = [NodeResources("head", 1, 0), NodeResources("a", 4, 2), NodeResources("b", 4, 2)]


def _counts(pools: tuple[PoolRequest, ...]) -> dict[tuple[str, WorkerShape], int]:
    return {(p.kind, p.shape): p.count for p in pools}


def test_quarter_gpus_make_four_workers_per_gpu() -> None:
    nodes = [NodeResources("g", 16, 1)]
    plan = plan_pools(
        ClusterSettings(device="cuda", gpus_per_worker=0.25), nodes, video_units=50, voice_units=0
    )
    assert plan.device == "cuda"
    assert _counts(plan.pools) == {("video", WorkerShape(1.0, 0.25)): 4}


def test_half_gpus_on_two_nodes_and_cpu_workers_where_there_is_no_gpu() -> None:
    cuda = plan_pools(
        ClusterSettings(device="cuda", gpus_per_worker=0.5),
        GPU_NODES,
        video_units=40,
        voice_units=0,
    )
    assert _counts(cuda.pools) == {("video", WorkerShape(1.0, 0.5)): 8}
    auto = plan_pools(
        ClusterSettings(gpus_per_worker=0.5), GPU_NODES, video_units=40, voice_units=0
    )
    assert _counts(auto.pools) == {
        ("video", WorkerShape(1.0, 0.5)): 8,
        ("video", WorkerShape(1.0, 0.0)): 1,  # the head's CPU
    }


def test_a_cpu_cluster_shares_one_pool_between_video_and_voice() -> None:
    nodes = [NodeResources("n", 2, 0)]
    plan = plan_pools(ClusterSettings(), nodes, video_units=10, voice_units=4)
    assert plan.device == "cpu"
    assert _counts(plan.pools) == {("any", WorkerShape(1.0, 0.0)): 2}


def test_gpu_voice_workers_are_placed_first() -> None:
    plan = plan_pools(
        ClusterSettings(device="cuda", gpus_per_worker=0.5, voice_gpus_per_worker=1.0),
        GPU_NODES,
        video_units=40,
        voice_units=5,
    )
    counts = _counts(plan.pools)
    assert counts[("voice", WorkerShape(1.0, 1.0))] == 1
    assert counts[("video", WorkerShape(1.0, 0.5))] == 6


def test_no_more_workers_than_units_or_the_cap() -> None:
    nodes = [NodeResources("n", 16, 0)]
    assert _counts(plan_pools(ClusterSettings(), nodes, video_units=3, voice_units=0).pools) == {
        ("video", WorkerShape(1.0, 0.0)): 3
    }
    capped = plan_pools(ClusterSettings(video_workers=2), nodes, video_units=30, voice_units=0)
    assert _counts(capped.pools) == {("video", WorkerShape(1.0, 0.0)): 2}


def test_impossible_requests_are_clear_errors() -> None:
    nodes = [NodeResources("n", 2, 0)]
    with pytest.raises(SpecError, match="device 'cuda' but the cluster has no GPU"):
        plan_pools(ClusterSettings(device="cuda"), nodes, video_units=1, voice_units=0)
    with pytest.raises(SpecError, match="voice workers ask for GPUs"):
        plan_pools(ClusterSettings(voice_gpus_per_worker=1), nodes, video_units=1, voice_units=1)
    with pytest.raises(SpecError, match="no node has room for a video worker"):
        plan_pools(ClusterSettings(cpus_per_worker=4), nodes, video_units=1, voice_units=0)
    auto = plan_pools(ClusterSettings(gpus_per_worker=0.5), nodes, video_units=2, voice_units=0)
    assert auto.device == "cpu" and "no GPU" in auto.warnings[0]


@given(
    cpus=st.lists(st.integers(0, 16), min_size=1, max_size=5),
    gpus=st.lists(st.integers(0, 4), min_size=5, max_size=5),
    gpw=st.sampled_from([0.0, 0.25, 0.5, 1.0]),
    cpw=st.sampled_from([0.5, 1.0, 2.0]),
    video_units=st.integers(1, 64),
    voice_units=st.integers(0, 8),
)
def test_pools_never_ask_for_more_than_a_node_has(
    cpus: list[int], gpus: list[int], gpw: float, cpw: float, video_units: int, voice_units: int
) -> None:
    nodes = [NodeResources(f"n{i}", c, g) for i, (c, g) in enumerate(zip(cpus, gpus, strict=False))]
    cluster = ClusterSettings(gpus_per_worker=gpw, cpus_per_worker=cpw)
    try:
        plan = plan_pools(cluster, nodes, video_units=video_units, voice_units=voice_units)
    except SpecError:
        return  # no room: a clear error, checked above
    total_cpus = sum(p.shape.num_cpus * p.count for p in plan.pools)
    total_gpus = sum(p.shape.num_gpus * p.count for p in plan.pools)
    assert total_cpus <= sum(n.cpus for n in nodes) + 1e-9
    assert total_gpus <= sum(n.gpus for n in nodes) + 1e-9
    video = sum(p.count for p in plan.pools if p.kind in ("video", "any"))
    assert 1 <= video <= video_units + voice_units
    assert (plan.device == "cuda") == any(
        p.shape.num_gpus > 0 and p.kind != "voice" for p in plan.pools
    )


def test_a_gpu_node_without_cpu_room_leaves_cpu_workers_and_says_so() -> None:
    nodes = [NodeResources("gpu-no-cpu", 0, 1), NodeResources("cpu", 1, 0)]
    plan = plan_pools(ClusterSettings(gpus_per_worker=0.25, cpus_per_worker=0.5), nodes,
                      video_units=1, voice_units=0)  # fmt: skip
    assert plan.device == "cpu" and _counts(plan.pools) == {("video", WorkerShape(0.5, 0.0)): 1}
    assert "run on CPUs" in plan.warnings[0]
