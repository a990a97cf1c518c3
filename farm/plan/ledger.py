"""The job ledger: the plan written before any work, and what is done, updated atomically.

Resume is subtraction: shards recorded as done whose file still holds the planned number of
frames are skipped, and so are voiced sentences whose file still holds their samples; everything
else runs again. A ledger written for another job (different
spec or input) is never reused silently.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from farm.errors import Cancelled, FarmError, SpecError
from farm.fsutil import write_json_atomic
from farm.plan.shards import Shard

LEDGER_NAME = "ledger.json"
LEDGER_VERSION = 1


class Ledger:
    """Plan and progress of one job in its work directory (single writer: the orchestrator)."""

    def __init__(self, work_dir: Path, data: dict[str, Any]) -> None:
        self.work_dir = work_dir
        self.data = data
        self.on_save: Callable[[Ledger], None] | None = None
        """Called after every save (the object-storage mirror uploads the ledger from here)."""

    @property
    def path(self) -> Path:
        return self.work_dir / LEDGER_NAME

    @classmethod
    def exists(cls, work_dir: Path) -> bool:
        return (work_dir / LEDGER_NAME).is_file()

    @classmethod
    def load(cls, work_dir: Path) -> Ledger:
        if not work_dir.exists():
            raise SpecError(f"work directory {work_dir} does not exist")
        if not work_dir.is_dir():
            raise SpecError(f"{work_dir} is a file, not the work directory of a job")
        path = work_dir / LEDGER_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SpecError(
                f"{work_dir} has no {LEDGER_NAME}: it is not the work directory of a job"
            ) from None
        except json.JSONDecodeError as exc:
            raise SpecError(f"{path} is damaged ({exc}); delete the work directory") from None
        if data.get("version") != LEDGER_VERSION:
            raise SpecError(f"{path} has version {data.get('version')}, expected {LEDGER_VERSION}")
        return cls(work_dir, data)

    @classmethod
    def create(
        cls, work_dir: Path, *, job_id: str, job_key: str, spec: dict[str, Any], shards: list[Shard]
    ) -> Ledger:
        data = {
            "version": LEDGER_VERSION,
            "job_id": job_id,
            "job_key": job_key,
            "spec": spec,
            "shards": [asdict(s) for s in shards],
            "done": {},
            "output": None,
        }
        ledger = cls(work_dir, data)
        ledger.save()
        return ledger

    def check_key(self, job_key: str) -> None:
        if self.data.get("job_key") != job_key:
            raise SpecError(
                f"--work-dir {self.work_dir} holds another job (different settings or input): "
                f"`farm resume {self.work_dir}` finishes that one; give this job a new --work-dir"
            )

    @property
    def job_id(self) -> str:
        return str(self.data["job_id"])

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.data["spec"])

    def shards(self) -> list[Shard]:
        return [Shard(**entry) for entry in self.data["shards"]]

    def done_names(self) -> set[str]:
        return set(self.data["done"])

    def mark_done(self, name: str, record: dict[str, Any]) -> None:
        self.data["done"][name] = record
        self.save()

    def forget(self, name: str) -> None:
        if self.data["done"].pop(name, None) is not None:
            self.save()

    def sentence_records(self) -> dict[int, dict[str, Any]]:
        """Voiced sentences by index (the voice stage's counterpart of `done_names`)."""
        return {int(k): v for k, v in self.data.get("sentences", {}).items()}

    def mark_sentence(self, index: int, record: dict[str, Any]) -> None:
        self.data.setdefault("sentences", {})[str(index)] = record
        self.save()

    def forget_sentence(self, index: int) -> None:
        if self.data.get("sentences", {}).pop(str(index), None) is not None:
            self.save()

    def mark_output(self, record: dict[str, Any]) -> None:
        self.data["output"] = record
        self.save()

    def save(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, self.data)
        if self.on_save is not None:
            self.on_save(self)


def with_resume_hint(error: FarmError, work_dir: str | None) -> FarmError:
    """The error, saying where a failed job's finished work is kept and how to finish it."""
    if isinstance(error, Cancelled) or not work_dir or not Ledger.exists(Path(work_dir)):
        return error  # a cancellation says so itself; without a ledger there is nothing to resume
    hinted = copy.copy(error)  # same class and fields (FarmError pickles, so it copies)
    hinted.args = (
        f"{error.one_line()} (finished shards are kept in {work_dir}: `farm resume {work_dir}` "
        "continues the job)",
    )
    return hinted
