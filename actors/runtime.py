"""Starting or joining a Ray cluster for one command, and leaving it as it was.

Ray's own start-up chatter (token warnings, "Started a local Ray instance") and the workers' logs
go to ``$FARM_HOME/logs/ray-driver.log``, not to the user's terminal: stderr carries only
SyncFarm's own lines. An address that does not answer fails after ``connect_timeout_s`` with the
address in the message, instead of Ray's retries for minutes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ray

from farm.errors import FarmError

NAMESPACE = "syncfarm"
"""Every named SyncFarm actor (the fleet, job actors) lives here."""


def _gcs_address(address: str) -> tuple[str, int] | None:
    """(host, port) of a cluster address, or None when it is not a plain GCS address."""
    if address.startswith(("ray://", "http://", "https://")):
        return None
    if address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address_or_die

            address = canonicalize_bootstrap_address_or_die("auto")
        except Exception:  # no cluster recorded on this machine: Ray says so itself
            return None
    host, _, port = address.rpartition(":")
    return (host, int(port)) if host and port.isdigit() else None


def wait_for_cluster(address: str, timeout_s: float) -> None:
    """Raise `FarmError` naming the address unless its GCS port accepts a connection in time."""
    target = _gcs_address(address)
    if target is None:
        return
    deadline = time.monotonic() + timeout_s
    reason = "no answer"
    while True:
        try:
            with socket.create_connection(target, timeout=min(5.0, timeout_s)):
                return
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
        if time.monotonic() >= deadline:
            raise FarmError(
                f"cannot reach the Ray cluster at {address} ({target[0]}:{target[1]}: {reason}) "
                f"within {timeout_s:.0f} s; start it with `ray start --head` or fix --address"
            )
        time.sleep(0.5)


def _ray_log_handler() -> logging.Handler:
    from farm.provenance.keys import farm_home

    logs = farm_home() / "logs"
    with contextlib.suppress(OSError):
        logs.mkdir(parents=True, exist_ok=True)
        return logging.FileHandler(Path(logs) / "ray-driver.log")
    return logging.NullHandler()


@contextmanager
def ray_session(
    address: str | None = None, num_cpus: int | None = None, *, connect_timeout_s: float = 30.0
) -> Iterator[None]:
    """Join ``address`` or start an embedded local Ray; shut down only what we started."""
    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    ray_logger = logging.getLogger("ray")
    handler = _ray_log_handler()
    handler.setLevel(logging.INFO)
    kwargs: dict[str, object] = {
        "logging_level": logging.INFO,
        "log_to_driver": False,  # workers log to their files; the user sees the job's events
        "configure_logging": True,  # False would clear the "ray" logger's handlers, ours too
        "namespace": NAMESPACE,
    }
    own = list(ray_logger.handlers)  # Ray's stderr handler, installed when ray is imported
    for existing in own:
        ray_logger.removeHandler(existing)
    ray_logger.addHandler(handler)
    try:
        if address:
            wait_for_cluster(address, connect_timeout_s)
            try:
                ray.init(address=address, **kwargs)  # type: ignore[arg-type]
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise FarmError(
                    f"cannot join the Ray cluster at {address}: {' '.join(str(exc).split())[:300]}"
                ) from None
        else:
            # address="local": always a fresh embedded cluster, never one that happens to run.
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
    finally:
        ray_logger.removeHandler(handler)
        handler.close()
        for existing in own:
            ray_logger.addHandler(existing)
