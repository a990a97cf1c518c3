"""k8s/: every kustomization renders, every object validates offline, and the deployment keeps
its promises (GPU groups, non-root pods, one shared volume, the Serve config, the entrypoint).

Core kinds are checked with the strict Kubernetes 1.34 schemas (../shared/schemas/kubernetes, and
kubernetes-validate's copy of the same set for kinds shared/ lacks); KubeRay and prometheus-operator
objects with their CRDs' schemas, made strict here: a CRD schema accepts unknown keys, so a typo
such as ``replica:`` would pass and be dropped by the API server without a word.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import referencing
import yaml

from deploy.manifests import (
    DATA_CLAIM,
    DATA_PATH,
    K8S_DIR,
    SERVE_CONFIG,
    rendered_files,
)

SHARED_SCHEMAS = Path(__file__).resolve().parents[3] / "shared" / "schemas"
CORE_SCHEMAS = SHARED_SCHEMAS / "kubernetes" / "v1.34.0-local-strict"
KUSTOMIZATIONS = ("overlays/cpu-dev", "overlays/gpu-prod", "jobs/batch")
CRD_FILES = {
    "RayCluster": "kuberay/ray.io_rayclusters.yaml",
    "RayJob": "kuberay/ray.io_rayjobs.yaml",
    "RayService": "kuberay/ray.io_rayservices.yaml",
    "PodMonitor": "prometheus-operator/monitoring.coreos.com_podmonitors.yaml",
}
# Where a CRD's schema embeds a pod template (validated with the strict core schema as well).
POD_TEMPLATE_PATHS = {
    "RayCluster": ("spec",),
    "RayService": ("spec", "rayClusterConfig"),
    "RayJob": ("spec", "rayClusterSpec"),
}


def _kubectl() -> str:
    found = shutil.which("kubectl")
    if found:
        return found
    if os.environ.get("FARM_REQUIRE_SYSTEM_TOOLS") == "1":
        pytest.fail("kubectl (with kustomize) is not on PATH; FARM_REQUIRE_SYSTEM_TOOLS=1")
    pytest.skip("kubectl (with kustomize) is not on PATH")


@cache
def _render(kustomization: str) -> tuple[dict[str, Any], ...]:
    done = subprocess.run(
        [_kubectl(), "kustomize", str(K8S_DIR / kustomization)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return tuple(d for d in yaml.safe_load_all(done.stdout) if d)


def _objects(kustomization: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [o for o in _render(kustomization) if kind is None or o["kind"] == kind]


# -- schemas -------------------------------------------------------------------------------


@cache
def _core_registry() -> referencing.Registry[Any]:
    definitions = json.loads((CORE_SCHEMAS / "_definitions.json").read_text())
    resource = referencing.Resource.from_contents(
        definitions, default_specification=referencing.jsonschema.DRAFT202012
    )
    return referencing.Registry().with_resource("/api/_definitions.json", resource)


def _core_schema_file(kind: str, api_version: str) -> Path:
    group_version = api_version.split("/")
    suffix = "-".join(
        [kind.lower()]
        + ([group_version[0].split(".")[0], group_version[1]] if len(group_version) == 2 else [])
        + ([group_version[0]] if len(group_version) == 1 else [])
    )
    shared = CORE_SCHEMAS / f"{suffix}.json"
    if shared.exists():
        return shared
    import kubernetes_validate

    bundled = (
        Path(kubernetes_validate.__file__).parent
        / "kubernetes-json-schema"
        / CORE_SCHEMAS.name
        / f"{suffix}.json"
    )
    assert bundled.exists(), f"no schema for {api_version} {kind}"
    return bundled


def _core_errors(instance: Any, schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema, registry=_core_registry())
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(instance)
    ]


def _definition(name: str) -> dict[str, Any]:
    return {"$ref": f"/api/_definitions.json#/$defs/{name}"}


@cache
def _crd_schema(kind: str) -> dict[str, Any]:
    crd = yaml.safe_load((SHARED_SCHEMAS / CRD_FILES[kind]).read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return dict(version["schema"]["openAPIV3Schema"])


def unknown_keys(instance: Any, schema: dict[str, Any], where: str = "") -> list[str]:
    """Keys the schema does not name, wherever it names its keys (what the API server prunes)."""
    found: list[str] = []
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return found
    if isinstance(instance, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in instance.items():
            if properties is not None and key in properties:
                found += unknown_keys(value, properties[key], f"{where}/{key}")
            elif isinstance(extra, dict):
                found += unknown_keys(value, extra, f"{where}/{key}")
            elif properties is not None:
                found.append(f"{where}/{key}")
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(instance):
            found += unknown_keys(item, schema["items"], f"{where}/{index}")
    return found


def _pod_templates(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    spec: Any = obj
    for key in POD_TEMPLATE_PATHS.get(obj["kind"], ()):
        spec = spec[key]
    if obj["kind"] in POD_TEMPLATE_PATHS:
        yield "head", spec["headGroupSpec"]["template"]
        for group in spec["workerGroupSpecs"]:
            yield group["groupName"], group["template"]
    if obj["kind"] == "RayJob" and "submitterPodTemplate" in obj["spec"]:
        yield "submitter", obj["spec"]["submitterPodTemplate"]


def validation_errors(obj: dict[str, Any]) -> list[str]:
    """Everything wrong with one rendered object, offline."""
    kind = obj["kind"]
    if kind in CRD_FILES:
        schema = _crd_schema(kind)
        errors = [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in jsonschema.Draft7Validator(schema).iter_errors(obj)
        ]
        errors += [f"{key}: unknown key" for key in unknown_keys(obj, schema)]
        for name, template in _pod_templates(obj):
            errors += [
                f"{name} pod template: {e}"
                for e in _core_errors(template, _definition("io.k8s.api.core.v1.PodTemplateSpec"))
            ]
        return errors
    if kind == "PrometheusRule":
        # No CRD schema in shared/: its shape here, its rules with promtool (test_monitoring).
        errors = [
            f"{key}: unknown key" for key in set(obj) - {"apiVersion", "kind", "metadata", "spec"}
        ]
        errors += [f"spec/{key}: unknown key" for key in set(obj["spec"]) - {"groups"}]
        for group in obj["spec"]["groups"]:
            errors += [
                f"group {key}: unknown key" for key in set(group) - {"name", "rules", "interval"}
            ]
            for rule in group["rules"]:
                allowed = {
                    "alert",
                    "record",
                    "expr",
                    "for",
                    "labels",
                    "annotations",
                    "keep_firing_for",
                }
                errors += [f"rule {key}: unknown key" for key in set(rule) - allowed]
        return errors
    schema = json.loads(_core_schema_file(kind, obj["apiVersion"]).read_text())
    return _core_errors(obj, schema)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_object_renders_and_validates(kustomization: str) -> None:
    objects = _objects(kustomization)
    assert objects
    problems = {
        f"{o['kind']}/{o['metadata']['name']}": errors
        for o in objects
        if (errors := validation_errors(o))
    }
    assert not problems, json.dumps(problems, indent=2)


def test_a_typo_in_a_custom_resource_is_caught() -> None:
    service = copy.deepcopy(_objects("overlays/gpu-prod", "RayService")[0])
    group = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    group["replica"] = group.pop("replicas")
    container = group["template"]["spec"]["containers"][0]
    container["imagee"] = container.pop("image")
    job = copy.deepcopy(_objects("jobs/batch", "RayJob")[0])
    job["spec"]["shutdownAfterJobFinish"] = job["spec"].pop("shutdownAfterJobFinishes")
    errors = validation_errors(service) + validation_errors(job)
    assert any("workerGroupSpecs/0/replica: unknown key" in e for e in errors), errors
    assert any("imagee" in e for e in errors), errors
    assert any("shutdownAfterJobFinish: unknown key" in e for e in errors), errors


def test_the_generated_manifests_are_committed() -> None:
    for relative, text in rendered_files().items():
        path = K8S_DIR / relative
        assert path.exists() and path.read_text(encoding="utf-8") == text, (
            f"{path} differs from deploy/manifests.py: run `python -m deploy.manifests`"
        )


# -- what the deployment promises ----------------------------------------------------------


def _clusters(kustomization: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for obj in _objects(kustomization):
        path = POD_TEMPLATE_PATHS.get(obj["kind"])
        if path:
            spec: Any = obj
            for key in path:
                spec = spec[key]
            found.append((f"{obj['kind']}/{obj['metadata']['name']}", spec))
    return found


def _gpu_limit(template: dict[str, Any]) -> int:
    return sum(
        int(c["resources"].get("limits", {}).get("nvidia.com/gpu", 0))
        for c in template["spec"]["containers"]
    )


def test_gpu_prod_has_gpu_workers_that_scale_from_zero_on_gpu_nodes() -> None:
    clusters = _clusters("overlays/gpu-prod") + _clusters("jobs/batch")
    assert len(clusters) == 3
    for name, spec in clusters:
        assert spec["enableInTreeAutoscaling"] is True, name
        gpu = [g for g in spec["workerGroupSpecs"] if _gpu_limit(g["template"])]
        assert len(gpu) == 1, name
        group = gpu[0]
        assert group["minReplicas"] == 0 and group["maxReplicas"] >= 1, name
        pod = group["template"]["spec"]
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"]), name
        assert pod["nodeSelector"], name
        assert pod["initContainers"][0]["command"][-1] == "--require-cuda", name


def test_cpu_dev_asks_for_no_gpu_anywhere() -> None:
    rendered = yaml.safe_dump_all(_objects("overlays/cpu-dev"))
    assert "nvidia.com/gpu" not in rendered
    pvc = _objects("overlays/cpu-dev", "PersistentVolumeClaim")[0]
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]  # one node: every pod mounts it


def _containers(kustomization: str) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for obj in _objects(kustomization):
        for name, template in _pod_templates(obj):
            pod = template["spec"]
            for container in pod.get("initContainers", []) + pod["containers"]:
                yield f"{obj['metadata']['name']}/{name}/{container['name']}", container, pod
        if obj["kind"] in POD_TEMPLATE_PATHS:
            spec: Any = obj
            for key in POD_TEMPLATE_PATHS[obj["kind"]]:
                spec = spec[key]
            autoscaler = spec["autoscalerOptions"]
            yield f"{obj['metadata']['name']}/autoscaler", autoscaler, {}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_container_has_resources_and_runs_unprivileged(kustomization: str) -> None:
    for where, container, pod in _containers(kustomization):
        resources = container["resources"]
        assert resources["requests"]["cpu"] and resources["requests"]["memory"], where
        assert resources["limits"]["cpu"] and resources["limits"]["memory"], where
        security = container["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] != 0, where
        assert security["allowPrivilegeEscalation"] is False, where
        assert security["capabilities"]["drop"] == ["ALL"], where
        if pod:
            assert pod["securityContext"]["runAsNonRoot"] is True, where
            assert security["readOnlyRootFilesystem"] is True, where
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, f"{where}: Ray and HOME need a writable /tmp"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_one_shared_volume_at_the_same_path_on_every_ray_pod(kustomization: str) -> None:
    for obj in _objects(kustomization):
        for name, template in _pod_templates(obj):
            if name == "submitter":
                continue
            pod = template["spec"]
            claims = {
                v["name"]: v["persistentVolumeClaim"]["claimName"]
                for v in pod["volumes"]
                if "persistentVolumeClaim" in v
            }
            assert list(claims.values()) == [DATA_CLAIM], (obj["metadata"]["name"], name)
            (container,) = pod["containers"]
            paths = {m["mountPath"] for m in container["volumeMounts"] if m["name"] in claims}
            assert paths == {DATA_PATH}, (obj["metadata"]["name"], name)
    if kustomization.startswith("overlays/"):
        (pvc,) = _objects(kustomization, "PersistentVolumeClaim")
        assert pvc["metadata"]["name"] == DATA_CLAIM


def test_the_ray_service_runs_the_checked_in_serve_config() -> None:
    for kustomization in ("overlays/cpu-dev", "overlays/gpu-prod"):
        (service,) = _objects(kustomization, "RayService")
        assert yaml.safe_load(service["spec"]["serveConfigV2"]) == yaml.safe_load(
            SERVE_CONFIG.read_text()
        )
        head = service["spec"]["rayClusterConfig"]["headGroupSpec"]
        ports = {
            p["name"]: p["containerPort"]
            for p in head["template"]["spec"]["containers"][0]["ports"]
        }
        assert ports["serve"] == 8000 and ports["metrics"] == 8080 and ports["farm-metrics"] == 9100


def test_the_settings_point_the_metrics_exporter_at_the_scraped_port() -> None:
    (settings,) = [
        c
        for c in _objects("overlays/gpu-prod", "ConfigMap")
        if c["metadata"]["name"] == "syncfarm-settings"
    ]
    assert settings["data"]["FARM_METRICS_PORT"] == "9100"
    head_monitor = next(
        m for m in _objects("overlays/gpu-prod", "PodMonitor") if "head" in m["metadata"]["name"]
    )
    assert "farm-metrics" in {e["port"] for e in head_monitor["spec"]["podMetricsEndpoints"]}


def test_the_network_policy_admits_only_the_api_from_outside() -> None:
    (policy,) = _objects("overlays/gpu-prod", "NetworkPolicy")
    open_rules = [r for r in policy["spec"]["ingress"] if "from" not in r]
    assert [[p["port"] for p in r["ports"]] for r in open_rules] == [[8000]]
    for rule in policy["spec"]["ingress"]:
        if "from" in rule and any("namespaceSelector" in f for f in rule["from"]):
            assert rule.get("ports"), "other namespaces reach only named ports"


def test_no_secret_values_are_shipped() -> None:
    for kustomization in KUSTOMIZATIONS:
        assert not _objects(kustomization, "Secret"), "Secrets are created by the operator"
        rendered = yaml.safe_dump_all(_objects(kustomization))
        assert "PRIVATE KEY" not in rendered and "postgresql://" not in rendered
    for where, container, _ in _containers("overlays/gpu-prod"):
        refs = {
            e["secretRef"]["name"]: e["secretRef"].get("optional", False)
            for e in container.get("envFrom", [])
            if "secretRef" in e
        }
        if refs:
            assert refs == {"syncfarm-keys": False, "syncfarm-api": False, "syncfarm-s3": True}, (
                where
            )


def test_the_batch_job_runs_a_real_farm_batch_command() -> None:
    import typer.main

    from cli.main import app

    (job,) = _objects("jobs/batch", "RayJob")
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    assert spec["activeDeadlineSeconds"] > 0 and spec["backoffLimit"] >= 0
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["farm", "batch"]
    command = typer.main.get_command(app)
    batch = command.commands["batch"]  # type: ignore[attr-defined]
    context = batch.make_context("batch", argv[2:], resilient_parsing=False)
    assert context.params["address"] == "auto"
    assert str(context.params["manifest"]).startswith(DATA_PATH)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_ray_pods_leave_the_cluster_gracefully(kustomization: str) -> None:
    for obj in _objects(kustomization):
        for name, template in _pod_templates(obj):
            if name == "submitter":
                continue
            pod = template["spec"]
            assert pod["terminationGracePeriodSeconds"] >= 30, (obj["metadata"]["name"], name)
            (container,) = pod["containers"]
            pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
            assert pre_stop[-1] == "ray stop", (obj["metadata"]["name"], name)
    deployment = yaml.safe_load(SERVE_CONFIG.read_text())["applications"][0]["deployments"][0]
    assert deployment["graceful_shutdown_timeout_s"] > 0
