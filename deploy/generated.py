"""Files generated from code and checked in (k8s/ manifests, dashboards, alert rules)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def write_or_check(files: Mapping[str, str], root: Path, *, check: bool, command: str) -> int:
    """Write ``files`` (path under ``root`` -> text), or with ``check`` report the stale ones;
    the exit status: 1 when ``check`` finds a file that differs."""
    stale = []
    for relative, text in files.items():
        path = root / relative
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(relative)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if stale:
        print(f"out of date: {', '.join(stale)}; run `{command}`")
        return 1
    return 0
