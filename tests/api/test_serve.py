"""The API on a real Ray Serve deployment on 127.0.0.1: jobs by upload and by URI, their events,
a seekable download that `farm verify` calls labelled, a signed webhook, and a Serve restart
while a job renders."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import farm, farm_cli, media_path

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CLIP = "video/grid_jumpcut_same_speaker_6s.mp4"
LONG_CLIP = "video/grid_hardcuts_4_speakers_12s.mp4"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Hooks(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        self.send_response(500 if len(type(self).received) == 1 else 200)  # one retry
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import ray
    from ray import serve

    from deploy.serve import APP_NAME, app_builder

    home = tmp_path_factory.mktemp("api-home")
    args = {
        "home": str(home),
        "input_roots": [str(media_path(CLIP).parent)],
        "webhook_allow_private": True,
        "webhook_base_delay_s": 0.5,
        "reconcile_interval_s": 0.3,
        # the load check's 50 clients share one token, and submit 5 jobs at once
        "rate_limit_per_minute": 0,
        "max_active_jobs": 8,
    }
    port = _free_port()
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace="syncfarm")
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(app_builder(args), name=APP_NAME, route_prefix="/")
    made = farm_cli("tokens", "create", "--name", "studio", env={"FARM_API_HOME": str(home)})
    assert made.returncode == 0, made.stderr
    secret = made.stderr.split("webhook signing secret ")[1].split(";")[0]
    _Hooks.received = []
    hooks = ThreadingHTTPServer(("127.0.0.1", 0), _Hooks)
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    try:
        yield {
            "url": f"http://127.0.0.1:{port}",
            "port": port,
            "headers": {"Authorization": f"Bearer {made.stdout.strip()}"},
            "secret": secret,
            "hooks": f"http://127.0.0.1:{hooks.server_address[1]}/hook",
            "args": args,
            "address": ray.get_runtime_context().gcs_address,
        }
    finally:
        hooks.shutdown()
        serve.shutdown()
        ray.shutdown()


def _video_packets(path: Path) -> list[bytes]:
    import av

    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(video=0) if p.size]


def _events(served: dict[str, Any], job: dict[str, Any]) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []
    url = served["url"] + job["urls"]["events"]
    with httpx.stream("GET", url, headers=served["headers"], timeout=300) as stream:
        event = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                seen.append((event or "", json.loads(line[6:])))
    return seen


def test_jobs_by_upload_and_uri_follow_events_and_download(
    served: dict[str, Any], tmp_path: Path
) -> None:
    base, headers = served["url"], served["headers"]
    settings = {"passthrough": True, "report": {"judges": False}}
    by_upload = httpx.post(
        f"{base}/v1/jobs",
        data={"settings": json.dumps({**settings, "webhook_url": served["hooks"]})},
        files={"video": ("talk.mp4", media_path(CLIP).read_bytes(), "video/mp4")},
        headers=headers,
        timeout=120,
    )
    assert by_upload.status_code == 202, by_upload.text
    by_uri = httpx.post(
        f"{base}/v1/jobs",
        data={"settings": json.dumps({**settings, "input_uri": f"file://{media_path(CLIP)}"})},
        headers=headers,
        timeout=120,
    )
    assert by_uri.status_code == 202, by_uri.text
    outputs = []
    for answer in (by_upload, by_uri):
        job = answer.json()
        events = _events(served, job)
        kinds = [kind for kind, _ in events]
        assert "planned" in kinds and "shard_done" in kinds and "finished" in kinds, str(events)
        final = events[-1]
        assert final[0] == "job" and final[1]["state"] == "succeeded", final
        whole = httpx.get(base + job["urls"]["output"], headers=headers, timeout=60)
        ranged = httpx.get(
            base + job["urls"]["output"], headers={**headers, "Range": "bytes=0-499"}, timeout=60
        )
        assert ranged.status_code == 206 and ranged.content == whole.content[:500]
        out = tmp_path / f"{job['job_id']}.mp4"
        out.write_bytes(whole.content)
        verified = farm_cli("verify", str(out))
        assert verified.returncode == 0 and "labelled" in verified.stdout.lower()
        outputs.append(out)

    # `farm run` of the same spec on the same cluster: the same video stream (the watermark
    # payload is the job id, and the input's path is part of it).
    job = by_uri.json()
    mine = tmp_path / "farm-run.mp4"
    ran = farm(
        "run",
        str(media_path(CLIP).resolve()),  # the API names an input by its real path
        "-o",
        str(mine),
        "--passthrough",
        "--no-report",
        "--address",
        served["address"],
    )
    assert ran.returncode == 0, ran.stderr
    assert _video_packets(mine) == _video_packets(outputs[1])

    # The upload job's webhook: retried once after a 500, signed with the token's secret.
    from deploy.webhooks import verify_signature

    deadline = time.monotonic() + 30
    while len(_Hooks.received) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(_Hooks.received) == 2
    for sent_headers, body in _Hooks.received:
        signature = {k.lower(): v for k, v in sent_headers.items()}["x-farm-signature"]
        assert verify_signature(body, signature, served["secret"], now=time.time())
        assert json.loads(body)["job"]["job_id"] == by_upload.json()["job_id"]


def test_fifty_clients_polling_while_five_jobs_are_submitted_see_no_error(
    served: dict[str, Any],
) -> None:
    from bench.api_load import poll_while_submitting

    base, headers = served["url"], served["headers"]
    job = {"passthrough": True, "report": {"judges": False}, "input_uri": media_path(CLIP).as_uri()}
    seed = poll_while_submitting(base, headers, clients=0, polls=0, poll_jobs=[], submissions=[job])
    assert not seed.errors and len(seed.jobs) == 1, seed.errors
    loaded = poll_while_submitting(
        base, headers, clients=50, polls=10, poll_jobs=list(seed.jobs), submissions=[job] * 5
    )
    assert loaded.errors == [] and len(loaded.latencies_s) == 500
    assert list(loaded.jobs.values()) == ["succeeded"] * 5


def _submit_slow_job(served: dict[str, Any]) -> dict[str, Any]:
    """A passthrough job of the 12 s clip in 0.5 s shards, one worker rendering one shard at a
    time: long enough to outlast a Serve restart or a killed actor."""
    settings = {
        "passthrough": True,
        "report": {"judges": False},
        "input_uri": f"file://{media_path(LONG_CLIP)}",
        "video": {"min_shard_s": 0.2, "max_shard_s": 0.5, "intermediate": "lossless"},
        "cluster": {"video_workers": 1, "max_inflight_per_worker": 1},
    }
    posted = httpx.post(
        f"{served['url']}/v1/jobs",
        data={"settings": json.dumps(settings)},
        headers=served["headers"],
        timeout=120,
    )
    assert posted.status_code == 202, posted.text
    job: dict[str, Any] = posted.json()
    return job


@pytest.mark.parametrize("restart", ["application", "serve"])
def test_a_serve_restart_while_a_job_renders_loses_nothing(
    served: dict[str, Any], restart: str
) -> None:
    from ray import serve

    from deploy.ray_launcher import RayLauncher
    from deploy.serve import APP_NAME, app_builder

    base, headers = served["url"], served["headers"]
    job = _submit_slow_job(served)
    url = f"{base}/v1/jobs/{job['job_id']}"
    while httpx.get(url, headers=headers).json()["state"] == "queued":
        time.sleep(0.1)
    if restart == "application":
        serve.delete(APP_NAME)
    else:  # the head's whole Serve: controller, proxies and replicas
        serve.shutdown()
    with pytest.raises(httpx.HTTPError):
        httpx.get(url, headers=headers, timeout=5).raise_for_status()
    # The job renders on in its actor with no API at all (asked here as a replica asks).
    during = RayLauncher().status(job["run_id"])
    assert during is not None and during.state in ("planning", "running", "reducing"), during
    if restart == "serve":
        serve.start(http_options={"host": "127.0.0.1", "port": served["port"]})
    serve.run(app_builder(served["args"]), name=APP_NAME, route_prefix="/")
    states = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        body = httpx.get(url, headers=headers, timeout=30).json()
        states.append(body["state"])
        if body["state"] in ("succeeded", "failed", "cancelled"):
            break
        assert body["progress"]["frames_total"] > 0
        time.sleep(0.3)
    assert states[-1] == "succeeded", (states, body)
    assert body["resumes"] == 0  # the job actor kept running: re-attached, not redone
    listed = httpx.get(f"{base}/v1/jobs", headers=headers).json()["jobs"]
    assert job["job_id"] in [j["job_id"] for j in listed]


def test_a_job_whose_actor_is_killed_is_resumed_from_its_ledger(served: dict[str, Any]) -> None:
    import ray

    from actors.job_actor import actor_name
    from actors.runtime import NAMESPACE

    base, headers = served["url"], served["headers"]
    job = _submit_slow_job(served)
    url = f"{base}/v1/jobs/{job['job_id']}"
    while httpx.get(url, headers=headers).json()["progress"]["shards_done"] < 2:
        time.sleep(0.1)
    ray.kill(ray.get_actor(actor_name(job["run_id"]), namespace=NAMESPACE), no_restart=True)

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        body = httpx.get(url, headers=headers, timeout=30).json()
        if body["state"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.3)
    assert body["state"] == "succeeded", body
    assert body["resumes"] == 1 and body["run_id"] != job["run_id"]
    report = httpx.get(base + body["urls"]["report_json"], headers=headers, timeout=30).json()
    assert len(report["shards_reused"]) >= 2  # the shards done before the kill were kept
