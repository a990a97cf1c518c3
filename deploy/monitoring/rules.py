"""The alert rules, as a prometheus-operator PrometheusRule.

Each `AlertRule` names the series it watches (``signals``): the alert's expression only returns
data while it fires, so the monitoring test checks instead that every signal returns data from a
real job, and promtool checks the rules themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RULE_GROUP = "syncfarm"


@dataclass(frozen=True)
class AlertRule:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    signals: tuple[str, ...]


ALERTS: tuple[AlertRule, ...] = (
    AlertRule(
        name="SyncFarmJobFailureRate",
        expr='(sum(increase(farm_jobs_total{status="failed"}[30m])) or on() vector(0))'
        " / sum(increase(farm_jobs_total[30m])) > 0.2",
        for_="5m",
        severity="warning",
        summary="More than 20 % of SyncFarm jobs failed in the last 30 minutes",
        description="{{ $value | humanizePercentage }} of the jobs that ended in the last 30 "
        "minutes failed. `farm jobs` and the job reports name the errors.",
        signals=(
            'sum(increase(farm_jobs_total{status="failed"}[30m]))',
            "sum(increase(farm_jobs_total[30m]))",
        ),
    ),
    AlertRule(
        name="SyncFarmUnitPastTimeout",
        expr="max by (job_id) (farm_oldest_unit_seconds)"
        " > on (job_id) max by (job_id) (farm_unit_timeout_seconds) * 1.1",
        for_="2m",
        severity="critical",
        summary="A SyncFarm unit has run past its timeout without being re-run",
        description="Job {{ $labels.job_id }} has a unit in flight for {{ $value | humanize }} s, "
        "longer than its shard timeout: the re-run that the timeout should trigger has not "
        "happened (a worker Ray cannot place or cancel).",
        signals=(
            "max by (job_id) (farm_oldest_unit_seconds)",
            "max by (job_id) (farm_unit_timeout_seconds)",
        ),
    ),
    AlertRule(
        name="SyncFarmQueueRising",
        expr="sum(farm_queue_depth) > 0 and sum(deriv(farm_queue_depth[10m])) > 0",
        for_="15m",
        severity="warning",
        summary="SyncFarm's queue has grown for 15 minutes",
        description="{{ $value }} units wait for a worker and the queue keeps growing: the "
        "cluster is short of workers (autoscaler limits, quotas, or GPU nodes that do not come).",
        signals=("sum(farm_queue_depth)", "sum(deriv(farm_queue_depth[10m]))"),
    ),
    AlertRule(
        name="SyncFarmRetriesSpiking",
        expr="sum(increase(farm_retries_total[10m])) > 5",
        for_="0s",
        severity="warning",
        summary="SyncFarm re-ran more than 5 units in 10 minutes",
        description="{{ $value | humanize }} retries in 10 minutes; the reasons are on the "
        "overview dashboard (workers dying, timeouts, nodes lost).",
        signals=("sum by (reason) (increase(farm_retries_total[10m]))",),
    ),
    AlertRule(
        name="SyncFarmEndDrift",
        expr="sum(increase(farm_end_drift_seconds_count[30m]))"
        ' - sum(increase(farm_end_drift_seconds_bucket{le="0.001"}[30m])) > 0',
        for_="0s",
        severity="critical",
        summary="A SyncFarm output's streams do not end where the source's end",
        description="{{ $value }} outputs in the last 30 minutes end more than 1 ms away from "
        "their source: audio and video drift. This is a regression; keep the job report.",
        signals=(
            "sum(increase(farm_end_drift_seconds_count[30m]))",
            'sum(increase(farm_end_drift_seconds_bucket{le="0.001"}[30m]))',
        ),
    ),
    AlertRule(
        name="SyncFarmStretchOutOfBand",
        expr='(sum(increase(farm_sentences_total{band="out"}[30m])) or on() vector(0))'
        " / sum(increase(farm_sentences_total[30m])) > 0.25",
        for_="10m",
        severity="warning",
        summary="More than a quarter of re-voiced sentences fall outside the stretch band",
        description="{{ $value | humanizePercentage }} of the sentences of the last 30 minutes "
        "had to be stretched or cut beyond the comfort band: the voice does not fit its slots "
        "(a slow voice, a wrong transcript or a language mismatch).",
        signals=(
            "sum by (band) (increase(farm_sentences_total[30m]))",
            "histogram_quantile(0.95, sum by (le) "
            "(increase(farm_sentence_stretch_ratio_bucket[30m])))",
        ),
    ),
    AlertRule(
        name="SyncFarmGpusIdleWhileQueued",
        expr="sum(farm_queue_depth) > 0"
        ' and on() sum(ray_resources{Name="GPU"}) > 0'
        " and on() (sum(ray_node_gpus_utilization) or on() vector(0)) < 1",
        for_="10m",
        severity="warning",
        summary="Jobs queue while the cluster's GPUs do nothing",
        description="Units wait for workers while the GPUs report no utilisation: the workers "
        "may run on the CPU (a missing CUDA provider in the image) or not start.",
        signals=(
            "sum(farm_queue_depth)",
            'sum(ray_resources{Name="GPU"})',
            "sum(ray_node_gpus_utilization)",
        ),
    ),
)

HARDWARE_GPU_SERIES = ("ray_node_gpus_utilization", "ray_node_gram_used")
"""Series Ray exports only from nodes with an NVIDIA GPU (read through NVML)."""


def rule_groups() -> dict[str, Any]:
    """The rules as a Prometheus rule file (what promtool and the PrometheusRule both hold)."""
    return {
        "groups": [
            {
                "name": RULE_GROUP,
                "rules": [
                    {
                        "alert": alert.name,
                        "expr": alert.expr,
                        "for": alert.for_,
                        "labels": {"severity": alert.severity, "app": "syncfarm"},
                        "annotations": {
                            "summary": alert.summary,
                            "description": alert.description,
                        },
                    }
                    for alert in ALERTS
                ],
            }
        ]
    }


def prometheus_rule() -> dict[str, Any]:
    """The PrometheusRule object (label ``release: prometheus`` for kube-prometheus-stack)."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "syncfarm-alerts", "labels": {"release": "prometheus"}},
        "spec": rule_groups(),
    }
