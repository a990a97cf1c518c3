"""The dashboards and alert rules against a real Prometheus scraping a real job.

A Ray node with its metrics export port, a double (face, voice, judges) with one worker killed
mid-shard and a job that fails: Prometheus (Debian's, started here on 127.0.0.1) scrapes the
node's metrics port and the farm's exporter (actors.metrics, fed by the job actors), and every
query of every dashboard and every signal of every alert must return data.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from actors.metrics import HOST_ENV, PORT_ENV
from deploy.monitoring.__main__ import MONITORING_DIR, rendered_files
from deploy.monitoring.dashboards import build_dashboards, dashboard_queries
from deploy.monitoring.rules import ALERTS, HARDWARE_GPU_SERIES, rule_groups
from farm.chaos import ChaosSettings
from farm.errors import FarmError
from farm.pipeline.report import JobReport
from farm.spec import JobSpec
from tests.clips import ClipRecipe, make_clip
from tests.conftest import media_path
from tests.jobs import run_on_ray

SCRAPE_INTERVAL_S = 1
WINDOW = "5m"  # what $__rate_interval stands for here: the jobs ran within it


def _system_tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} is not on PATH (Debian: apt-get install prometheus)"
    if os.environ.get("FARM_REQUIRE_SYSTEM_TOOLS") == "1":
        pytest.fail(f"{message}; FARM_REQUIRE_SYSTEM_TOOLS=1 requires it")
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_generated_dashboards_and_rules_are_committed() -> None:
    for relative, text in rendered_files().items():
        path = MONITORING_DIR / relative
        assert path.exists(), f"{path} is missing: run `python -m deploy.monitoring`"
        assert path.read_text(encoding="utf-8") == text, (
            f"{path} differs from deploy/monitoring: run `python -m deploy.monitoring`"
        )


def test_every_dashboard_has_a_unique_uid_and_only_prometheus_queries() -> None:
    models = build_dashboards()
    assert len({m["uid"] for m in models.values()}) == len(models) == 4
    for model in models.values():
        assert dashboard_queries(model), model["title"]
        for panel in model["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    promtool = _system_tool("promtool")
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(rule_groups()), encoding="utf-8")
    done = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(ALERTS)} rules found" in done.stdout


def test_the_alerts_fire_on_what_they_watch_and_not_otherwise(tmp_path: Path) -> None:
    """promtool's rule unit tests over synthetic series: each alert fires on its fault only."""
    promtool = _system_tool("promtool")
    groups = rule_groups()
    for rule in groups["groups"][0]["rules"]:
        del rule["annotations"]  # templated text; promtool would compare it word for word
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(groups), encoding="utf-8")
    worker = 'Component="core_worker"'
    series = [
        # 10 jobs in 30 min, 3 of them failed
        {"series": f'farm_jobs_total{{{worker},status="succeeded"}}', "values": "0+7x30"},
        {"series": f'farm_jobs_total{{{worker},status="failed"}}', "values": "0+3x30"},
        # job a's oldest unit keeps ageing past its 60 s timeout; job b's stays young
        {"series": 'farm_oldest_unit_seconds{job_id="a"}', "values": "0+60x30"},
        {"series": 'farm_unit_timeout_seconds{job_id="a"}', "values": "60x30"},
        {"series": 'farm_oldest_unit_seconds{job_id="b"}', "values": "5x30"},
        {"series": 'farm_unit_timeout_seconds{job_id="b"}', "values": "60x30"},
        {
            "series": f'farm_queue_depth{{{worker},job_id="a",stage="video"}}',
            "values": "1+1x30",
        },
        {"series": 'ray_resources{Name="GPU",State="AVAILABLE"}', "values": "2x30"},
        {"series": 'ray_node_gpus_utilization{ip="n1",GpuIndex="0"}', "values": "0x30"},
    ]
    fired = [
        {
            "alertname": "SyncFarmJobFailureRate",
            "exp_alerts": [{"exp_labels": {"severity": "warning", "app": "syncfarm"}}],
        },
        {
            "alertname": "SyncFarmUnitPastTimeout",
            "exp_alerts": [
                {"exp_labels": {"severity": "critical", "app": "syncfarm", "job_id": "a"}}
            ],
        },
        {
            "alertname": "SyncFarmQueueRising",
            "exp_alerts": [{"exp_labels": {"severity": "warning", "app": "syncfarm"}}],
        },
        {
            "alertname": "SyncFarmGpusIdleWhileQueued",
            "exp_alerts": [{"exp_labels": {"severity": "warning", "app": "syncfarm"}}],
        },
        {"alertname": "SyncFarmRetriesSpiking", "exp_alerts": []},
        {"alertname": "SyncFarmEndDrift", "exp_alerts": []},
        {"alertname": "SyncFarmStretchOutOfBand", "exp_alerts": []},
    ]
    quiet_series = [
        {"series": f'farm_jobs_total{{{worker},status="succeeded"}}', "values": "0+10x30"},
        {"series": 'farm_end_drift_seconds_bucket{job_id="a",le="0.001"}', "values": "0+1x30"},
        {"series": 'farm_end_drift_seconds_count{job_id="a"}', "values": "0+1x30"},
        {"series": 'farm_sentences_total{job_id="a",band="in"}', "values": "0+9x30"},
        {"series": 'farm_sentences_total{job_id="a",band="out"}', "values": "0+1x30"},
        {"series": 'farm_queue_depth{job_id="a",stage="video"}', "values": "0x30"},
    ]
    quiet = [{"alertname": alert.name, "exp_alerts": []} for alert in ALERTS]
    drift_series = [
        {"series": 'farm_end_drift_seconds_bucket{job_id="a",le="0.001"}', "values": "0+1x30"},
        {"series": 'farm_end_drift_seconds_count{job_id="a"}', "values": "0+2x30"},
        {"series": 'farm_sentences_total{job_id="a",band="out"}', "values": "0+5x30"},
        {"series": 'farm_sentences_total{job_id="a",band="in"}', "values": "0+5x30"},
        {"series": 'farm_retries_total{job_id="a",reason="worker died"}', "values": "0+1x30"},
    ]
    drifted = [
        {
            "alertname": "SyncFarmEndDrift",
            "exp_alerts": [{"exp_labels": {"severity": "critical", "app": "syncfarm"}}],
        },
        {
            "alertname": "SyncFarmStretchOutOfBand",
            "exp_alerts": [{"exp_labels": {"severity": "warning", "app": "syncfarm"}}],
        },
        {
            "alertname": "SyncFarmRetriesSpiking",
            "exp_alerts": [{"exp_labels": {"severity": "warning", "app": "syncfarm"}}],
        },
    ]
    tests = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [{"eval_time": "25m", **case} for case in fired],
            },
            {
                "interval": "1m",
                "input_series": quiet_series,
                "alert_rule_test": [{"eval_time": "25m", **case} for case in quiet],
            },
            {
                "interval": "1m",
                "input_series": drift_series,
                "alert_rule_test": [{"eval_time": "25m", **case} for case in drifted],
            },
        ],
    }
    spec = tmp_path / "tests.yaml"
    spec.write_text(yaml.safe_dump(tests), encoding="utf-8")
    done = subprocess.run([promtool, "test", "rules", str(spec)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# -- a real Prometheus, a real job --------------------------------------------------------------


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


class PrometheusServer:
    def __init__(self, binary: str, root: Path, targets: dict[str, int]) -> None:
        self.port = _free_port()
        config = {
            "global": {"scrape_interval": f"{SCRAPE_INTERVAL_S}s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {"job_name": name, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                for name, port in targets.items()
            ],
        }
        (root / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log = (root / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/-/ready", timeout=2).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"prometheus did not start: {(root / 'prometheus.log').read_text()}"
                    ) from None
                time.sleep(0.2)

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = _get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert answer["status"] == "success", (expr, answer)
        return list(answer["data"]["result"])

    def names(self) -> set[str]:
        return set(_get(f"{self.url}/api/v1/label/__name__/values")["data"])

    def targets_up(self) -> dict[str, str]:
        active = _get(f"{self.url}/api/v1/targets")["data"]["activeTargets"]
        return {t["labels"]["job"]: t["health"] for t in active}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)
        self.log.close()


@pytest.fixture(scope="module")
def scraped(
    identity_pack: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[PrometheusServer, JobReport]]:
    import ray

    binary = _system_tool("prometheus")
    root = tmp_path_factory.mktemp("prometheus")
    ray_metrics, farm_metrics = _free_port(), _free_port()
    # The exporter's settings, inherited by the node (and its job actors) started below.
    saved = {name: os.environ.get(name) for name in (PORT_ENV, HOST_ENV)}
    os.environ.update({PORT_ENV: str(farm_metrics), HOST_ENV: "127.0.0.1"})
    # One node with a (fake) GPU: Ray's resource series then cover GPUs as on a GPU cluster.
    ray.init(
        num_cpus=2,
        num_gpus=1,
        include_dashboard=False,
        namespace="syncfarm",
        logging_level="ERROR",
        _metrics_export_port=ray_metrics,
    )
    server = PrometheusServer(binary, root, {"ray-node": ray_metrics, "farm": farm_metrics})
    try:
        src = media_path("video/grid_jumpcut_same_speaker_6s.mp4")
        double = JobSpec.model_validate(
            {
                "input": src,
                "output": root / "double.mp4",
                "face": {"identity": identity_pack},
                "voice": {"mode": "vc"},
                "video": {"max_shard_s": 2.0, "min_shard_s": 0.5},
                "cluster": {"device": "cpu", "max_inflight_per_worker": 1},
                "chaos": ChaosSettings(
                    marker_dir=root / "markers", crash_unit="shard 00000", after_frames=2
                ),
            }
        )
        report = run_on_ray(double, judges=True)
        assert report.retries >= 1, "the killed worker's shard was re-run"
        broken = make_clip(
            ClipRecipe("alerting", fps="25", seconds=2.0, size="160x120", scene_seconds=None),
            root,
        )
        failing = JobSpec.model_validate(
            {
                "input": broken,
                "output": root / "failed.mp4",
                "passthrough": True,
                "cluster": {"device": "cpu"},
                "chaos": ChaosSettings(marker_dir=root / "markers", fail_unit="shard 00000"),
            }
        )
        with pytest.raises(FarmError, match="injected failure"):
            run_on_ray(failing)
        time.sleep(4 * SCRAPE_INTERVAL_S + 2)  # the last values are scraped
        yield server, report
    finally:
        server.stop()
        ray.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _promql(expr: str, job: str) -> str:
    """A dashboard query as Grafana sends it, its variables filled in."""
    label_values = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", expr)
    if label_values:
        return f"count by ({label_values[2]}) ({label_values[1]})"
    return expr.replace("$__rate_interval", WINDOW).replace("$job", job)


def _series_names(expr: str) -> set[str]:
    return set(re.findall(r"\b((?:ray|farm)_[a-z0-9_]+)", expr))


def _needs_gpu_hardware(expr: str) -> bool:
    return any(name in expr for name in HARDWARE_GPU_SERIES)


def _nvidia_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None


def test_prometheus_scrapes_the_node_and_the_exporter(
    scraped: tuple[PrometheusServer, JobReport],
) -> None:
    server, report = scraped
    assert server.targets_up() == {"ray-node": "up", "farm": "up"}
    frames = server.query(f'farm_frames_total{{job_id="{report.job_id}",stage="video"}}')
    assert [float(r["value"][1]) for r in frames] == [report.frames]
    assert server.query('farm_jobs_total{status="succeeded"} == 1')
    assert server.query('farm_jobs_total{status="failed"} == 1')
    # the workers' own counts come through Ray's agent on the node's metrics port
    assert server.query('sum(ray_farm_worker_frames_total{stage="video"}) > 0')


def test_every_dashboard_query_returns_data(scraped: tuple[PrometheusServer, JobReport]) -> None:
    server, report = scraped
    empty, not_a_number = [], []
    for name, model in build_dashboards().items():
        for title, expr in dashboard_queries(model):
            if _needs_gpu_hardware(expr) and not _nvidia_gpu():
                continue  # NVML series: checked where an NVIDIA GPU is present
            result = server.query(_promql(expr, report.job_id))
            if not result:
                empty.append(f"{name} / {title}: {expr}")
            elif any(math.isnan(float(r["value"][1])) for r in result):
                not_a_number.append(f"{name} / {title}: {expr}")
    assert not empty, "queries without data:\n" + "\n".join(empty)
    assert not not_a_number, "queries that gave NaN:\n" + "\n".join(not_a_number)


def test_every_alert_signal_returns_data(scraped: tuple[PrometheusServer, JobReport]) -> None:
    server, _ = scraped
    empty = []
    for alert in ALERTS:
        for signal in alert.signals:
            if _needs_gpu_hardware(signal) and not _nvidia_gpu():
                continue
            if not server.query(signal):
                empty.append(f"{alert.name}: {signal}")
    assert not empty, "alert signals without data:\n" + "\n".join(empty)


def test_every_series_the_monitoring_names_is_exported(
    scraped: tuple[PrometheusServer, JobReport],
) -> None:
    """A misspelt series in an alert that only fires rarely would go unnoticed: every name in
    every query and rule must be one Prometheus has scraped."""
    server, _ = scraped
    exported = server.names()
    named: set[str] = set()
    for model in build_dashboards().values():
        for _, expr in dashboard_queries(model):
            named |= _series_names(expr)
    for alert in ALERTS:
        named |= _series_names(alert.expr) | set().union(*map(_series_names, alert.signals))
    hardware = {n for n in named if n in HARDWARE_GPU_SERIES} if not _nvidia_gpu() else set()
    # histogram series are named by their parts (_bucket, _sum, _count)
    missing = sorted(n for n in named - hardware if n not in exported)
    assert not missing, f"not exported: {missing}"
