"""The job actor: one Ray actor per submitted job, owning all of it.

It runs `farm.pipeline.runner.execute_job` with the `RayRunner` in a thread of its own, so it
holds the plan, the ledger, the leased pools and every reference, and it answers, meanwhile:
``status`` (a `JobStatus`), ``events`` (long-poll for watchers), ``cancel`` and ``outcome``.

`farm run` (attached), `farm run --detach`, `farm batch`, a Ray Jobs entrypoint and the HTTP API
all create one with `submit_job` and follow it with `follow`; none of them runs a pipeline step.
A detached job actor (``lifetime="detached"``, named ``job-<run id>`` in the ``syncfarm``
namespace) keeps running when its submitter exits and stays to be asked about for
``finished_ttl_s`` after the end. An attached one fate-shares with its submitter.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.errors import SYSTEM_FAILURES
from actors.metrics import metrics_exporter
from actors.ray_runner import RayRunner
from actors.runtime import NAMESPACE
from farm.errors import Cancelled, FarmError, record_unexpected
from farm.pipeline.progress import (
    TERMINAL_EVENTS,
    Event,
    JobStatus,
    ProgressTracker,
)
from farm.pipeline.report import JobReport
from farm.pipeline.runner import execute_job, new_run_id
from farm.provenance.keys import farm_home
from farm.spec import JobSpec

log = logging.getLogger(__name__)

ACTOR_PREFIX = "job-"
MAX_EVENTS = 20_000
"""Lifecycle events kept for late watchers (progress events replace each other)."""


@dataclass(frozen=True)
class JobOutcome:
    """How a job ended: its report, or its error (picklable either way)."""

    status: JobStatus
    report: JobReport | None = None
    error: FarmError | None = None


class JobActor:
    """Owns one run of one job (a threaded actor: status and events answer while it runs)."""

    def __init__(
        self, spec: JobSpec, run_id: str, *, detached: bool = False, finished_ttl_s: float = 600.0
    ) -> None:
        self.spec = spec
        self.run_id = run_id
        self.detached = detached
        self.finished_ttl_s = finished_ttl_s
        self._tracker = ProgressTracker(
            run_id=run_id, input=str(spec.input), output=str(spec.output), detached=detached
        )
        self._exporter = metrics_exporter()
        self._events: list[Event] = []
        self._seq = 0
        self._changed = threading.Condition()
        self._cancel = threading.Event()
        self._report: JobReport | None = None
        self._error: FarmError | None = None
        self._thread = threading.Thread(target=self._main, name=f"job-{run_id}", daemon=True)
        self._thread.start()

    def _emit(self, event: Event) -> None:
        with self._changed:
            self._seq += 1
            event = {**event, "seq": self._seq}
            last = self._events[-1] if self._events else {}
            if event.get("event") == "progress" and last.get("event") == "progress":
                self._events.pop()  # only the newest progress matters to a late watcher
            self._events.append(event)
            if len(self._events) > MAX_EVENTS:
                del self._events[: len(self._events) - MAX_EVENTS]
            self._tracker.apply(event)
            if self._exporter is not None:  # in order, and without waiting for it
                self._exporter.record.remote(self.run_id, event)
            self._changed.notify_all()

    def _main(self) -> None:
        runner = RayRunner(self.run_id, log_dir=farm_home() / "logs")
        try:
            self._report = execute_job(
                self.spec, runner, run_id=self.run_id, on_event=self._emit, cancel=self._cancel
            )
        except Cancelled as exc:
            self._error = exc
            self._emit({"event": "cancelled", "error": exc.one_line(), "work_dir": exc.work_dir})
        except FarmError as exc:
            self._error = exc
            self._emit({"event": "failed", "error": exc.one_line()})
        except BaseException as exc:  # a bug: one line for the user, the traceback in a log
            self._error = record_unexpected(exc, farm_home() / "logs", what=f"job {self.run_id}")
            log.exception("job %s failed", self.run_id)
            self._emit({"event": "failed", "error": self._error.one_line()})
        finally:
            if self.detached:
                threading.Thread(target=self._expire, name="job-expiry", daemon=True).start()

    def _expire(self) -> None:
        time.sleep(self.finished_ttl_s)
        with contextlib.suppress(Exception):
            ray.get_runtime_context().current_actor.__ray_terminate__.remote()

    # -- what callers ask -----------------------------------------------------------------

    def status(self) -> JobStatus:
        with self._changed:
            return self._tracker.status()

    def events(self, after: int = 0, timeout_s: float = 5.0) -> list[Event]:
        """Events with ``seq > after``, waiting up to ``timeout_s`` for the first new one."""
        with self._changed:
            self._changed.wait_for(lambda: self._seq > after, timeout=timeout_s)
            return [e for e in self._events if e["seq"] > after]

    def cancel(self) -> None:
        """Stop the job: running units are cancelled, finished shards stay in the work dir."""
        self._cancel.set()

    def outcome(self, timeout_s: float = 0.0) -> JobOutcome | None:
        """The outcome once the job has ended (waiting up to ``timeout_s``), else None."""
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            return None
        return JobOutcome(self.status(), self._report, self._error)


def actor_name(run_id: str) -> str:
    return f"{ACTOR_PREFIX}{run_id}"


def submit_job(
    spec: JobSpec, *, detach: bool = False, run_id: str | None = None
) -> tuple[str, Any]:
    """Create the job actor for ``spec`` on this node (the paths the submitter checked are
    reachable here); return (run id, handle). The job starts at once."""
    run_id = run_id or new_run_id()
    here = ray.get_runtime_context().get_node_id()
    options: dict[str, Any] = {
        "name": actor_name(run_id),
        "namespace": NAMESPACE,
        "num_cpus": 0,
        "max_concurrency": 16,
        "max_restarts": 0,
        # Hard: Ray ignores soft affinity for zero-CPU actors.
        "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=here, soft=False),
    }
    if detach:
        options["lifetime"] = "detached"
    handle = ray.remote(JobActor).options(**options).remote(spec, run_id, detached=detach)
    return run_id, handle


def find_job(job: str) -> Any:
    """The live job actor for a run id, or for a job id (its newest run); `FarmError` if none."""
    with contextlib.suppress(ValueError):
        return ray.get_actor(actor_name(job), namespace=NAMESPACE)
    matches = [s for s in list_jobs() if s.job_id == job or s.run_id.startswith(job)]
    if not matches:
        raise FarmError(f"no job {job} on this cluster; `farm jobs` lists the live ones")
    newest = max(matches, key=lambda s: s.started_at)
    return ray.get_actor(actor_name(newest.run_id), namespace=NAMESPACE)


def list_jobs() -> list[JobStatus]:
    """Every job actor still alive on the cluster, with its status."""
    names = [
        entry["name"] if isinstance(entry, dict) else str(entry)
        for entry in ray.util.list_named_actors(all_namespaces=True)
        if not isinstance(entry, dict) or entry.get("namespace") == NAMESPACE
    ]
    handles = []
    for name in names:
        if name.startswith(ACTOR_PREFIX):
            with contextlib.suppress(ValueError):
                handles.append(ray.get_actor(name, namespace=NAMESPACE))
    statuses: list[Any] = []
    for handle in handles:
        with contextlib.suppress(Exception):
            statuses.append(ray.get(handle.status.remote(), timeout=10))
    return sorted(statuses, key=lambda s: s.started_at)


def follow(
    handle: Any,
    on_event: Callable[[Event], None],
    *,
    poll_s: float = 2.0,
    after: int = 0,
) -> JobOutcome:
    """Feed a job's events to ``on_event`` until it ends; return its outcome."""
    while True:
        try:
            events: list[Event] = ray.get(handle.events.remote(after, poll_s))
        except SYSTEM_FAILURES as exc:
            raise FarmError(
                f"the job's actor is gone ({type(exc).__name__}); its finished shards stay in its "
                "work directory: `farm resume WORK` finishes it"
            ) from None
        for event in events:
            after = max(after, int(event["seq"]))
            on_event(event)
        if any(e.get("event") in TERMINAL_EVENTS for e in events):
            break
    outcome: JobOutcome | None = ray.get(handle.outcome.remote(60.0))
    if outcome is None:
        raise FarmError("the job reported its end but did not stop; see its log")
    return outcome


def run_attached(spec: JobSpec, on_event: Callable[[Event], None] | None = None) -> JobReport:
    """Submit ``spec``, follow it to the end, and return its report or raise its error."""
    _, handle = submit_job(spec)
    try:
        outcome = follow(handle, on_event or (lambda event: None))
    finally:
        with contextlib.suppress(Exception):
            ray.kill(handle)
    if outcome.error is not None:
        raise outcome.error
    if outcome.report is None:
        raise FarmError("the job ended without a report")
    return outcome.report
