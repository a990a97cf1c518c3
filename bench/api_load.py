"""The HTTP API under load on 127.0.0.1: clients polling job status while jobs are submitted.

    .venv/bin/python -m bench.api_load [--clients 50] [--jobs 5] [--polls 40]

Starts the API on Ray Serve on an embedded cluster, makes a token and one finished job, then
runs, in the same process against the same server:

- baseline: ``--clients`` clients each polling ``GET /v1/jobs/{id}`` ``--polls`` times, no job
  running;
- loaded: the same polls while ``--jobs`` passthrough jobs are submitted (by allow-listed URI)
  and run; each client polls the jobs submitted so far, then every job is followed to its end.

Prints the errors (any answer but 200 to a poll, 202 to a submission, or a job that did not
succeed), p50/p95/p99 status latency of both runs and the loaded/baseline p99 ratio. The rate
limit is turned off (``rate_limit_per_minute: 0``) and the quota raised to ``--jobs``: one
token polls here for what would be many studios. A benchmark: it reports, it does not assert.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ENDED = ("succeeded", "failed", "cancelled")


@dataclass
class LoadResult:
    """What one load run saw: every poll's latency and every error, as one line each."""

    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    jobs: dict[str, str] = field(default_factory=dict)  # job id -> its final state

    def percentile(self, q: float) -> float:
        """The ``q`` quantile (0..1) of the poll latencies, nearest rank."""
        ordered = sorted(self.latencies_s)
        if not ordered:
            return float("nan")
        rank = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
        return ordered[rank]

    def summary(self) -> dict[str, Any]:
        return {
            "polls": len(self.latencies_s),
            "errors": len(self.errors),
            "first_errors": self.errors[:5],
            "jobs": self.jobs,
            **{f"p{q}_ms": round(self.percentile(q / 100) * 1000, 1) for q in (50, 95, 99)},
        }


async def _poll(
    client: httpx.AsyncClient,
    job_ids: list[str],
    polls: int,
    result: LoadResult,
    offset: int,
) -> None:
    for i in range(polls):
        job_id = job_ids[(offset + i) % len(job_ids)]
        started = time.perf_counter()
        try:
            answer = await client.get(f"/v1/jobs/{job_id}")
        except httpx.HTTPError as exc:
            result.errors.append(f"GET {job_id}: {type(exc).__name__}: {exc}")
            continue
        result.latencies_s.append(time.perf_counter() - started)
        if answer.status_code != 200:
            result.errors.append(f"GET {job_id}: {answer.status_code} {answer.text[:200]}")


async def _submit(
    client: httpx.AsyncClient, settings: dict[str, Any], job_ids: list[str], result: LoadResult
) -> None:
    answer = await client.post("/v1/jobs", data={"settings": json.dumps(settings)})
    if answer.status_code != 202:
        result.errors.append(f"POST /v1/jobs: {answer.status_code} {answer.text[:200]}")
        return
    job_ids.append(answer.json()["job_id"])


async def _follow(client: httpx.AsyncClient, job_id: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = await client.get(f"/v1/jobs/{job_id}")
        if answer.status_code == 200 and answer.json()["state"] in ENDED:
            return str(answer.json()["state"])
        await asyncio.sleep(0.5)
    return "not ended in time"


async def _load(
    base_url: str,
    headers: dict[str, str],
    *,
    clients: int,
    polls: int,
    poll_jobs: Sequence[str],
    submissions: Sequence[dict[str, Any]],
    job_timeout_s: float,
) -> LoadResult:
    if clients and polls and not poll_jobs:
        raise ValueError("polling needs at least one job id to poll (poll_jobs)")
    result = LoadResult()
    job_ids = list(poll_jobs)
    limits = httpx.Limits(max_connections=clients + len(submissions) + 1)
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=60
    ) as client:
        submitted_before = len(job_ids)
        pollers = [_poll(client, job_ids, polls, result, i) for i in range(clients)]
        submits = [_submit(client, s, job_ids, result) for s in submissions]
        await asyncio.gather(*pollers, *submits)
        for job_id in job_ids[submitted_before:]:
            result.jobs[job_id] = await _follow(client, job_id, job_timeout_s)
    for job_id, state in result.jobs.items():
        if state != "succeeded":
            result.errors.append(f"job {job_id} ended {state}")
    return result


def poll_while_submitting(
    base_url: str,
    headers: dict[str, str],
    *,
    clients: int,
    polls: int,
    poll_jobs: Sequence[str],
    submissions: Sequence[dict[str, Any]] = (),
    job_timeout_s: float = 600,
) -> LoadResult:
    """``clients`` concurrent clients each polling ``polls`` times (round robin over
    ``poll_jobs`` and the jobs submitted so far) while ``submissions`` (JobRequest settings)
    are posted; then each submitted job is followed until it ends."""
    return asyncio.run(
        _load(
            base_url,
            headers,
            clients=clients,
            polls=polls,
            poll_jobs=poll_jobs,
            submissions=submissions,
            job_timeout_s=job_timeout_s,
        )
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--polls", type=int, default=40, help="polls per client and run")
    parser.add_argument(
        "--clip", type=Path, default=Path("../shared/media/video/grid_jumpcut_same_speaker_6s.mp4")
    )
    parser.add_argument("--num-cpus", type=int, default=None)
    args = parser.parse_args(argv)

    import ray
    from ray import serve

    from bench.common import use_bench_operator
    from deploy.auth import create_token, load_pepper
    from deploy.db.store import RecordStore
    from deploy.serve import APP_NAME, app_builder
    from deploy.settings import load_settings

    clip = args.clip.resolve()
    if not clip.is_file():
        print(f"--clip {clip}: no such file", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="farm-api-load-") as tmp:
        home = Path(tmp)
        use_bench_operator(home)
        api_args = {
            "home": str(home / "api"),
            "input_roots": [str(clip.parent)],
            "rate_limit_per_minute": 0,
            "max_active_jobs": max(4, args.jobs + 1),
        }
        settings = load_settings(api_args)
        store = RecordStore(settings.records_url)
        made = create_token("load", ["submit", "read"], load_pepper(home))
        store.add_token(made.record)
        store.close()
        headers = {"Authorization": f"Bearer {made.token}"}
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False)
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            serve.run(app_builder(api_args), name=APP_NAME, route_prefix="/")
            job = {"passthrough": True, "report": {"judges": False}, "input_uri": clip.as_uri()}
            first = poll_while_submitting(
                base, headers, clients=1, polls=0, poll_jobs=[], submissions=[job]
            )
            if first.errors:
                print(f"the first job failed: {first.errors}", file=sys.stderr)
                return 1
            seed = list(first.jobs)
            baseline = poll_while_submitting(
                base, headers, clients=args.clients, polls=args.polls, poll_jobs=seed
            )
            loaded = poll_while_submitting(
                base,
                headers,
                clients=args.clients,
                polls=args.polls,
                poll_jobs=seed,
                submissions=[job] * args.jobs,
            )
        finally:
            serve.shutdown()
            ray.shutdown()
    report = {
        "clients": args.clients,
        "jobs": args.jobs,
        "polls_per_client": args.polls,
        "baseline": baseline.summary(),
        "loaded": loaded.summary(),
        "p99_ratio_loaded_over_baseline": round(
            loaded.percentile(0.99) / baseline.percentile(0.99), 2
        ),
    }
    print(json.dumps(report, indent=2))
    return 1 if baseline.errors or loaded.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
