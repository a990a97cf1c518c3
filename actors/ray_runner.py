"""The Ray runner: `farm.pipeline.runner.Runner` on a Ray cluster.

Units run on workers leased from the fleet, in GPU-aware pools sized from the cluster
(`farm.pipeline.pools.plan_pools`); video and voice units run at the same time, and the first
failure retries cannot fix stops both. The reducer step runs in the fleet's warm reducer actor
on the job's own node. The job actor that calls `execute_job` with this runner owns every
reference.

Workers are leased as soon as the job starts (`start`), while the job actor probes and plans,
so their processes and models are ready when the first shard is.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ray

from actors.errors import is_system_failure, unwrap
from actors.fleet import alive_nodes, get_fleet
from actors.pool import UnitPool, WorkItem
from actors.worker import ProgressBoard
from farm.errors import Cancelled, FarmError
from farm.pipeline.pools import PoolPlan, PoolRequest, plan_pools
from farm.pipeline.progress import EventSink
from farm.pipeline.reduce import ReduceRequest
from farm.pipeline.report import JobReport
from farm.pipeline.runner import RunOutcome
from farm.pipeline.storage import StorageAccess
from farm.pipeline.units import Unit, UnitResult
from farm.processing import chain_can_use_gpu
from farm.render import ShardTask
from farm.spec import JobSpec

PROGRESS_EVERY_S = 0.5
LEASE_RETRY_S = 0.5
UNBOUNDED = 1 << 20
"""Units a job is assumed to have before it is planned (the pools are sized from the cluster)."""


class RayRunner:
    """Runs one job's units and reducer on the connected cluster."""

    def __init__(self, run_id: str, *, log_dir: Path, fleet: Any = None) -> None:
        self.run_id = run_id
        self.log_dir = log_dir
        self._fleet = fleet
        self._closed = threading.Event()
        self._acquiring: threading.Thread | None = None
        self._acquired: list[tuple[PoolRequest, list[tuple[str, Any]]]] = []
        self._pool_plan: PoolPlan | None = None
        self._acquire_error: BaseException | None = None
        self._reducer: Any = None

    @property
    def fleet(self) -> Any:
        if self._fleet is None:
            self._fleet = get_fleet()
        return self._fleet

    # -- acquiring workers ------------------------------------------------------------------

    def start(self, spec: JobSpec, cancel: threading.Event) -> None:
        """Begin leasing workers and the reducer in the background (returns at once)."""
        self._acquiring = threading.Thread(
            target=self._acquire, args=(spec, cancel), name="acquire-workers", daemon=True
        )
        self._acquiring.start()

    def _acquire(self, spec: JobSpec, cancel: threading.Event) -> None:
        try:
            here = ray.get_runtime_context().get_node_id()
            self._reducer = ray.get(self.fleet.reducer.remote(here))
            plan = plan_pools(
                spec.cluster,
                alive_nodes(),
                video_units=UNBOUNDED,
                voice_units=UNBOUNDED if spec.voice.mode != "keep" else 0,
                gpu_capable=chain_can_use_gpu(spec),
            )
            self._pool_plan = plan
            for request in plan.pools:
                self._acquired.append((request, self._lease(request, spec, cancel)))
        except BaseException as exc:
            self._acquire_error = exc

    def _lease(
        self, request: PoolRequest, spec: JobSpec, cancel: threading.Event
    ) -> list[tuple[str, Any]]:
        """At least one worker of the request (waiting while other jobs hold them)."""
        deadline = time.monotonic() + spec.cluster.actor_start_timeout_s
        while True:
            leased: list[tuple[str, Any]] = ray.get(
                self.fleet.lease.remote(
                    self.run_id, request.shape, request.count, spec.cluster.keep_workers_s
                )
            )
            if leased:
                return leased
            if cancel.is_set() or self._closed.is_set():
                raise Cancelled("the job was cancelled")
            if time.monotonic() > deadline:
                raise FarmError(
                    f"no {request.kind} worker ({request.shape.num_cpus} CPU, "
                    f"{request.shape.num_gpus} GPU) became free within "
                    f"{spec.cluster.actor_start_timeout_s:.0f} s; other jobs hold the cluster"
                )
            time.sleep(LEASE_RETRY_S)

    def _wait_acquired(self, spec: JobSpec, cancel: threading.Event) -> PoolPlan:
        if self._acquiring is None:
            self.start(spec, cancel)
        assert self._acquiring is not None
        while self._acquiring.is_alive():
            if cancel.is_set():
                raise Cancelled("the job was cancelled")
            self._acquiring.join(0.1)
        if self._acquire_error is not None:
            error = self._acquire_error
            if isinstance(error, FarmError):
                raise error
            raise unwrap(error, log_dir=self.log_dir, what="leasing workers") from None
        assert self._pool_plan is not None
        return self._pool_plan

    # -- the Runner protocol ------------------------------------------------------------------

    def run_units(
        self,
        spec: JobSpec,
        units: Sequence[Unit],
        access: StorageAccess,
        on_done: Callable[[UnitResult], None],
        on_event: EventSink,
        cancel: threading.Event,
    ) -> RunOutcome:
        plan = self._wait_acquired(spec, cancel)
        for warning in plan.warnings:
            on_event({"event": "warning", "message": warning})
        board = ProgressBoard.remote()  # type: ignore[attr-defined]
        spec_ref = ray.put(spec)  # once, not once per unit

        def on_retry(key: str, reason: str) -> None:
            on_event({"event": "retry", "unit": key, "reason": reason})

        pool = UnitPool(
            self.fleet,
            self.run_id,
            submit=lambda handle, unit: handle.run.remote(spec_ref, unit, board),
            access=access,
            log_dir=self.log_dir,
            max_inflight_per_worker=spec.cluster.max_inflight_per_worker,
            timeout_s=spec.cluster.shard_timeout_s,
            max_attempts=spec.cluster.max_attempts,
            start_timeout_s=spec.cluster.actor_start_timeout_s,
            on_retry=on_retry,
        )
        # Workers were leased before the job knew its units: keep no more than can be busy
        # (none for a stage with no units, e.g. a silent track), give the rest back at once.
        counts = Counter("video" if isinstance(u, ShardTask) else "voice" for u in units)
        surplus: list[str] = []
        for request, leased in self._acquired:
            takes = ("video", "voice") if request.kind == "any" else (request.kind,)
            useful = min(len(leased), sum(counts[k] for k in takes))
            if useful:
                pool.add(leased[:useful], request.kind, request.shape)
            surplus += [slot_id for slot_id, _ in leased[useful:]]
        if surplus:
            self.fleet.release.remote(self.run_id, None, surplus)
        last = 0.0

        def on_tick(queued: dict[str, int], inflight: dict[str, int], oldest_s: float) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last < PROGRESS_EVERY_S:
                return
            last = now
            try:
                active = ray.get(board.snapshot.remote(), timeout=5)
            except Exception:  # progress is best effort; the work is not
                active = {}
            on_event(
                {
                    "event": "progress",
                    "active": active,
                    "queued": queued,
                    "inflight": inflight,
                    "oldest_s": round(oldest_s, 3),
                    "timeout_s": spec.cluster.shard_timeout_s,
                }
            )

        try:
            pool.wait_ready(cancel, spec.cluster.actor_start_timeout_s)
            on_event(
                {
                    "event": "workers",
                    "device": plan.device,
                    "workers": [w.model_dump(mode="json") for w in pool.reports()],
                }
            )
            items = [
                WorkItem(u.key, u, "video" if isinstance(u, ShardTask) else "voice") for u in units
            ]
            pool.run(items, on_done, cancel, on_tick)
            return RunOutcome(retries=pool.retries, workers=pool.reports(), device=plan.device)
        finally:
            pool.stop()
            with contextlib.suppress(Exception):
                ray.kill(board)

    def reduce(self, request: ReduceRequest, cancel: threading.Event) -> JobReport:
        if self._reducer is None:
            here = ray.get_runtime_context().get_node_id()
            self._reducer = ray.get(self.fleet.reducer.remote(here))
        ref = self._reducer.reduce.remote(request)
        cancelled = False
        while not ray.wait([ref], timeout=0.5)[0]:
            if cancel.is_set() and not cancelled:
                # The reducer checks the flag before each step and last before its atomic
                # rename; once it has renamed, the job is done and the cancel came too late.
                ray.cancel(ref)
                cancelled = True
        try:
            report: JobReport = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            raise Cancelled("the job was cancelled") from None
        except Exception as exc:
            if is_system_failure(exc):
                self.fleet.forget_reducer.remote(ray.get_runtime_context().get_node_id())
            raise unwrap(exc, log_dir=self.log_dir, what="the reducer") from None
        return report

    def close(self) -> None:
        """Give back whatever this job still holds (also after a failure in planning)."""
        self._closed.set()
        if self._acquiring is not None:
            self._acquiring.join(30)
        if self._fleet is not None:
            with contextlib.suppress(Exception):
                self.fleet.release.remote(self.run_id)
