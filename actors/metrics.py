"""The cluster's job metrics: one exporter actor on the head node, fed by every job actor.

With ``FARM_METRICS_PORT`` set (the Kubernetes deployment sets 9100), each job actor sends its
events to a detached actor named ``farm-metrics`` that serves `farm.metrics.FarmMetrics` on that
port of the head node (``FARM_METRICS_HOST``, default 0.0.0.0: Prometheus scrapes the pod's
address). One process for the whole cluster, so counters run on across jobs whoever submitted
them (see `farm.metrics` for why not ``ray.util.metrics``). Without the variable there is no
exporter; ``farm run --metrics-port`` still serves the job it follows.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import ray

from actors.runtime import NAMESPACE
from farm.errors import SpecError
from farm.metrics import FarmMetrics

log = logging.getLogger(__name__)

EXPORTER_NAME = "farm-metrics"
PORT_ENV = "FARM_METRICS_PORT"
HOST_ENV = "FARM_METRICS_HOST"
HEAD_RESOURCE = "node:__internal_head__"
"""Ray gives the head node this resource: asking for a sliver of it places an actor there."""


class MetricsExporter:
    """Serves the metrics of every job on the cluster (a detached actor, one per cluster)."""

    def __init__(self, port: int, host: str) -> None:
        self.metrics = FarmMetrics()
        self.metrics.serve(port, host)

    def record(self, run_id: str, event: Mapping[str, Any]) -> None:
        self.metrics.record(event, run_id)


def exporter_port(environ: Mapping[str, str]) -> int | None:
    """The exporter's port from ``FARM_METRICS_PORT``, None when unset; SpecError when bad."""
    text = environ.get(PORT_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise SpecError(f"{PORT_ENV} must be a port number (1-65535), not {text!r}")
    return int(text)


def metrics_exporter() -> Any | None:
    """The cluster's exporter (started on the head node by the first job), or None without a
    port. Never raises: metrics must not stop a job."""
    try:
        port = exporter_port(os.environ)
        if port is None:
            return None
        return (
            ray.remote(MetricsExporter)
            .options(
                name=EXPORTER_NAME,
                namespace=NAMESPACE,
                get_if_exists=True,
                lifetime="detached",
                num_cpus=0,
                resources={HEAD_RESOURCE: 0.001},
                max_restarts=-1,
            )
            .remote(port, os.environ.get(HOST_ENV, "0.0.0.0"))
        )
    except Exception:
        log.warning("no metrics exporter: its job metrics are not exported", exc_info=True)
        return None
