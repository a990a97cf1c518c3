"""The job's side of its pools: leased workers, bounded in-flight units, timeouts, retries.

Ray's `ActorPool` can wedge when an actor dies (ray#50313), so this pool keeps its own books:

* each leased worker answers ``describe`` before it takes work, then proves its node reaches the
  job's storage (once per node);
* every unit has a deadline; a hung worker is replaced in its slot (by the fleet) and its units
  go elsewhere; a dead worker or node is replaced the same way;
* a `FarmError` marked retryable is tried again up to ``max_attempts``; any other failure stops
  the pool: in-flight units are cancelled (workers check the flag between batches), queued ones
  are never sent, and the error is raised once, unwrapped;
* a replacement that cannot be placed within ``start_timeout_s`` is dropped while others work.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import ray

from actors.errors import is_system_failure, unwrap
from farm.errors import Cancelled, FarmError, UnitFailed
from farm.pipeline.pools import PoolKind, WorkerShape
from farm.pipeline.report import WorkerReport
from farm.pipeline.storage import StorageAccess, storage_error
from farm.pipeline.units import Unit, UnitResult

log = logging.getLogger(__name__)

UnitKind = Literal["video", "voice"]
STOP_GRACE_S = 5.0
"""How long cancelled units get to notice before their workers are stopped."""


@dataclass
class WorkItem:
    key: str
    unit: Unit
    kind: UnitKind
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class Slot:
    """One leased worker and what the pool knows of it."""

    slot_id: str
    handle: Any
    kind: PoolKind
    shape: WorkerShape
    since: float
    ready_ref: Any = None
    """``describe`` (then ``check_storage``) while the worker is on probation."""
    checking: bool = False
    info: dict[str, Any] | None = None
    dropped: bool = False
    units: int = 0

    def takes(self, kind: UnitKind) -> bool:
        return not self.dropped and self.kind in (kind, "any")


@dataclass
class _Inflight:
    item: WorkItem
    slot: Slot
    started: float


def _by_kind(kinds: Iterable[UnitKind]) -> dict[str, int]:
    counts = {"video": 0, "voice": 0}
    for kind in kinds:
        counts[kind] += 1
    return counts


class UnitPool:
    """Runs work items on leased worker slots, replacing dead or hung workers through the fleet."""

    def __init__(
        self,
        fleet: Any,
        run_id: str,
        *,
        submit: Callable[[Any, Unit], Any],
        access: StorageAccess,
        log_dir: Path,
        max_inflight_per_worker: int = 2,
        timeout_s: float = 600.0,
        max_attempts: int = 3,
        start_timeout_s: float = 60.0,
        on_retry: Callable[[str, str], None] | None = None,
    ) -> None:
        self.fleet = fleet
        self.run_id = run_id
        self._submit = submit
        self._access = access
        self._log_dir = log_dir
        self.max_inflight = max_inflight_per_worker
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.start_timeout_s = start_timeout_s
        self._on_retry = on_retry
        self.slots: list[Slot] = []
        self.retries = 0
        self._checked_nodes: set[str] = set()
        self._inflight: dict[Any, _Inflight] = {}

    # -- slots ------------------------------------------------------------------------------

    def add(self, leased: list[tuple[str, Any]], kind: PoolKind, shape: WorkerShape) -> None:
        now = time.monotonic()
        for slot_id, handle in leased:
            slot = Slot(slot_id, handle, kind, shape, now, ready_ref=handle.describe.remote())
            self.slots.append(slot)

    def _replace(self, slot: Slot, reason: str) -> None:
        """A fresh worker in a dead or hung one's slot; its units are queued again by the caller."""
        log.warning("worker %s: %s; replacing it", slot.slot_id, reason)
        replacement = ray.get(self.fleet.replace.remote(self.run_id, slot.slot_id, slot.shape))
        if replacement is None:
            slot.dropped = True
            return
        slot.slot_id, slot.handle = replacement
        slot.since = time.monotonic()
        slot.ready_ref = slot.handle.describe.remote()
        slot.checking = False
        slot.info = None

    def _probe(self) -> None:
        """Move workers off probation as they answer; drop replacements that never start."""
        for slot in self.slots:
            if slot.ready_ref is None or slot.dropped:
                continue
            done, _ = ray.wait([slot.ready_ref], timeout=0)
            if not done:
                others = any(s.info and s.ready_ref is None and not s.dropped for s in self.slots)
                if others and time.monotonic() - slot.since > self.start_timeout_s:
                    log.warning(
                        "worker %s could not be placed in %.0f s; dropping it",
                        slot.slot_id,
                        self.start_timeout_s,
                    )
                    self.fleet.drop.remote(self.run_id, slot.slot_id)
                    slot.dropped = True
                continue
            try:
                answer = ray.get(slot.ready_ref, timeout=30)
            except Exception as exc:
                if is_system_failure(exc):
                    self._replace(slot, f"{type(exc).__name__} while starting")
                    continue
                raise unwrap(exc, log_dir=self._log_dir, what="starting a worker") from None
            if not slot.checking:
                slot.info = answer
                if answer["node_id"] in self._checked_nodes:
                    slot.ready_ref = None
                else:
                    slot.checking = True
                    slot.ready_ref = slot.handle.check_storage.remote(self._access)
            else:
                if answer:
                    info = slot.info or {}
                    raise storage_error(str(info.get("node_id", "?"))[:12], answer)
                self._checked_nodes.add(str((slot.info or {})["node_id"]))
                slot.ready_ref, slot.checking = None, False

    def usable(self) -> list[Slot]:
        return [s for s in self.slots if s.ready_ref is None and not s.dropped and s.info]

    def wait_ready(self, cancel: Any, timeout_s: float) -> None:
        """Block until one worker is usable (storage proven), or raise."""
        deadline = time.monotonic() + timeout_s
        while not self.usable():
            if cancel.is_set():
                raise Cancelled("the job was cancelled")
            if all(s.dropped for s in self.slots):
                raise FarmError("no worker of this job could be started; check the cluster")
            if time.monotonic() > deadline:
                raise FarmError(
                    f"no worker started within {timeout_s:.0f} s; the cluster may lack the "
                    "requested resources (see --cpus-per-worker, --gpus-per-worker)"
                )
            self._probe()
            time.sleep(0.05)

    def reports(self) -> list[WorkerReport]:
        return [
            WorkerReport(
                slot=s.slot_id,
                node_id=str(s.info["node_id"]),
                pid=int(s.info["pid"]),
                device=str(s.info["device"]),
                gpu_ids=[str(g) for g in s.info["gpu_ids"]],
                kind=s.kind,
                units=s.units,
                model_loads=int(s.info.get("model_loads", 0)),
            )
            for s in self.slots
            if s.info is not None
        ]

    # -- the work loop ----------------------------------------------------------------------

    def _retry(self, item: WorkItem, reason: str, queue: list[WorkItem]) -> None:
        item.errors.append(reason)
        if item.attempts >= self.max_attempts:
            raise UnitFailed(
                f"{item.key} failed {item.attempts} times; last error: {reason}",
                unit=item.key,
                attempts=item.attempts,
            )
        self.retries += 1
        if self._on_retry is not None:
            self._on_retry(item.key, reason.split(":")[0])
        log.warning("%s: submitting again after: %s", item.key, reason)
        queue.insert(0, item)

    def _requeue_slot(self, slot: Slot, reason: str, queue: list[WorkItem]) -> None:
        held = [ref for ref, entry in self._inflight.items() if entry.slot is slot]
        for ref in held:
            entry = self._inflight.pop(ref)
            self._retry(entry.item, reason, queue)
        self._replace(slot, reason)

    def _dispatch(self, queue: list[WorkItem]) -> None:
        load = {id(s): 0 for s in self.slots}
        for entry in self._inflight.values():
            load[id(entry.slot)] += 1
        usable = self.usable()
        index = 0
        while index < len(queue):
            item = queue[index]
            open_slots = [
                s for s in usable if s.takes(item.kind) and load[id(s)] < self.max_inflight
            ]
            if not open_slots:
                index += 1
                continue
            slot = min(open_slots, key=lambda s: load[id(s)])
            queue.pop(index)
            item.attempts += 1
            ref = self._submit(slot.handle, item.unit)
            self._inflight[ref] = _Inflight(item, slot, time.monotonic())
            load[id(slot)] += 1

    def run(
        self,
        items: list[WorkItem],
        on_done: Callable[[UnitResult], None],
        cancel: Any,
        on_tick: Callable[[dict[str, int], dict[str, int], float], None] | None = None,
        poll_s: float = 0.05,
    ) -> None:
        """Run every item to success; raise the first failure retries cannot fix."""
        queue = list(items)
        for kind in {item.kind for item in items}:
            if not any(s.takes(kind) for s in self.slots):
                raise FarmError(f"no worker of this job takes {kind} units")
        while queue or self._inflight:
            if cancel.is_set():
                raise Cancelled("the job was cancelled")
            self._probe()
            self._dispatch(queue)
            if on_tick is not None:
                now = time.monotonic()
                on_tick(
                    _by_kind(item.kind for item in queue),
                    _by_kind(e.item.kind for e in self._inflight.values()),
                    max((now - e.started for e in self._inflight.values()), default=0.0),
                )
            if not self._inflight:
                time.sleep(poll_s)  # every slot is on probation (starting or replaced)
                continue
            ready, _ = ray.wait(list(self._inflight), num_returns=1, timeout=poll_s)
            for ref in ready:
                entry = self._inflight.pop(ref, None)
                if entry is None:
                    continue
                try:
                    result = ray.get(ref, timeout=60)
                except Exception as exc:
                    if is_system_failure(exc):
                        # The worker (or its node) is gone: a fresh one takes its slot, and
                        # everything it held runs again.
                        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
                        self._retry(entry.item, reason, queue)
                        self._requeue_slot(entry.slot, reason, queue)
                        continue
                    error = unwrap(exc, log_dir=self._log_dir, what=entry.item.key)
                    if error.retryable:
                        self._retry(entry.item, f"{type(error).__name__}: {error}", queue)
                        continue
                    raise error from None
                entry.slot.units += 1
                on_done(result)
            now = time.monotonic()
            hung = {
                id(e.slot): e.slot
                for e in self._inflight.values()
                if now - e.started > self.timeout_s
            }
            for slot in hung.values():
                self._requeue_slot(slot, f"Timeout: no result within {self.timeout_s:.0f} s", queue)

    def stop(self) -> None:
        """Cancel what is still running, wait a little, give every worker back to the fleet.

        Workers whose units did not stop in time (hung, or deaf to cancellation) are stopped;
        the others, still starting ones included, stay warm for the next job.
        """
        refs = list(self._inflight)
        for ref in refs:
            ray.cancel(ref)
        stuck: set[str] = set()
        if refs:
            _, pending = ray.wait(refs, num_returns=len(refs), timeout=STOP_GRACE_S)
            stuck = {self._inflight[ref].slot.slot_id for ref in pending}
        self._inflight.clear()
        self.fleet.release.remote(self.run_id, sorted(stuck))
        self.slots = []
