"""Batch manifests: many jobs described in YAML, CSV or a glob, validated into JobSpecs.

YAML::

    defaults:                 # merged under every job (any JobSpec field)
      passthrough: true
      video: {max_shard_s: 8}
    jobs:
      - input: clips/a.mp4
        output: out/a.mp4
      - input: clips/b.mp4
        output: out/b.mp4
        identity: packs/swiz3n     # short for face: {identity: ...}
        options: {voice: {mode: vc}}

CSV: a header with ``input,output`` and optionally ``identity,passthrough,voice``.
Relative paths are resolved against the manifest's folder.
"""

from __future__ import annotations

import copy
import csv
import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from farm.errors import FarmError, SpecError
from farm.spec import JobSpec, parse_spec


@dataclass(frozen=True)
class BatchEntry:
    """One row of a batch: its validated spec, or why it could not be read."""

    name: str
    input: str
    output: str
    spec: JobSpec | None
    error: str | None = None


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _row_to_job(row: dict[str, Any], defaults: dict[str, Any], root: Path) -> dict[str, Any]:
    row = dict(row)
    options = row.pop("options", None) or {}
    identity = row.pop("identity", None)
    voice = row.pop("voice", None)
    passthrough = row.pop("passthrough", None)
    job = _merge(defaults, options)
    job.update({k: v for k, v in row.items() if v not in (None, "")})
    for key in ("input", "output"):
        if key not in job:
            raise SpecError(f"batch row is missing {key!r}")
        job[key] = str((root / str(job[key])).resolve())
    if identity:
        job["face"] = _merge(job.get("face") or {}, {"identity": str((root / identity).resolve())})
        job.pop("passthrough", None)
    elif passthrough not in (None, ""):
        job["passthrough"] = str(passthrough).lower() in {"1", "true", "yes"}
    if voice:
        job["voice"] = _merge(job.get("voice") or {}, {"mode": voice})
    return job


def _entries(rows: list[dict[str, Any]], defaults: dict[str, Any], root: Path) -> list[BatchEntry]:
    entries: list[BatchEntry] = []
    for index, row in enumerate(rows, start=1):
        name = f"job {index}"
        try:
            job = _row_to_job(row, defaults, root)
            spec = parse_spec(job)
            entries.append(BatchEntry(name, str(spec.input), str(spec.output), spec))
        except FarmError as exc:
            entries.append(
                BatchEntry(
                    name,
                    str(row.get("input", "?")),
                    str(row.get("output", "?")),
                    None,
                    exc.one_line(),
                )
            )
    outputs = [e.output for e in entries if e.spec is not None]
    duplicates = {o for o in outputs if outputs.count(o) > 1}
    if duplicates:
        raise SpecError(
            f"batch writes {sorted(duplicates)[0]} more than once; give each job its own output"
        )
    return entries


def read_manifest(path: Path) -> list[BatchEntry]:
    """Read a YAML or CSV batch manifest; every row becomes an entry (bad rows carry an error)."""
    if not path.is_file():
        raise SpecError(f"batch manifest {path} does not exist")
    root = path.parent.resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"batch manifest {path} is not UTF-8 text") from None
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if not rows or not {"input", "output"} <= set(rows[0]):
            raise SpecError(f"batch manifest {path} needs a header with input,output columns")
        return _entries(rows, {}, root)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"batch manifest {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), list):
        raise SpecError(f"batch manifest {path} needs a top-level 'jobs:' list")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise SpecError(f"batch manifest {path}: 'defaults' must be a mapping")
    return _entries(list(data["jobs"]), defaults, root)


def glob_entries(pattern: str, output_dir: Path, defaults: dict[str, Any]) -> list[BatchEntry]:
    """One job per file matching ``pattern``, writing ``output_dir/<stem>.mp4``."""
    paths = sorted(Path(p) for p in glob.glob(pattern))
    if not paths:
        raise SpecError(f"no input matches {pattern!r}")
    rows = [
        {"input": str(p.resolve()), "output": str((output_dir / f"{p.stem}.mp4").resolve())}
        for p in paths
    ]
    return _entries(rows, defaults, Path.cwd())
