"""`farm serve` as a user runs it: an embedded cluster, the API on 127.0.0.1, a token made with
`farm tokens create` accepted, and Ctrl-C ending it cleanly; bad settings refused before Ray."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, farm

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_farm_serve_answers_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    env = {**os.environ, "FARM_API_HOME": str(tmp_path / "api")}
    made = farm("tokens", "create", "--name", "studio", env=env)
    assert made.returncode == 0, made.stderr
    headers = {"Authorization": f"Bearer {made.stdout.strip()}"}
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A terminal's Ctrl-C: SIGINT at its default, whatever this suite was started with.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "farm serve did not answer within 120 s"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        listed = httpx.get(f"http://127.0.0.1:{port}/v1/jobs", headers=headers, timeout=10)
        assert listed.status_code == 200 and listed.json() == {"jobs": [], "next": None}
        assert httpx.get(f"http://127.0.0.1:{port}/v1/jobs", timeout=10).status_code == 401
    finally:
        server.send_signal(signal.SIGINT)
        try:
            _, stderr = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    assert server.returncode == 0, stderr[-2000:]
    assert f"SyncFarm API on http://127.0.0.1:{port}" in stderr
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_farm_serve_refuses_bad_settings_in_one_line(tmp_path: Path) -> None:
    env = {"FARM_API_HOME": str(tmp_path / "api"), "FARM_API_MAX_ACTIVE_JOBS": "none"}
    refused = farm("serve", "--port", str(_free_port()), env=env, timeout=60)
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "FARM_API_MAX_ACTIVE_JOBS" in lines[0], refused.stderr
