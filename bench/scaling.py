"""Makespan of a job on a simulated multi-node cluster against the ideal schedule.

    .venv/bin/python -m bench.scaling [--nodes 2] [--seconds 30] [--shard-seconds 0.5]

Builds a `ray.cluster_utils.Cluster` (a head without CPUs plus N nodes, one fake GPU each), runs
a passthrough job with one GPU per worker through a job actor, once to start the fleet's workers
and once measured, and prints:

* makespan: wall time of the render stage (first unit submitted to last unit done);
* ideal: total shard work (the sum of each shard's own render time) / workers;
* ratio makespan / ideal (goal <= 1.25) and the scheduling overhead per shard (goal <= 0.1 s).

All nodes share this machine's cores, so absolute times mean little; the ratio is the point.
A benchmark, never a test.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from actors.job_actor import run_attached
from bench.common import use_bench_operator
from farm.media.ffmpeg import ffmpeg_binary, run_ffmpeg
from farm.spec import JobSpec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--shard-seconds", type=float, default=0.5)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="farm-scaling-") as tmp_name:
        tmp = Path(tmp_name)
        use_bench_operator(tmp / "farm-home")
        source = tmp / "source.mp4"
        run_ffmpeg([ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", f"testsrc2=size=640x360:rate=25:duration={args.seconds}",
                    "-c:v", "libx264", "-preset", "ultrafast", str(source)])  # fmt: skip
        cluster = Cluster(initialize_head=True,
                          head_node_args={"num_cpus": 0, "include_dashboard": False})  # fmt: skip
        for _ in range(args.nodes):
            cluster.add_node(num_cpus=1, num_gpus=1)
        ray.init(address=cluster.address, logging_level=logging.ERROR, namespace="syncfarm")
        cluster.wait_for_nodes()
        try:

            def spec(name: str) -> JobSpec:
                return JobSpec.model_validate({
                    "input": source, "output": tmp / name, "passthrough": True,
                    "video": {"max_shard_s": args.shard_seconds, "min_shard_s": 0.2},
                    "cluster": {"gpus_per_worker": 1, "max_inflight_per_worker": 2},
                    "report": {"judges": False},  # the farm's overhead, not the judges'
                })  # fmt: skip

            run_attached(spec("warmup.mp4"))
            report = run_attached(spec("out.mp4"))
        finally:
            ray.shutdown()
            cluster.shutdown()

    workers = min(len(report.workers), report.shards)
    makespan = report.stage_seconds["render_s"]
    work = report.shard_seconds_total
    ideal = work / workers
    result = {
        "nodes": args.nodes,
        "workers": workers,
        "shards": report.shards,
        "nodes_used": len(set(report.shard_workers.values())),
        "total_shard_work_s": round(work, 2),
        "ideal_s": round(ideal, 2),
        "makespan_s": round(makespan, 2),
        "makespan_over_ideal": round(makespan / ideal, 3),
        "overhead_per_shard_s": round((makespan * workers - work) / report.shards, 3),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
