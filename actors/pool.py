"""An actor pool the orchestrator owns: bounded in-flight work, timeouts, re-submission.

Ray's `ActorPool` can wedge when an actor dies (ray#50313), so this pool keeps its own books:
every submitted task has a deadline; a dead actor's tasks are submitted again on another actor;
a hung actor is killed (and restarted by Ray) and its tasks go elsewhere; an application error
marked retryable is tried again up to ``max_attempts``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import ray
import ray.exceptions

from farm.errors import FarmError, ShardFailed

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# Failures of the machinery (process, node, object), never of the work itself.
_SYSTEM_ERRORS: tuple[type[BaseException], ...] = (
    ray.exceptions.RayActorError,
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.ObjectLostError,
    ray.exceptions.NodeDiedError,
    ray.exceptions.OwnerDiedError,
    ray.exceptions.TaskCancelledError,
)


@dataclass
class WorkItem(Generic[T]):
    key: str
    payload: T
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class _Inflight(Generic[T]):
    item: WorkItem[T]
    actor_index: int
    started: float


class PoolFailed(FarmError):
    """A work item failed for good (non-retryable error, or out of attempts)."""


class ActorPool(Generic[T, R]):
    """Runs work items on a fixed set of actors, replacing dead or hung ones."""

    def __init__(
        self,
        make_actor: Callable[[], Any],
        size: int,
        *,
        submit: Callable[[Any, T], ray.ObjectRef],
        max_inflight_per_actor: int = 2,
        timeout_s: float = 600.0,
        max_attempts: int = 3,
        on_retry: Callable[[str, str], None] | None = None,
        actor_start_timeout_s: float = 60.0,
    ) -> None:
        if size < 1:
            raise ValueError("pool size must be at least 1")
        self._make_actor = make_actor
        self._submit = submit
        self.actors: list[Any] = [make_actor() for _ in range(size)]
        self.max_inflight = max_inflight_per_actor
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self._on_retry = on_retry
        self.actor_start_timeout_s = actor_start_timeout_s
        # Replacement actors are on probation until they answer: one that cannot be placed
        # (its node is gone and nothing else fits) is dropped instead of holding work forever.
        self._probation: dict[int, tuple[ray.ObjectRef, float]] = {}
        self.retries = 0
        self.replaced = 0
        self._dropped: set[int] = set()

    def _load(self, inflight: dict[ray.ObjectRef, _Inflight[T]]) -> list[int]:
        load = [0] * len(self.actors)
        for entry in inflight.values():
            load[entry.actor_index] += 1
        return load

    def _retry(self, item: WorkItem[T], reason: str, queue: deque[WorkItem[T]]) -> None:
        item.errors.append(reason)
        if item.attempts >= self.max_attempts:
            raise PoolFailed(f"{item.key} failed {item.attempts} times; last error: {reason}")
        self.retries += 1
        if self._on_retry is not None:
            self._on_retry(item.key, reason.split(":")[0])
        log.warning("%s: submitting again after: %s", item.key, reason)
        queue.appendleft(item)

    def _replace_actor(
        self,
        index: int,
        inflight: dict[ray.ObjectRef, _Inflight[T]],
        queue: deque[WorkItem[T]],
        reason: str,
    ) -> None:
        """Kill an actor, start a fresh one in its slot, and re-queue everything it held."""
        with contextlib.suppress(Exception):  # already dead
            ray.kill(self.actors[index], no_restart=True)
        self.actors[index] = self._make_actor()
        self.replaced += 1
        self._probation[index] = (self.actors[index].__ray_ready__.remote(), time.monotonic())
        for ref, entry in list(inflight.items()):
            if entry.actor_index == index:
                del inflight[ref]
                self._retry(entry.item, reason, queue)

    def _usable(self) -> list[bool]:
        """Which slots may take work now; drops replacements that never started."""
        usable = [True] * len(self.actors)
        for index, (ready_ref, since) in list(self._probation.items()):
            done, _ = ray.wait([ready_ref], timeout=0)
            if done:
                del self._probation[index]
                continue
            usable[index] = False
            others = [i for i in range(len(self.actors)) if i != index and i not in self._probation]
            if others and time.monotonic() - since > self.actor_start_timeout_s:
                log.warning(
                    "worker slot %d could not be placed in %.0f s; dropping it",
                    index,
                    self.actor_start_timeout_s,
                )
                with contextlib.suppress(Exception):
                    ray.kill(self.actors[index], no_restart=True)
                del self._probation[index]
                self._dropped.add(index)
        for index in self._dropped:
            usable[index] = False
        if not any(usable):  # nothing else can run: keep waiting on the replacements
            usable = [i not in self._dropped for i in range(len(self.actors))]
        return usable

    def run(
        self,
        items: list[WorkItem[T]],
        on_done: Callable[[WorkItem[T], R], None],
        on_tick: Callable[[int, int], None] | None = None,
        poll_s: float = 0.25,
    ) -> None:
        """Run every item to success or raise `PoolFailed`/`ShardFailed` on a final failure."""
        queue: deque[WorkItem[T]] = deque(items)
        inflight: dict[ray.ObjectRef, _Inflight[T]] = {}
        while queue or inflight:
            load = self._load(inflight)
            usable = self._usable()
            while queue:
                open_slots = [
                    i for i in range(len(load)) if usable[i] and load[i] < self.max_inflight
                ]
                if not open_slots:
                    break
                index = min(open_slots, key=lambda i: load[i])
                item = queue.popleft()
                item.attempts += 1
                ref = self._submit(self.actors[index], item.payload)
                inflight[ref] = _Inflight(item, index, time.monotonic())
                load[index] += 1
            if on_tick is not None:
                on_tick(len(queue), len(inflight))
            if not inflight:
                time.sleep(poll_s)  # every slot is waiting for a replacement to start
                continue
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=poll_s)
            for ref in ready:
                entry = inflight.pop(ref, None)
                if entry is None:
                    continue
                try:
                    result = ray.get(ref, timeout=60)
                except _SYSTEM_ERRORS as exc:
                    # The actor (or its node) is gone: give its slot a fresh actor, which may
                    # land on another node, and run everything it held again.
                    reason = f"{type(exc).__name__}: {str(exc)[:200]}"
                    self._replace_actor(entry.actor_index, inflight, queue, reason)
                    self._retry(entry.item, reason, queue)
                    continue
                except ray.exceptions.RayTaskError as exc:
                    cause = exc.cause
                    if isinstance(cause, ShardFailed) and cause.retryable:
                        self._retry(entry.item, f"ShardFailed: {cause}", queue)
                        continue
                    if isinstance(cause, FarmError):
                        raise cause from None
                    raise PoolFailed(f"{entry.item.key} failed: {cause or exc}") from None
                on_done(entry.item, result)
            now = time.monotonic()
            hung = {
                e.actor_index
                for e in inflight.values()
                if now - e.started > self.timeout_s and e.actor_index not in self._probation
            }
            for index in sorted(hung):
                self._replace_actor(
                    index, inflight, queue, f"Timeout: no result within {self.timeout_s:.0f} s"
                )

    def shutdown(self) -> None:
        for actor in self.actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        self.actors = []
