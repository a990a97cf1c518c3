"""The HTTP API in-process (FastAPI's TestClient), with real records (SQLite), real uploads and
jobs run by `ThreadLauncher` (the same pipeline, the in-process runner)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import SWIZ3N_FACE, SWIZ3N_VOICE, farm_cli, media_path, swiz3n_consent

CLIP = "video/grid_jumpcut_same_speaker_6s.mp4"


def _service(home: Path, roots: list[Path], **overrides: Any) -> Any:
    from deploy.auth import load_pepper
    from deploy.db.store import RecordStore
    from deploy.launcher import ThreadLauncher
    from deploy.service import FarmService
    from deploy.settings import load_settings

    settings = load_settings(
        {
            "home": str(home),
            "input_roots": [str(r) for r in roots],
            "reconcile_interval_s": 0.2,
            "webhook_allow_private": True,
            **overrides,
        },
        environ={},
    )
    return FarmService(
        settings, RecordStore(settings.records_url), ThreadLauncher(), pepper=load_pepper(home)
    )


def _token(service: Any, name: str, scopes: list[str]) -> dict[str, str]:
    from deploy.auth import create_token

    made = create_token(name, scopes, service.pepper)
    service.store.add_token(made.record)
    return {"Authorization": f"Bearer {made.token}"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Any, dict]]:
    from deploy.app import create_app

    root = tmp_path_factory.mktemp("api")
    allowed = root / "allowed"
    allowed.mkdir()
    outside = root / "outside"
    outside.mkdir()
    (outside / "clip.mp4").write_bytes(media_path(CLIP).read_bytes())
    (allowed / "clip.mp4").symlink_to(outside / "clip.mp4")  # a way out of every root
    service = _service(root / "home", [allowed, media_path(CLIP).parent])
    tokens = {
        "alice": _token(service, "alice", ["submit", "read"]),
        "bob": _token(service, "bob", ["submit", "read"]),
        "reader": _token(service, "reader", ["read"]),
        "admin": _token(service, "admin", ["admin"]),
    }
    with TestClient(create_app(service)) as client:
        yield client, service, tokens


def _wait(client: TestClient, job_id: str, headers: dict[str, str], timeout_s: float = 180) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
        if body["state"] in ("succeeded", "failed", "cancelled"):
            return body
        time.sleep(0.3)
    pytest.fail(f"job {job_id} did not end within {timeout_s} s")


PASSTHROUGH = json.dumps(
    {"input_uri": f"file://{media_path(CLIP)}", "passthrough": True, "report": {"judges": False}}
)


@pytest.fixture(scope="module")
def alice_job(api: tuple[TestClient, Any, dict]) -> dict[str, Any]:
    client, _, tokens = api
    answer = client.post("/v1/jobs", data={"settings": PASSTHROUGH}, headers=tokens["alice"])
    assert answer.status_code == 202, answer.text
    return _wait(client, answer.json()["job_id"], tokens["alice"])


def test_a_job_by_uri_runs_and_its_output_streams_with_ranges(
    api: tuple[TestClient, Any, dict], alice_job: dict[str, Any], tmp_path: Path
) -> None:
    client, _, tokens = api
    assert alice_job["state"] == "succeeded", alice_job
    assert alice_job["progress"]["frames_done"] == alice_job["progress"]["frames_total"] > 0
    url = alice_job["urls"]["output"]
    whole = client.get(url, headers=tokens["alice"])
    assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
    part = client.get(url, headers={**tokens["alice"], "Range": "bytes=100-1099"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-1099/{len(whole.content)}"
    assert part.content == whole.content[100:1100]
    report = client.get(alice_job["urls"]["report_json"], headers=tokens["alice"]).json()
    assert report["frames"] == alice_job["progress"]["frames_total"]
    for url in (alice_job["urls"]["report_html"], alice_job["urls"]["transcript_srt"]):
        # A passthrough without judges writes neither the page nor a transcript.
        missing = client.get(url, headers=tokens["alice"])
        assert missing.status_code == 404 and "not written for it" in missing.text, url
    downloaded = tmp_path / "out.mp4"
    downloaded.write_bytes(whole.content)
    verified = farm_cli("verify", str(downloaded))
    assert verified.returncode == 0, verified.stderr
    assert "labelled" in verified.stdout.lower()
    # The same audit entry `farm run` appends: this run, this job, the chain intact.
    from farm.provenance.audit import AuditLog
    from farm.provenance.keys import farm_home

    with AuditLog(farm_home() / "audit.sqlite") as audit:
        audit.verify_chain()
        runs = {e.run_id: e.job_id for e in audit.entries()}
    assert runs[alice_job["run_id"]] == alice_job["pipeline_job_id"] == report["job_id"]


@pytest.mark.parametrize(
    ("who", "status"),
    [(None, 401), ("bad", 401), ("bob", 404), ("reader", 404), ("admin", 200), ("alice", 200)],
)
def test_the_ownership_matrix(
    api: tuple[TestClient, Any, dict], alice_job: dict[str, Any], who: str | None, status: int
) -> None:
    client, _, tokens = api
    headers = {
        None: {},
        "bad": {"Authorization": "Bearer farm_000000000000_nope"},
    }.get(who, tokens.get(who or "", {}))
    for path in ("", "/output", "/report.json"):
        answer = client.get(f"/v1/jobs/{alice_job['job_id']}{path}", headers=headers)
        assert answer.status_code == status, (who, path, answer.text)
    listed = client.get("/v1/jobs", headers=headers)
    if status == 200:
        assert alice_job["job_id"] in [j["job_id"] for j in listed.json()["jobs"]]
    elif status == 404:
        assert alice_job["job_id"] not in [j["job_id"] for j in listed.json()["jobs"]]


def test_a_read_token_cannot_submit(api: tuple[TestClient, Any, dict]) -> None:
    client, _, tokens = api
    answer = client.post("/v1/jobs", data={"settings": PASSTHROUGH}, headers=tokens["reader"])
    assert answer.status_code == 403 and "submit" in answer.json()["detail"]


def _nothing_staged(service: Any) -> None:
    staging = service.settings.staging_dir
    assert not staging.exists() or not [p for p in staging.iterdir() if p.name.startswith("req-")]


@pytest.mark.parametrize(
    ("uri", "status"),
    [
        ("../../etc/passwd", 422),
        ("/etc/passwd", 403),
        ("file:///etc/passwd", 403),
        ("file://{media}/../../../etc/passwd", 422),
        ("{allowed}/clip.mp4", 403),  # a symlink inside the root pointing out of every root
        ("s3://bucket/clip.mp4", 422),
    ],
)
def test_traversal_is_refused_and_writes_nothing(
    api: tuple[TestClient, Any, dict], uri: str, status: int
) -> None:
    client, service, tokens = api
    roots = service.settings.input_roots
    uri = uri.format(allowed=roots[0], media=roots[1])
    before = service.store.list_jobs(None)[0]
    settings = json.dumps({"input_uri": uri, "passthrough": True})
    answer = client.post("/v1/jobs", data={"settings": settings}, headers=tokens["bob"])
    assert answer.status_code == status, answer.text
    assert service.store.list_jobs(None)[0] == before
    _nothing_staged(service)


def test_bad_uploads_and_settings_get_their_status(
    api: tuple[TestClient, Any, dict], tmp_path: Path
) -> None:
    client, service, tokens = api
    bob = tokens["bob"]
    text = b"this is not a video at all\n" * 10
    answer = client.post(
        "/v1/jobs",
        data={"settings": json.dumps({"passthrough": True})},
        files={"video": ("clip.mp4", text, "video/mp4")},
        headers=bob,
    )
    assert answer.status_code == 415 and "video" in answer.json()["detail"]
    for settings, field in (
        (
            {"input_uri": f"file://{media_path(CLIP)}", "passthrough": True, "video": {"crf": 99}},
            "video.crf",
        ),
        ({"input_uri": f"file://{media_path(CLIP)}", "passthrough": True, "colour": 1}, "colour"),
        (
            {"input_uri": f"file://{media_path(CLIP)}", "face": {"identity": "/etc"}},
            "face.identity",
        ),
    ):
        answer = client.post("/v1/jobs", data={"settings": json.dumps(settings)}, headers=bob)
        assert answer.status_code == 422, answer.text
        assert field in answer.json()["detail"], answer.text
    answer = client.post("/v1/jobs", data={"settings": "{not json"}, headers=bob)
    assert answer.status_code == 422
    _nothing_staged(service)


def test_upload_limit_is_413_and_writes_nothing(tmp_path: Path) -> None:
    from deploy.app import create_app

    service = _service(tmp_path / "home", [], max_upload_mb=0.01)
    headers = _token(service, "small", ["submit", "read"])
    with TestClient(create_app(service, reconcile=False)) as client:
        answer = client.post(
            "/v1/jobs",
            data={"settings": "{}"},
            files={"video": ("big.mp4", media_path(CLIP).read_bytes(), "video/mp4")},
            headers=headers,
        )
    assert answer.status_code == 413, answer.text
    _nothing_staged(service)


def test_idempotency_key_and_quota(api: tuple[TestClient, Any, dict]) -> None:
    client, service, tokens = api
    headers = {**tokens["bob"], "Idempotency-Key": "bob-once"}
    first = client.post("/v1/jobs", data={"settings": PASSTHROUGH}, headers=headers)
    assert first.status_code == 202, first.text
    again = client.post("/v1/jobs", data={"settings": PASSTHROUGH}, headers=headers)
    assert again.status_code == 200 and again.json()["job_id"] == first.json()["job_id"]
    other = json.dumps({**json.loads(PASSTHROUGH), "strict": True})
    conflict = client.post("/v1/jobs", data={"settings": other}, headers=headers)
    assert conflict.status_code == 409 and first.json()["job_id"] in conflict.json()["detail"]
    _wait(client, first.json()["job_id"], tokens["bob"])

    quota = service.settings.max_active_jobs
    from deploy.records import JobRecord, utc_now

    now = utc_now()
    bob_id = service.authenticate(tokens["bob"]["Authorization"]).token.token_id
    for n in range(quota):  # active records of jobs held elsewhere
        service.store.add_job(
            JobRecord(
                job_id=f"job_held{n}",
                owner=bob_id,
                state="running",
                spec={},
                request_sha256="x",
                input_path="/x",
                output_path="/x.mp4",
                work_dir="/w",
                created_at=now,
                updated_at=now,
            )
        )
    try:
        answer = client.post("/v1/jobs", data={"settings": PASSTHROUGH}, headers=tokens["bob"])
        assert answer.status_code == 429, answer.text
        assert int(answer.headers["Retry-After"]) >= 1
    finally:
        for n in range(quota):
            service.store.update_job(f"job_held{n}", state="cancelled")


def test_an_identity_is_made_with_consent_and_kept_while_used(
    api: tuple[TestClient, Any, dict], session_farm_home: Path, tmp_path: Path
) -> None:
    client, _, tokens = api
    voice = media_path(SWIZ3N_VOICE)
    consent = swiz3n_consent(tmp_path / "consent.yaml", session_farm_home, [voice])
    files = [
        ("faces", ("face.png", media_path(SWIZ3N_FACE).read_bytes(), "image/png")),
        ("voices", ("voice.wav", voice.read_bytes(), "audio/wav")),
        ("consent", ("consent.yaml", consent.read_bytes(), "application/yaml")),
    ]
    made = client.post("/v1/identities", files=files, headers=tokens["alice"])
    assert made.status_code == 201, made.text
    identity = made.json()
    assert identity["faces"] == 1 and identity["voice_refs"] == 1
    url = f"/v1/identities/{identity['identity_id']}"
    assert client.get(url, headers=tokens["bob"]).status_code == 404
    assert client.get(url, headers=tokens["alice"]).json() == identity
    # A consent record that does not cover the photo: refused, nothing kept.
    other = [
        (
            "faces",
            (
                "face.jpg",
                media_path("faces/grace_hopper_usnavy_portrait.jpg").read_bytes(),
                "image/jpeg",
            ),
        ),
        files[2],
    ]
    refused = client.post("/v1/identities", files=other, headers=tokens["alice"])
    assert refused.status_code == 422 and "consent" in refused.json()["detail"]
    assert client.delete(url, headers=tokens["bob"]).status_code == 404
    assert client.delete(url, headers=tokens["alice"]).status_code == 204
    assert client.get(url, headers=tokens["alice"]).status_code == 404


def test_health_and_readiness(api: tuple[TestClient, Any, dict]) -> None:
    client, _, _ = api
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {
        "database": "ok",
        "cluster": "ok",
        "storage": "ok",
    }


def test_the_checked_in_openapi_schema_is_current() -> None:
    from deploy.app import openapi_schema

    checked_in = Path(__file__).resolve().parents[2] / "deploy" / "openapi.json"
    assert json.loads(checked_in.read_text()) == openapi_schema(), (
        "deploy/openapi.json is stale: `python -m deploy.app > deploy/openapi.json`"
    )


def test_no_cors_by_default(api: tuple[TestClient, Any, dict]) -> None:
    client, _, _ = api
    answer = client.options(
        "/v1/jobs",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in answer.headers
    assert os.environ.get("FARM_API_CORS_ORIGINS") is None


def test_the_serve_config_deploys_what_the_code_declares() -> None:
    import yaml

    from deploy.serve import APP_NAME, DEPLOYMENT_NAME, FarmApi, app_builder

    config = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "deploy" / "serve_config.yaml").read_text()
    )
    (app,) = config["applications"]
    assert app["name"] == APP_NAME and app["import_path"] == "deploy.serve:app_builder"
    (deployment,) = app["deployments"]
    assert deployment["name"] == DEPLOYMENT_NAME
    assert deployment["ray_actor_options"] == FarmApi.ray_actor_options
    assert deployment["max_ongoing_requests"] == FarmApi.max_ongoing_requests
    declared = FarmApi._deployment_config.autoscaling_config
    for key, value in deployment["autoscaling_config"].items():
        assert getattr(declared, key) == value, key
    assert app_builder(app["args"]) is not None  # the args validate as ApiSettings


def test_unknown_query_parameters_and_methods_are_answered_plainly(
    api: tuple[TestClient, Any, dict],
) -> None:
    client, _, tokens = api
    typo = client.get("/v1/jobs?stat=running", headers=tokens["alice"])
    assert typo.status_code == 422
    assert "'stat'" in typo.json()["detail"] and "state" in typo.json()["detail"]
    assert client.get("/v1/jobs?state=running&limit=5", headers=tokens["alice"]).status_code == 200
    wrong = client.put("/v1/identities/idn_0", headers=tokens["alice"])
    assert wrong.status_code == 405 and wrong.headers["allow"] == "DELETE, GET"
