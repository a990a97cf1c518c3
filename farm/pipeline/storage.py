"""Shared storage, checked rather than assumed.

Data moves by path: a worker opens the source and the identity pack itself and writes its shard
into the job's work directory. Before any unit runs, every node that will run one proves it can
read what the job reads and write where it writes (`check_access`, run on each node by the
runner); a node that cannot gets a `StorageError` naming the node and the path. An input or work
dir given by URL (``s3://``) is checked by URL from each node: it must reach the bucket.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from farm.errors import StorageError
from farm.pipeline.plan import JobPlan


@dataclass(frozen=True)
class StorageAccess:
    """The paths a job's workers read and the directories they write."""

    read: tuple[Path, ...]
    write: tuple[Path, ...]
    remote_read: tuple[str, ...] = ()
    """Objects read by URL (an ``s3://`` input): each node needs the store and credentials."""
    remote_write: tuple[str, ...] = ()
    """Folders written by URL (an ``s3://`` work dir)."""


def storage_access(plan: JobPlan) -> StorageAccess:
    """What the units of ``plan`` touch on a worker's node."""
    spec = plan.spec
    read: list[Path] = [plan.info.path]
    if spec.face is not None:
        read.append(spec.face.identity)
        if spec.face.reference is not None:
            read.append(spec.face.reference)
    for extra in (spec.voice.transcript, spec.voice.background_stem, spec.models_dir):
        if extra is not None:
            read.append(extra)
    remote = spec.remote
    if remote is None:
        return StorageAccess(read=tuple(read), write=(plan.work_dir,))
    # Object storage: the input and work dir are reached by URL; each node writes its own
    # staging root (the stand-in paths of this node mean nothing on another).
    from farm.objectstore import staging_root

    if remote.input is not None:
        read = read[1:]
    return StorageAccess(
        read=tuple(read),
        write=(staging_root(),) if remote.work_dir is not None else (plan.work_dir,),
        remote_read=(remote.input,) if remote.input is not None else (),
        remote_write=(remote.work_dir,) if remote.work_dir is not None else (),
    )


def _read_problem(path: Path) -> str | None:
    try:
        if path.is_dir():
            os.listdir(path)
        else:
            with open(path, "rb") as handle:
                handle.read(1)
    except OSError as exc:
        return f"cannot read {path} ({exc.strerror or exc})"
    return None


def _write_problem(directory: Path) -> str | None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".farm-storage-check-"):
            pass
    except OSError as exc:
        return f"cannot write {directory} ({exc.strerror or exc})"
    return None


def check_access(access: StorageAccess) -> list[tuple[str, str]]:
    """Every (path, problem) this machine has with ``access``; empty when all is reachable."""
    problems: list[tuple[str, str]] = []
    for path in access.read:
        problem = _read_problem(path)
        if problem:
            problems.append((str(path), problem))
    for directory in access.write:
        problem = _write_problem(directory)
        if problem:
            problems.append((str(directory), problem))
    if access.remote_read or access.remote_write:
        from farm.objectstore import read_problem, write_problem

        for url in access.remote_read:
            problem = read_problem(url)
            if problem:
                problems.append((url, problem))
        for url in access.remote_write:
            problem = write_problem(url)
            if problem:
                problems.append((url, problem))
    return problems


def storage_error(node: str, problems: list[tuple[str, str]]) -> StorageError:
    """The one-line error for a node's first problem (and how many more it has)."""
    path, problem = problems[0]
    more = f" (and {len(problems) - 1} more path(s))" if len(problems) > 1 else ""
    if "://" in path:
        # The object store's own words already say what is missing (bucket, credentials).
        return StorageError(
            f"node {node} {problem}{more}: every node needs the object store's endpoint and "
            "credentials (AWS_* variables)",
            node=node,
            path=path,
            retryable="did not answer" in problem,
        )
    return StorageError(
        f"node {node} {problem}{more}: inputs, identity packs and work directories must be on "
        "storage that every node mounts at the same path",
        node=node,
        path=path,
    )
