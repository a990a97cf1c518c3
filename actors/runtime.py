"""Starting or joining a Ray cluster for one command, and leaving it as it was."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import ray

from farm.errors import FarmError

NAMESPACE = "syncfarm"
"""Every named SyncFarm actor (the fleet, job actors) lives here."""

CONNECT_TIMEOUT_S = 30.0


@contextmanager
def ray_session(
    address: str | None = None, num_cpus: int | None = None, *, log_to_driver: bool = True
) -> Iterator[None]:
    """Join ``address`` or start an embedded local Ray; shut down only what we started."""
    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    kwargs: dict[str, object] = {
        "logging_level": logging.WARNING,
        "log_to_driver": log_to_driver,
        "configure_logging": True,
        "namespace": NAMESPACE,
    }
    if address:
        try:
            ray.init(address=address, **kwargs)  # type: ignore[arg-type]
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise FarmError(
                f"cannot join the Ray cluster at {address}: {' '.join(str(exc).split())[:300]}"
            ) from None
    else:
        # address="local": always a fresh embedded cluster, never one that happens to be running.
        ray.init(
            address="local",
            num_cpus=num_cpus or os.cpu_count() or 1,
            include_dashboard=False,
            **kwargs,  # type: ignore[arg-type]
        )
    try:
        yield
    finally:
        ray.shutdown()
