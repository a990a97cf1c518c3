"""The API on Ray Serve: one autoscaled ingress deployment, its builder, and `farm serve`.

Replicas only enqueue, read and stream: each job is a detached job actor (`RayLauncher`), and
each replica runs a `Reconciler` that follows the job records it has leased. A Serve config
(``deploy/serve_config.yaml``, or a KubeRay RayService's serveConfigV2) names
``deploy.serve:app_builder`` with the settings as ``args``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from ray import serve
from ray.serve import Application

from deploy.service import FarmService, Reconciler

log = logging.getLogger(__name__)

APP_NAME = "farm"
DEPLOYMENT_NAME = "FarmApi"
DEFAULT_AUTOSCALING: dict[str, Any] = {
    "min_replicas": 1,
    "max_replicas": 4,
    "target_ongoing_requests": 32,
}


def build_service(args: dict[str, Any] | None = None) -> FarmService:
    """The service of one replica: settings once, its own store connection, the Ray launcher."""
    from deploy.auth import load_pepper
    from deploy.db.store import RecordStore
    from deploy.ray_launcher import RayLauncher
    from deploy.settings import load_settings
    from farm.provenance.keys import farm_home

    settings = load_settings(args)
    return FarmService(
        settings,
        RecordStore(settings.records_url),
        RayLauncher(),
        pepper=load_pepper(farm_home()),
    )


@serve.deployment(
    name=DEPLOYMENT_NAME,
    # No CPU reserved: a replica only enqueues, reads and streams, and the warm worker fleet
    # may hold every CPU of a node for as long as it idles, which would leave a restarted
    # replica unschedulable (the API down) until a worker retired. On the head node: a replica
    # starts its jobs' actors on its own node, and a worker node may be scaled away under them.
    ray_actor_options={"num_cpus": 0, "resources": {"node:__internal_head__": 0.001}},
    # Status polls are short, but each open event stream holds a request: allow many.
    max_ongoing_requests=200,
    autoscaling_config=DEFAULT_AUTOSCALING,
    graceful_shutdown_timeout_s=20,
)
@serve.ingress()
class FarmApi:
    """One replica: the FastAPI app over a `FarmService`, and its reconciler."""

    def __init__(self, args: dict[str, Any] | None = None) -> None:
        self.service = build_service(args)
        self.reconciler = Reconciler(self.service)
        self.reconciler.start()

    def __serve_build_asgi_app__(self) -> Any:
        from deploy.app import create_app

        return create_app(self.service, reconcile=False)

    def __del__(self) -> None:
        reconciler = getattr(self, "reconciler", None)
        if reconciler is not None:
            reconciler.stop()


def app_builder(args: dict[str, Any]) -> Application:
    """The Serve application (``import_path: deploy.serve:app_builder``); ``args`` are
    `ApiSettings` fields, on top of the ``FARM_API_*`` environment."""
    from deploy.settings import load_settings

    load_settings(args)  # a bad setting fails the deploy here, with the field's name
    return FarmApi.bind(dict(args))  # type: ignore[attr-defined]


def serve_locally(
    *, host: str, port: int, address: str | None, args: dict[str, Any], ready: threading.Event
) -> None:
    """`farm serve`: the API on an embedded cluster (or ``address``) until SIGINT/SIGTERM."""
    from actors.runtime import ray_session

    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        with ray_session(address):
            serve.start(http_options={"host": host, "port": port})
            try:
                serve.run(app_builder(args), name=APP_NAME, route_prefix="/", blocking=False)
                ready.set()
                while not stop.is_set():
                    time.sleep(0.2)
            finally:
                serve.delete(APP_NAME)
                serve.shutdown()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
