"""`JobLauncher` on Ray: every API job is a detached job actor (`actors.job_actor`).

The job actor, not the Serve replica, owns the job's references, so a replica scaled down or a
Serve application redeployed takes no job with it; a new replica finds the actor again by name.
"""

from __future__ import annotations

from typing import Any

import ray

from actors.errors import SYSTEM_FAILURES
from actors.job_actor import actor_name, submit_job
from actors.runtime import NAMESPACE
from deploy.launcher import ClusterUnavailable
from farm.pipeline.progress import Event, JobStatus
from farm.spec import JobSpec

CALL_TIMEOUT_S = 10.0
START_TIMEOUT_S = 120.0


class RayLauncher:
    """Starts and asks job actors on the connected cluster."""

    def __init__(self, *, finished_ttl_s: float = 600.0) -> None:
        self.finished_ttl_s = finished_ttl_s

    def launch(self, spec: JobSpec, run_id: str) -> None:
        _, handle = submit_job(spec, detach=True, run_id=run_id)
        try:
            # Creating an actor is asynchronous: it exists once it has answered.
            ray.get(handle.status.remote(), timeout=START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise ClusterUnavailable(
                f"the job actor for run {run_id} did not start within {START_TIMEOUT_S:.0f} s"
            ) from None

    def _handle(self, run_id: str) -> Any | None:
        try:
            return ray.get_actor(actor_name(run_id), namespace=NAMESPACE)
        except ValueError:  # no such actor: it ended and expired, or its node died
            return None
        except Exception as exc:  # the GCS did not answer
            raise ClusterUnavailable(f"cannot look up run {run_id}: {type(exc).__name__}") from exc

    def _call(self, run_id: str, method: str, *args: Any, timeout_s: float) -> Any:
        handle = self._handle(run_id)
        if handle is None:
            return None
        try:
            return ray.get(getattr(handle, method).remote(*args), timeout=timeout_s)
        except SYSTEM_FAILURES:
            return None  # the actor died
        except ray.exceptions.GetTimeoutError:
            raise ClusterUnavailable(
                f"run {run_id} did not answer within {timeout_s:.0f} s"
            ) from None

    def status(self, run_id: str) -> JobStatus | None:
        status: JobStatus | None = self._call(run_id, "status", timeout_s=CALL_TIMEOUT_S)
        return status

    def events(self, run_id: str, after: int, timeout_s: float) -> list[Event] | None:
        events: list[Event] | None = self._call(
            run_id, "events", after, timeout_s, timeout_s=timeout_s + CALL_TIMEOUT_S
        )
        return events

    def cancel(self, run_id: str) -> bool:
        handle = self._handle(run_id)
        if handle is None:
            return False
        try:
            ray.get(handle.cancel.remote(), timeout=CALL_TIMEOUT_S)
        except SYSTEM_FAILURES:
            return False
        return True

    def ping(self) -> None:
        if not ray.is_initialized():
            raise ClusterUnavailable("this process is not connected to a Ray cluster")
        try:
            alive = [n for n in ray.nodes() if n.get("Alive")]
        except Exception as exc:
            raise ClusterUnavailable(f"the Ray cluster does not answer: {exc}") from exc
        if not alive:
            raise ClusterUnavailable("the Ray cluster has no live node")
