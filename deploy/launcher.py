"""Where the API's jobs run: the `JobLauncher` protocol, and a launcher without a cluster.

The API never runs a pipeline step in a request: it hands the spec to a launcher and asks it
afterwards. On Ray (`deploy.ray_launcher.RayLauncher`, what Serve uses) a job is a detached job
actor that outlives the replica that made it; `ThreadLauncher` runs the same `execute_job` in
a thread of the API process with the in-process runner, for a single machine without Ray.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

from farm.errors import Cancelled, FarmError, record_unexpected
from farm.pipeline.progress import Event, JobStatus, ProgressTracker
from farm.spec import JobSpec


class ClusterUnavailable(FarmError):
    """The launcher cannot answer now (the cluster does not respond); ask again later."""

    retryable = True


class JobLauncher(Protocol):
    """Starts jobs and answers for them by run id."""

    def launch(self, spec: JobSpec, run_id: str) -> None:
        """Start the job; return once it exists (it runs on without the caller)."""
        ...

    def status(self, run_id: str) -> JobStatus | None:
        """Its status, or None when no job with this run id exists any more.

        Raises:
            ClusterUnavailable: the answer is not known now (not the same as gone).
        """
        ...

    def events(self, run_id: str, after: int, timeout_s: float) -> list[Event] | None:
        """Events with ``seq > after`` (waiting up to ``timeout_s``), or None when it is gone."""
        ...

    def cancel(self, run_id: str) -> bool:
        """Ask the job to stop; False when it is gone."""
        ...

    def ping(self) -> None:
        """Raise `ClusterUnavailable` unless jobs can be started now."""
        ...


@dataclass
class _LocalJob:
    tracker: ProgressTracker
    cancel: threading.Event = field(default_factory=threading.Event)
    events: list[Event] = field(default_factory=list)
    seq: int = 0
    changed: threading.Condition = field(default_factory=threading.Condition)


class ThreadLauncher:
    """Jobs in threads of this process (no Ray): the in-process runner, the same pipeline."""

    def __init__(self) -> None:
        self._jobs: dict[str, _LocalJob] = {}
        self._lock = threading.Lock()

    def launch(self, spec: JobSpec, run_id: str) -> None:
        tracker = ProgressTracker(run_id=run_id, input=str(spec.input), output=str(spec.output))
        job = _LocalJob(tracker)
        with self._lock:
            self._jobs[run_id] = job
        threading.Thread(
            target=self._run, args=(spec, run_id, job), name=f"job-{run_id}", daemon=True
        ).start()

    def _run(self, spec: JobSpec, run_id: str, job: _LocalJob) -> None:
        from farm.pipeline.runner import InProcessRunner, execute_job
        from farm.provenance.keys import farm_home

        def emit(event: Event) -> None:
            with job.changed:
                job.seq += 1
                event = {**event, "seq": job.seq}
                if job.events and event["event"] == job.events[-1]["event"] == "progress":
                    job.events.pop()  # as the job actor does: only the newest progress matters
                job.events.append(event)
                job.tracker.apply(event)
                job.changed.notify_all()

        try:
            execute_job(spec, InProcessRunner(), run_id=run_id, on_event=emit, cancel=job.cancel)
        except Cancelled as exc:
            emit({"event": "cancelled", "error": exc.one_line(), "work_dir": exc.work_dir})
        except FarmError as exc:
            emit({"event": "failed", "error": exc.one_line()})
        except BaseException as exc:  # a bug: one line in the record, the traceback in a log
            error = record_unexpected(exc, farm_home() / "logs", what=f"job {run_id}")
            emit({"event": "failed", "error": error.one_line()})

    def _job(self, run_id: str) -> _LocalJob | None:
        with self._lock:
            return self._jobs.get(run_id)

    def status(self, run_id: str) -> JobStatus | None:
        job = self._job(run_id)
        if job is None:
            return None
        with job.changed:
            return job.tracker.status()

    def events(self, run_id: str, after: int, timeout_s: float) -> list[Event] | None:
        job = self._job(run_id)
        if job is None:
            return None
        with job.changed:
            job.changed.wait_for(lambda: job.seq > after, timeout=timeout_s)
            return [e for e in job.events if e["seq"] > after]

    def cancel(self, run_id: str) -> bool:
        job = self._job(run_id)
        if job is None:
            return False
        job.cancel.set()
        return True

    def ping(self) -> None:
        return None
