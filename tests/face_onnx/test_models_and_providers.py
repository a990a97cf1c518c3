"""The face model registry, `farm models list|verify`, resolving ``auto``, and execution providers.

A models directory is built per test: one synthetic graph registered under a test manifest
(a correct file), one listed with a wrong sha256, one listed but absent. Provider selection is
checked without a GPU: onnxruntime's provider list is given, and the session constructor is
replaced by one that records what a GPU session would have been opened with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from cli.main import app
from farm.devices import Device, WorkerResources
from farm.errors import ChecksumMismatch, ModelError, SpecError
from farm.face.catalogue import MODELS_ENV, models_directory, neural_manifest, require
from farm.face.onnx.runtime import (
    CPU,
    CUDA,
    TENSORRT,
    DeviceUnavailable,
    SessionFactory,
    check_single_runtime,
    plan_providers,
)
from farm.face.settings import FaceSettings
from farm.face.stack_choice import resolve_face_stack
from farm.fsutil import sha256_file

WRONG = "0" * 64


def tiny_graph(path: Path, scale: float = 2.0) -> Path:
    """y = x * scale on a (1, 4) float input: a real, loadable ONNX file of a few hundred bytes."""
    weight = helper.make_tensor("scale", TensorProto.FLOAT, [1], [scale])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _entry(name: str, file: str, sha256: str, kind: str = "inswapper") -> dict[str, Any]:
    return {
        "name": name,
        "file": file,
        "sha256": sha256,
        "licence": "test licence",
        "source": "made by the test",
        "contract": {"runtime": "onnxruntime", "kind": kind, "output": "test"},
    }


def models_dir_with(tmp_path: Path, entries: list[dict[str, Any]]) -> Path:
    root = tmp_path / "models"
    root.mkdir(exist_ok=True)
    (root / "manifest.json").write_text(json.dumps({"models": entries}), encoding="utf-8")
    return root


@pytest.fixture
def mixed_models(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    good = tiny_graph(root / "good.onnx")
    tiny_graph(root / "other.onnx", scale=3.0)
    return models_dir_with(
        tmp_path,
        [
            _entry("inswapper_128", "good.onnx", sha256_file(good)),
            _entry("arcface_w600k_r50", "other.onnx", WRONG, kind="arcface-recogniser"),
            _entry("scrfd_10g", "absent.onnx", WRONG, kind="scrfd-detector"),
        ],
    )


def test_verify_names_the_missing_and_the_mismatched_file_and_passes_the_correct_one(
    mixed_models: Path,
) -> None:
    result = CliRunner().invoke(app, ["models", "verify", "--models-dir", str(mixed_models)])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    ok = [line for line in lines if line.startswith("ok inswapper_128")]
    assert ok and "verified" in ok[0]
    mismatch = next(line for line in lines if line.startswith("FAIL arcface_w600k_r50"))
    assert WRONG in mismatch and "test licence" in mismatch and "made by the test" in mismatch
    missing = next(line for line in lines if line.startswith("FAIL scrfd_10g"))
    assert "absent.onnx" in missing and WRONG in missing and "made by the test" in missing
    # Catalogue models nobody claimed to have are not failures.
    assert not any(line.startswith("FAIL simswap_256") for line in lines)


def test_verify_passes_on_a_correct_directory_and_fails_on_a_named_absent_model(
    tmp_path: Path,
) -> None:
    root = tmp_path / "models"
    root.mkdir()
    good = tiny_graph(root / "good.onnx")
    models = models_dir_with(tmp_path, [_entry("inswapper_128", "good.onnx", sha256_file(good))])
    runner = CliRunner()
    assert runner.invoke(app, ["models", "verify", "--models-dir", str(models)]).exit_code == 0
    named = runner.invoke(app, ["models", "verify", "simswap_256", "--models-dir", str(models)])
    assert named.exit_code == 1
    assert "simswap_256.onnx" in named.output and "CC BY-NC 4.0" in named.output


def test_list_reads_the_models_directory_from_the_environment(mixed_models: Path) -> None:
    result = CliRunner().invoke(app, ["models", "list"], env={MODELS_ENV: str(mixed_models)})
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "inswapper_128" in line)
    assert "verified" in row and "CPU" in row
    assert "sha256 mismatch" in result.output and "missing" in result.output
    assert "dlib-shape-predictor-68" in result.output, "the built-in models are listed too"


def test_models_directory_prefers_the_flag_to_the_environment(tmp_path: Path) -> None:
    assert models_directory(tmp_path, {MODELS_ENV: "/elsewhere"}) == tmp_path
    assert models_directory(None, {MODELS_ENV: str(tmp_path)}) == tmp_path.resolve()
    assert models_directory(None, {}) is None


def test_require_gives_the_fix_in_one_line(mixed_models: Path) -> None:
    manifest = neural_manifest(mixed_models)
    with pytest.raises(ModelError, match=r"absent.onnx.*sha256 0{64}.*test licence.*made by"):
        require(manifest, "scrfd_10g")
    with pytest.raises(ChecksumMismatch, match=r"expected 0{64}"):
        require(manifest, "arcface_w600k_r50")
    assert require(manifest, "inswapper_128").name == "good.onnx"


def test_auto_without_models_is_the_classic_swap_on_yunet(tmp_path: Path) -> None:
    choice = resolve_face_stack(FaceSettings(identity=tmp_path), None)
    assert (choice.settings.backend, choice.settings.detector) == ("classic", "yunet")
    assert choice.settings.swapper is None and "no neural swapper" in choice.reason


def test_auto_picks_the_neural_swapper_whose_models_are_all_present(tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    swap, arc = tiny_graph(root / "swap.onnx"), tiny_graph(root / "arc.onnx", 3.0)
    models = models_dir_with(
        tmp_path,
        [
            _entry("inswapper_128", "swap.onnx", sha256_file(swap)),
            _entry("arcface_w600k_r50", "arc.onnx", sha256_file(arc), "arcface-recogniser"),
        ],
    )
    choice = resolve_face_stack(FaceSettings(identity=tmp_path), models)
    assert (choice.settings.backend, choice.settings.swapper) == ("onnx", "inswapper_128")
    assert choice.models == ("inswapper_128", "arcface_w600k_r50")
    # SimSwap also needs its converter: asked for explicitly, its absence is the one-line fix.
    with pytest.raises(ModelError, match=r"simswap_unofficial_512.onnx"):
        resolve_face_stack(FaceSettings(identity=tmp_path, swapper="simswap_512"), models)


def test_neural_only_settings_refuse_the_classic_backend(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"--enhancer.*--face-backend onnx"):
        resolve_face_stack(
            FaceSettings(identity=tmp_path, backend="classic", enhancer="gfpgan_1.4"), None
        )
    with pytest.raises(ModelError, match=r"--face-parser need a neural swapper"):
        resolve_face_stack(FaceSettings(identity=tmp_path, face_parser="bisenet"), None)


GPU = Device.from_gpu_ids(["3"])


def test_cuda_on_a_cpu_only_onnxruntime_is_a_clear_error() -> None:
    with pytest.raises(DeviceUnavailable, match=r"--device cuda.*offers only CPU"):
        plan_providers("cuda", GPU, (CPU,))
    with pytest.raises(DeviceUnavailable, match=r"given no GPU"):
        plan_providers("cuda", Device.cpu(), (CUDA, CPU))


def test_auto_falls_back_to_the_cpu_and_says_why() -> None:
    plan = plan_providers("auto", GPU, (CPU,))
    assert plan.names == (CPU,) and plan.note and "no CUDA provider" in plan.note
    assert plan_providers("auto", Device.cpu(), (CUDA, CPU)).names == (CPU,)


def test_the_cuda_provider_gets_the_workers_device() -> None:
    # Ray assigned GPU 3; inside the actor CUDA_VISIBLE_DEVICES=3 makes it ordinal 0.
    plan = plan_providers("auto", GPU, (TENSORRT, CUDA, CPU))
    assert plan.names == (CUDA, CPU) and plan.note is None and plan.on_gpu
    cuda = plan.providers[0]
    assert isinstance(cuda, tuple) and cuda[1]["device_id"] == 0
    two = plan_providers("cuda", Device.from_gpu_ids(["5", "6"]), (CUDA, CPU))
    assert isinstance(two.providers[0], tuple) and two.providers[0][1]["device_id"] == 0
    trt = plan_providers("tensorrt", GPU, (TENSORRT, CUDA, CPU), cache_dir=Path("/cache"))
    assert trt.names == (TENSORRT, CUDA, CPU)
    assert isinstance(trt.providers[0], tuple)
    assert trt.providers[0][1]["trt_engine_cache_path"] == "/cache"


def test_sessions_carry_the_providers_and_the_workers_threads(tmp_path: Path) -> None:
    opened: list[dict[str, Any]] = []

    def record(path: str, sess_options: Any, providers: list[Any]) -> str:
        opened.append({"path": path, "options": sess_options, "providers": providers})
        return "session"

    resources = WorkerResources(device=GPU, threads=3)
    factory = SessionFactory("auto", resources, available=(CUDA, CPU), create=record)
    assert factory.open(tmp_path / "m.onnx") == "session"
    assert opened[0]["providers"][0][0] == CUDA and opened[0]["providers"][0][1]["device_id"] == 0
    assert opened[0]["options"].intra_op_num_threads == 3
    # And a real CPU session from the same factory runs a graph.
    graph = tiny_graph(tmp_path / "tiny.onnx")
    real = SessionFactory("auto", WorkerResources(threads=2), available=(CPU,)).open(graph)
    assert real.get_providers() == [CPU]
    out = real.run(None, {"x": np.ones((1, 4), np.float32)})[0]
    assert np.allclose(out, 2.0)


def test_a_broken_model_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a graph")
    with pytest.raises(ModelError, match=r"onnxruntime could not load .*bad.onnx"):
        SessionFactory("cpu", available=(CPU,)).open(bad)


def test_both_onnxruntime_builds_installed_is_refused() -> None:
    with pytest.raises(ModelError, match=r"both installed.*pip uninstall -y onnxruntime"):
        check_single_runtime(("onnxruntime", "onnxruntime-gpu"))
    check_single_runtime(("onnxruntime",))
