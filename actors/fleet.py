"""The worker fleet: warm worker actors that jobs lease, so models load once per worker.

One named, detached `WorkerFleet` per cluster (namespace ``syncfarm``) creates `FarmWorker`
actors and lends them to job actors, and keeps one warm reducer actor per node that reduced: a
batch's next job, or the service's next request, gets workers that already hold their models.
Leases are exclusive while a job runs; a worker comes back idle when the job releases it and is
stopped after ``keep_workers_s`` without work.

Placement: the fleet counts the resources its own workers take on each node (from
``ray.nodes()``) and pins each new worker to the node with the most room for its shape (soft
affinity, so a replacement can land elsewhere when its node is gone). When nothing fits, idle
workers of other shapes are stopped to make room. A worker the job found dead or hung is
replaced in its slot.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.reducer import Reducer
from actors.runtime import NAMESPACE
from actors.worker import FarmWorker
from farm.pipeline.pools import NodeResources, WorkerShape

log = logging.getLogger(__name__)

FLEET_NAME = "fleet"
REAP_EVERY_S = 5.0


@dataclass
class _Slot:
    slot_id: str
    shape: WorkerShape
    node_id: str
    handle: Any
    leased_by: str | None = None
    idle_since: float = 0.0
    keep_s: float = 300.0


def alive_nodes() -> list[NodeResources]:
    """The cluster's live nodes and their total CPUs and GPUs."""
    nodes = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        resources = node.get("Resources", {})
        nodes.append(
            NodeResources(
                str(node["NodeID"]), float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
            )
        )
    return nodes


class WorkerFleet:
    """Creates, lends, replaces and stops worker actors (a threaded actor: jobs call at once)."""

    def __init__(self) -> None:
        self._slots: dict[str, _Slot] = {}
        self._reducers: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap_loop, name="fleet-reaper", daemon=True)
        self._reaper.start()

    # -- placement ------------------------------------------------------------------------

    def _free(self, nodes: list[NodeResources]) -> dict[str, list[float]]:
        free = {n.node_id: [n.cpus, n.gpus] for n in nodes}
        for slot in self._slots.values():
            if slot.node_id in free:
                free[slot.node_id][0] -= slot.shape.num_cpus
                free[slot.node_id][1] -= slot.shape.num_gpus
        return free

    def _room(self, shape: WorkerShape, nodes: list[NodeResources]) -> str | None:
        free = self._free(nodes)
        room = [(shape.fits(*free[n]), n) for n in sorted(free) if shape.fits(*free[n]) > 0]
        return max(room)[1] if room else None

    def _evict_for(self, shape: WorkerShape, nodes: list[NodeResources]) -> str | None:
        """Stop idle workers of other shapes, least recently used first, until one fits."""
        idle = sorted(
            (s for s in self._slots.values() if s.leased_by is None and s.shape != shape),
            key=lambda s: s.idle_since,
        )
        for slot in idle:
            self._stop_slot(slot)
            node = self._room(shape, nodes)
            if node is not None:
                return node
        return None

    def _create(self, shape: WorkerShape, node_id: str, run_id: str) -> _Slot:
        threads = max(1, math.floor(shape.num_cpus))
        options: dict[str, Any] = {
            "num_cpus": shape.num_cpus,
            "max_restarts": 0,  # the job replaces a dead worker itself (and counts the attempt)
            "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node_id, soft=True),
        }
        if shape.num_gpus > 0:
            options["num_gpus"] = shape.num_gpus
        handle = ray.remote(FarmWorker).options(**options).remote(threads)
        slot = _Slot(uuid.uuid4().hex[:8], shape, node_id, handle, leased_by=run_id)
        self._slots[slot.slot_id] = slot
        return slot

    def _stop_slot(self, slot: _Slot) -> None:
        with contextlib.suppress(Exception):
            ray.kill(slot.handle, no_restart=True)
        self._slots.pop(slot.slot_id, None)

    # -- the lending API --------------------------------------------------------------------

    def lease(
        self, run_id: str, shape: WorkerShape, count: int, keep_s: float = 300.0
    ) -> list[tuple[str, Any]]:
        """Up to ``count`` workers of ``shape`` for ``run_id``: idle ones first, then new ones
        where the cluster has room. May return fewer (or none): the caller waits and asks again."""
        with self._lock:
            granted: list[_Slot] = []
            for slot in self._slots.values():
                if len(granted) >= count:
                    break
                if slot.leased_by is None and slot.shape == shape:
                    slot.leased_by = run_id
                    granted.append(slot)
            nodes = alive_nodes() if len(granted) < count else []
            while len(granted) < count:
                node = self._room(shape, nodes) or self._evict_for(shape, nodes)
                if node is None:
                    break
                granted.append(self._create(shape, node, run_id))
            for slot in granted:
                slot.keep_s = keep_s
            return [(s.slot_id, s.handle) for s in granted]

    def release(
        self, run_id: str, stop: list[str] | None = None, only: list[str] | None = None
    ) -> None:
        """Give back the workers of ``run_id`` (all, or ``only`` these); the ones in ``stop``
        (hung, or deaf to cancellation) are stopped instead."""
        with self._lock:
            now = time.monotonic()
            for slot in list(self._slots.values()):
                if slot.leased_by != run_id or (only is not None and slot.slot_id not in only):
                    continue
                if stop and slot.slot_id in stop:
                    self._stop_slot(slot)
                else:
                    slot.leased_by, slot.idle_since = None, now

    def replace(self, run_id: str, slot_id: str, shape: WorkerShape) -> tuple[str, Any] | None:
        """Stop a dead or hung worker and start a fresh one for the same job (any node)."""
        with self._lock:
            old = self._slots.get(slot_id)
            if old is not None:
                self._stop_slot(old)
            nodes = alive_nodes()
            node = self._room(shape, nodes) or self._evict_for(shape, nodes)
            if node is None:
                return None
            slot = self._create(shape, node, run_id)
            return slot.slot_id, slot.handle

    def drop(self, run_id: str, slot_id: str) -> None:
        """Forget a worker that never started (its node is gone and nothing else fits)."""
        with self._lock:
            slot = self._slots.get(slot_id)
            if slot is not None and slot.leased_by == run_id:
                self._stop_slot(slot)

    def reducer(self, node_id: str) -> Any:
        """The warm reducer actor of a node (started on first use, kept for the next jobs)."""
        with self._lock:
            handle = self._reducers.get(node_id)
            if handle is None:
                handle = (
                    ray.remote(Reducer)
                    .options(
                        num_cpus=0,
                        max_restarts=0,
                        max_concurrency=8,
                        scheduling_strategy=NodeAffinitySchedulingStrategy(
                            node_id=node_id, soft=False
                        ),
                    )
                    .remote()
                )
                self._reducers[node_id] = handle
            return handle

    def forget_reducer(self, node_id: str) -> None:
        """Drop a node's reducer that died (the next job starts a new one)."""
        with self._lock:
            handle = self._reducers.pop(node_id, None)
            if handle is not None:
                with contextlib.suppress(Exception):
                    ray.kill(handle, no_restart=True)

    def slots(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "slot": s.slot_id,
                    "shape": [s.shape.num_cpus, s.shape.num_gpus],
                    "node_id": s.node_id,
                    "leased_by": s.leased_by,
                }
                for s in self._slots.values()
            ]

    def shutdown(self) -> None:
        with self._lock:
            for slot in list(self._slots.values()):
                self._stop_slot(slot)
            for handle in self._reducers.values():
                with contextlib.suppress(Exception):
                    ray.kill(handle, no_restart=True)
            self._reducers.clear()

    # -- idle workers ---------------------------------------------------------------------

    def _reap_loop(self) -> None:
        while not self._stop.wait(REAP_EVERY_S):
            with self._lock:
                now = time.monotonic()
                for slot in list(self._slots.values()):
                    if slot.leased_by is None and now - slot.idle_since > slot.keep_s:
                        log.info("stopping idle worker %s", slot.slot_id)
                        self._stop_slot(slot)


HEAD_RESOURCE = "node:__internal_head__"
"""Ray's marker resource of the head node."""


def get_fleet() -> Any:
    """The cluster's fleet, created on first use (detached: it outlives any one job).

    It lives on the head node: losing a worker node must not take every worker with it (they
    are the fleet's actors), and losing the head ends the cluster anyway. A zero-CPU actor
    ignores soft node affinity, hence the head's marker resource.
    """
    fleet_cls = ray.remote(WorkerFleet)
    return fleet_cls.options(
        name=FLEET_NAME,
        namespace=NAMESPACE,
        get_if_exists=True,
        lifetime="detached",
        num_cpus=0,
        max_restarts=-1,
        max_concurrency=64,
        resources={HEAD_RESOURCE: 0.001},
    ).remote()
