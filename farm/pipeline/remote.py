"""Staging a job whose input, output or work dir is an object-storage URL (``s3://``).

The pipeline works on local paths; this module keeps them in step with the object store, on
each node's own disk (`farm.objectstore` names the stand-in paths)::

    job node, before planning     stage the input (cached per node by URL, ETag and size),
                                  pull the remote work dir (ledger, finished shards) into its mirror
    job node, every ledger save   upload ledger.json        (after the unit's file is up)
    any worker, per unit          stage the input, render into this node's mirror,
                                  upload the unit's file to the remote work dir, then return
    reducer (job node)            download the units rendered on other nodes
    job node, at the end          upload transcript, report page, report.json, then the output

A crash therefore loses no finished unit: a unit counts as done only once the ledger that says
so is in the store, and its file went up before that. Nothing appears at the output URL until
the job completed and was signed: the output is uploaded last, in one atomic PUT.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from farm.errors import StorageError
from farm.objectstore import (
    RemoteLocations,
    download,
    join_url,
    list_files,
    remove_tree,
    sibling_url,
    stage_object,
    upload,
    write_problem,
)
from farm.pipeline.plan import default_work_dir, report_path
from farm.pipeline.report import JobReport
from farm.pipeline.voice import SentenceResult, SentenceTask
from farm.plan.ledger import LEDGER_NAME, Ledger
from farm.render import ShardResult, ShardTask
from farm.spec import JobSpec

JOB_NODE_MARKER = ".farm-job-node"
"""In the job's own mirror: workers on that node keep their files (the reducer reads them)."""


def job_work_dir(spec: JobSpec) -> Path:
    """The job's local work dir, as `prepare_job` computes it."""
    return (spec.work_dir or default_work_dir(spec.output)).resolve()


def _remote(spec: JobSpec) -> RemoteLocations:
    if spec.remote is None:
        raise StorageError("the job has no object-storage locations")
    return spec.remote


class RemoteJob:
    """The job-node side of an object-storage job (see the module docstring)."""

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self.remote = _remote(spec)

    @classmethod
    def of(cls, spec: JobSpec) -> RemoteJob | None:
        return cls(spec) if spec.remote is not None else None

    def check(self) -> JobSpec:
        """Stage the input and prove the output's and work dir's folders take a write (the
        front end's preflight; `stage` repeats it on the job's node)."""
        remote, spec = self.remote, self.spec
        if remote.output is not None:  # a local output's folder must exist already
            spec.output.parent.mkdir(parents=True, exist_ok=True)
        for url in (remote.output, remote.work_dir):
            if url is not None:
                folder = url if url == remote.work_dir else url.rsplit("/", 1)[0]
                problem = write_problem(folder)
                if problem:
                    raise StorageError(problem, path=url)
        if remote.input is not None:
            _, version = stage_object(remote.input, spec.input)
            spec = spec.model_copy(
                update={"remote": remote.model_copy(update={"input_version": version})}
            )
        self.spec, self.remote = spec, _remote(spec)
        return spec

    def stage(self) -> JobSpec:
        """Before planning: the input on this node, the remote work dir mirrored; returns the spec
        with the input's version pinned (workers refuse another)."""
        spec = self.check()
        if self.remote.work_dir is not None:
            self._pull_work_dir(self.remote.work_dir)
        return spec

    def _pull_work_dir(self, url: str) -> None:
        local = job_work_dir(self.spec)
        remote_files = list_files(url)
        if LEDGER_NAME not in remote_files:
            # The store is the truth: a mirror holding what the store lacks would resume work
            # that no other node can see.
            shutil.rmtree(local, ignore_errors=True)
        for name, size in sorted(remote_files.items()):
            if name.startswith(".farm-storage-check-") or name == JOB_NODE_MARKER:
                continue
            path = local / name
            if name == LEDGER_NAME or not path.is_file() or path.stat().st_size != size:
                download(join_url(url, name), path)
        local.mkdir(parents=True, exist_ok=True)
        (local / JOB_NODE_MARKER).touch()

    def attach(self, ledger: Ledger) -> None:
        """Upload the ledger now and after every later save."""
        if self.remote.work_dir is None:
            return
        target = join_url(self.remote.work_dir, LEDGER_NAME)

        def push(saved: Ledger) -> None:
            upload(saved.path, target)

        push(ledger)
        ledger.on_save = push

    def describe(self, report: JobReport) -> JobReport:
        """The report with URLs where the job was given URLs (stand-ins are node-local)."""
        remote, spec = self.remote, self.spec
        mapping = {str(spec.input): remote.input, str(spec.output): remote.output}
        settings = dict(report.settings)
        for field in ("input", "output", "work_dir"):
            url = getattr(remote, field)
            if url is not None and not (field == "work_dir" and remote.default_work_dir):
                settings[field] = url
        settings.pop("remote", None)

        def url_of(local: str | None) -> str | None:
            if local is None or remote.output is None:
                return mapping.get(local or "") or local
            if Path(local).parent == spec.output.parent:
                return sibling_url(remote.output, Path(local).name)
            return local

        return report.model_copy(
            update={
                "input": remote.input or report.input,
                "output": remote.output or report.output,
                "quality_report": url_of(report.quality_report),
                "transcript_srt": url_of(report.transcript_srt),
                "settings": settings,
            }
        )

    def publish(self) -> None:
        """Upload what the job wrote beside its output, the output last; then tidy up."""
        remote, spec = self.remote, self.spec
        if remote.output is not None:
            from farm.eval.job import html_report_path
            from farm.pipeline.reduce import transcript_path

            beside = (
                transcript_path(spec.output),
                html_report_path(spec.output),
                report_path(spec.output),
            )
            for path in beside:
                if path.is_file():
                    upload(path, sibling_url(remote.output, path.name))
            upload(spec.output, remote.output)
            # The stand-ins (and a default work dir's mirror) are node-local scratch.
            shutil.rmtree(spec.output.parent, ignore_errors=True)
        if remote.work_dir is not None:
            if remote.default_work_dir:
                remove_tree(remote.work_dir)
            else:
                shutil.rmtree(job_work_dir(spec), ignore_errors=True)


# -- the worker side: one unit ------------------------------------------------------------------


def stage_unit(spec: JobSpec, unit: ShardTask | SentenceTask) -> ShardTask | SentenceTask:
    """``unit`` with its paths on this node: the input staged here, the output in this node's
    mirror of the work dir."""
    remote = _remote(spec)
    out_path = remote.local(unit.out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(unit, SentenceTask):
        return replace(unit, out_path=out_path)
    source = unit.source
    if remote.input is not None:
        source = remote.local(spec.input)
        stage_object(remote.input, source, expect=remote.input_version)
    return replace(unit, source=source, out_path=out_path)


def deliver_unit(
    spec: JobSpec,
    unit: ShardTask | SentenceTask,
    staged: ShardTask | SentenceTask,
    result: ShardResult | SentenceResult,
) -> ShardResult | SentenceResult:
    """Upload a finished unit's file to the remote work dir; the result names the job node's
    path (the ledger records paths relative to the job's work dir)."""
    remote = _remote(spec)
    if remote.work_dir is not None:
        relative = unit.out_path.resolve().relative_to(job_work_dir(spec))
        upload(staged.out_path, join_url(remote.work_dir, relative.as_posix()))
        if not (remote.local(job_work_dir(spec)) / JOB_NODE_MARKER).exists():
            # Away from the job's node nobody reads this copy: the reducer downloads it.
            staged.out_path.unlink(missing_ok=True)
    return replace(result, path=unit.out_path)


def fetch_unit_files(
    spec: JobSpec,
    work_dir: Path,
    shards: tuple[ShardResult, ...],
    sentences: tuple[SentenceResult, ...],
) -> None:
    """Download the finished units that are not on this node (rendered on other nodes)."""
    remote = spec.remote
    if remote is None or remote.work_dir is None:
        return
    wanted: list[tuple[Path, int | None]] = [(r.path, r.size_bytes or None) for r in shards]
    wanted += [(s.path, None) for s in sentences]
    for path, size in wanted:
        if path.is_file() and (size is None or path.stat().st_size == size):
            continue
        relative = path.resolve().relative_to(work_dir.resolve())
        download(join_url(remote.work_dir, relative.as_posix()), path)


def remote_ledger(url: str) -> Ledger:
    """The ledger of a remote work dir, downloaded into its mirror (for `farm resume s3://...`)."""
    from farm.errors import SpecError
    from farm.objectstore import check_url, staging_root, stand_in

    url = check_url(url, "work_dir")
    local = stand_in("work", url, staging_root())
    if LEDGER_NAME not in list_files(url):
        raise SpecError(f"{url} has no {LEDGER_NAME}: it is not the work directory of a job")
    download(join_url(url, LEDGER_NAME), local / LEDGER_NAME)
    return Ledger.load(local)
