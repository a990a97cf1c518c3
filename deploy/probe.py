"""The image's start-up check: what onnxruntime and ffmpeg offer here, and whether it is enough.

``python -m deploy.probe [--require-cuda] [--json] [--quiet]`` prints the onnxruntime
distributions and execution providers, the ffmpeg the farm would select and its capabilities,
and the native modules the pipeline imports; it exits 1 when something a job needs is missing.
The pods run it as their init container ``farm-probe`` (k8s/; ``kubectl logs POD -c farm-probe``)
and it is the image's default command (deploy/Dockerfile), so a node whose image or GPU runtime
is broken fails at start, not in a job's first shard.

It reuses the farm's own choices (`farm.face.onnx.runtime`, `farm.media.ffmpeg.select_ffmpeg`):
what it reports is what a job on this node would get.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

EXIT_OK = 0
EXIT_MISSING = 1

NATIVE_MODULES = ("numpy", "cv2", "av", "soundfile", "pyworld", "dlib", "ray")
"""Compiled extensions the pipeline imports on every worker: a wheel whose shared libraries
the image lacks fails here, by name, instead of in a job."""


@dataclass
class ProbeResult:
    """What this node offers, and what is missing for the farm's jobs (empty: all there)."""

    onnxruntime: list[str] = field(default_factory=list)
    providers: list[str] = field(default_factory=list)
    gpu_session: str | None = None
    ffmpeg: dict[str, Any] = field(default_factory=dict)
    modules: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


def _identity_model() -> bytes:
    """A one-node ONNX graph (Identity on a float vector): the cheapest session to open."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # old enough for every onnxruntime the farm accepts
    return bytes(model.SerializeToString())


def _check_gpu_session(result: ProbeResult) -> None:
    """Open and run a session on CUDA: onnxruntime lists the CUDA provider even when cuDNN or
    the driver is missing, and only a session shows whether it really runs there."""
    import numpy as np
    import onnxruntime as ort

    from farm.face.onnx.runtime import CPU, CUDA, session_on_gpu

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            _identity_model(), sess_options=options, providers=[(CUDA, {"device_id": 0}), CPU]
        )
        session.run(["y"], {"x": np.zeros(4, dtype=np.float32)})
    except Exception as exc:  # onnxruntime raises its own untyped errors
        result.missing.append(f"a CUDA session could not run: {str(exc).strip()[:300]}")
        return
    result.gpu_session = ", ".join(session.get_providers())
    if not session_on_gpu(session):
        result.missing.append(
            f"the CUDA provider fell back to {result.gpu_session}: no usable GPU, CUDA or cuDNN "
            "(is the pod given nvidia.com/gpu, and is the NVIDIA container runtime in use?)"
        )


def _check_onnxruntime(result: ProbeResult, *, require_cuda: bool) -> None:
    from farm.errors import FarmError
    from farm.face.onnx.runtime import (
        CUDA,
        available_providers,
        check_single_runtime,
        installed_runtimes,
    )

    result.onnxruntime = list(installed_runtimes())
    try:
        check_single_runtime()
        result.providers = list(available_providers())
    except FarmError as exc:
        result.missing.append(exc.one_line() if hasattr(exc, "one_line") else str(exc))
        return
    except ImportError as exc:
        result.missing.append(f"onnxruntime cannot be imported: {exc}")
        return
    if require_cuda:
        if CUDA not in result.providers:
            result.missing.append(
                f"--require-cuda: onnxruntime offers {', '.join(result.providers) or 'nothing'}, "
                "no CUDAExecutionProvider (the image needs onnxruntime-gpu alone)"
            )
        else:
            _check_gpu_session(result)


def _check_ffmpeg(result: ProbeResult) -> None:
    """The ffmpeg a job would select, asked for every capability some job needs (a rotated
    source muxed to mp4 with AAC, Opus and FLAC audio): an image serves every job."""
    from farm.errors import FarmError
    from farm.media.ffmpeg import ALL_CAPABILITIES, probe_ffmpeg, select_ffmpeg

    try:
        binary = select_ffmpeg(ALL_CAPABILITIES)
    except FarmError as exc:
        result.missing.append(str(exc))
        # Still report what the first candidate can do, so the log says what is there.
        try:
            from farm.media.ffmpeg import ffmpeg_binary

            found = probe_ffmpeg(ffmpeg_binary())
            result.ffmpeg = _describe_ffmpeg(found.path, found.version, found.capabilities)
        except FarmError:
            pass
        return
    result.ffmpeg = _describe_ffmpeg(binary.path, binary.version, binary.capabilities)


def _describe_ffmpeg(path: str, version: str, capabilities: frozenset[str]) -> dict[str, Any]:
    return {"path": path, "version": version, "capabilities": sorted(capabilities)}


def _check_modules(result: ProbeResult) -> None:
    for name in NATIVE_MODULES:
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # an ImportError, or an OSError from a missing shared library
            result.missing.append(f"python module {name} cannot be imported: {exc}")
            continue
        result.modules[name] = str(getattr(module, "__version__", "?"))


def run_probe(*, require_cuda: bool = False) -> ProbeResult:
    """Every check; never raises for a missing piece (it goes into ``missing``)."""
    result = ProbeResult()
    _check_onnxruntime(result, require_cuda=require_cuda)
    _check_ffmpeg(result)
    _check_modules(result)
    return result


def _print_text(result: ProbeResult, *, quiet: bool) -> None:
    if not quiet:
        print(f"onnxruntime: {', '.join(result.onnxruntime) or 'not installed'}")
        print(f"execution providers: {', '.join(result.providers) or 'none'}")
        if result.gpu_session is not None:
            print(f"CUDA session ran on: {result.gpu_session}")
        if result.ffmpeg:
            caps = ", ".join(result.ffmpeg["capabilities"]) or "none"
            print(f"ffmpeg: {result.ffmpeg['path']} ({result.ffmpeg['version']}): {caps}")
        print("modules: " + ", ".join(f"{k} {v}" for k, v in result.modules.items()))
    for problem in result.missing:
        print(f"probe: missing: {problem}", file=sys.stderr)
    if not quiet or result.missing:
        print("probe: ok" if not result.missing else "probe: FAILED", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.probe", description=__doc__)
    parser.add_argument(
        "--require-cuda",
        action="store_true",
        help="fail unless onnxruntime runs a session on CUDA (the GPU worker group)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--quiet", action="store_true", help="print only problems")
    args = parser.parse_args(argv)
    result = run_probe(require_cuda=args.require_cuda)
    if args.json:
        print(json.dumps(asdict(result), indent=2))
    else:
        _print_text(result, quiet=args.quiet)
    return EXIT_MISSING if result.missing else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
