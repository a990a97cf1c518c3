"""onnxruntime sessions on a worker's device: which execution providers, with which options.

The providers are chosen at run time from what the installed onnxruntime offers and the device
the worker was given (`farm.devices.Device`, whose ``local_ids`` are the CUDA ordinals this
process sees after Ray set ``CUDA_VISIBLE_DEVICES``)::

    preference  offered by onnxruntime           providers
    cpu         anything                         CPU
    cuda        CUDA (+ TensorRT)                CUDA(device_id), CPU
    cuda        CPU only                         DeviceUnavailable: a one-line error
    tensorrt    TensorRT, CUDA                   TensorRT(device_id, engine cache), CUDA, CPU
    auto        CUDA, and the worker has a GPU   CUDA(device_id), CPU
    auto        otherwise                        CPU, with a note saying why (goes in the report)

Sessions are created inside the worker (never pickled across Ray), with intra-op threads set to
the worker's CPUs so two workers on one node do not fight over cores.

onnxruntime and onnxruntime-gpu install the same ``onnxruntime`` package directory, so with both
installed each overwrites the other's files and whichever was installed last half-works.
`check_single_runtime` refuses that state with the fix.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from farm.devices import Device, WorkerResources
from farm.errors import DeviceUnavailable, FarmError, ModelError, SpecError

ProviderPreference = Literal["auto", "cpu", "cuda", "tensorrt"]

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

RUNTIME_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")
GPU_INSTALL_FIX = (
    "pip uninstall -y onnxruntime onnxruntime-gpu && pip install --no-deps onnxruntime-gpu "
    "(or `make setup-gpu`)"
)


def provider_preference(device: str) -> ProviderPreference:
    """The job's ``--device`` (`farm.spec.DeviceChoice`) as a provider preference."""
    choices: dict[str, ProviderPreference] = {
        "auto": "auto",
        "cpu": "cpu",
        "cuda": "cuda",
        "tensorrt": "tensorrt",
    }
    if device not in choices:
        raise SpecError(f"unknown device {device!r}; use auto, cpu, cuda or tensorrt")
    return choices[device]


@dataclass(frozen=True)
class ProviderPlan:
    """The execution providers a session gets, and why (for the job report)."""

    providers: tuple[str | tuple[str, dict[str, Any]], ...]
    note: str | None = None
    """Set when ``auto`` fell back to the CPU, or a GPU was given but not used."""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p if isinstance(p, str) else p[0] for p in self.providers)

    @property
    def on_gpu(self) -> bool:
        return self.names[0] in (CUDA, TENSORRT)

    def describe(self) -> str:
        return ", ".join(name.removesuffix("ExecutionProvider") for name in self.names)


def installed_runtimes() -> tuple[str, ...]:
    """Which onnxruntime distributions pip has installed (by their metadata)."""
    found = []
    for name in RUNTIME_DISTRIBUTIONS:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(name)
    return tuple(found)


def check_single_runtime(installed: Sequence[str] | None = None) -> None:
    """`ModelError` when onnxruntime and onnxruntime-gpu are both installed (they clobber)."""
    installed = tuple(installed if installed is not None else installed_runtimes())
    if len(installed) > 1:
        raise ModelError(
            "onnxruntime and onnxruntime-gpu are both installed and overwrite each other's files; "
            f"keep one: {GPU_INSTALL_FIX}"
        )


NOT_DEVICES = frozenset({"AzureExecutionProvider"})
"""Providers onnxruntime lists that are not places to run a face model (remote endpoints)."""


def available_providers() -> tuple[str, ...]:
    """What the installed onnxruntime can run a model on, best first."""
    import onnxruntime as ort

    return tuple(p for p in ort.get_available_providers() if p not in NOT_DEVICES)


def plan_providers(
    preference: ProviderPreference,
    device: Device,
    available: Sequence[str],
    *,
    cache_dir: Path | None = None,
) -> ProviderPlan:
    """The providers for a session on ``device``; `DeviceUnavailable` when a GPU is demanded
    and onnxruntime (or the worker) has none."""
    offered = set(available)
    device_id = device.local_ids[0] if device.kind == "cuda" and device.ids else 0
    cuda = (CUDA, {"device_id": device_id, "cudnn_conv_algo_search": "EXHAUSTIVE"})
    if preference == "cpu":
        note = "the worker has a GPU but the job asked for the CPU" if device.ids else None
        return ProviderPlan((CPU,), note)
    if preference in ("cuda", "tensorrt"):
        wanted = CUDA if preference == "cuda" else TENSORRT
        if wanted not in offered:
            raise DeviceUnavailable(
                f"--device {preference}: the installed onnxruntime offers only "
                f"{', '.join(sorted(offered)) or 'nothing'}; install the GPU build "
                f"({GPU_INSTALL_FIX}) or use --device auto"
            )
        if device.kind != "cuda" or not device.ids:
            raise DeviceUnavailable(
                f"--device {preference}: this worker was given no GPU; ask for one with "
                "--gpus-per-worker 1 or use --device auto"
            )
        if preference == "cuda":
            return ProviderPlan((cuda, CPU))
        trt_options: dict[str, Any] = {"device_id": device_id, "trt_fp16_enable": False}
        if cache_dir is not None:
            trt_options |= {
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache_dir),
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": str(cache_dir),
            }
        return ProviderPlan(((TENSORRT, trt_options), cuda, CPU))
    # auto: the GPU when both the worker and onnxruntime have one, else the CPU, saying why.
    if device.kind == "cuda" and device.ids:
        if CUDA in offered:
            return ProviderPlan((cuda, CPU))
        return ProviderPlan(
            (CPU,),
            f"the worker has GPU {device.describe()} but onnxruntime offers no CUDA provider "
            f"({GPU_INSTALL_FIX}); ran on the CPU",
        )
    return ProviderPlan((CPU,), "no GPU was given to this worker; ran on the CPU")


@dataclass
class SessionFactory:
    """Opens onnxruntime sessions for one worker: its providers, its threads.

    ``available`` is read from onnxruntime unless given (tests pass ``("CPUExecutionProvider",)``
    to play a machine without CUDA). ``create`` is `onnxruntime.InferenceSession` unless given,
    so tests can check the options a GPU session would get without a GPU.
    """

    preference: ProviderPreference = "auto"
    resources: WorkerResources = field(default_factory=WorkerResources)
    available: tuple[str, ...] | None = None
    cache_dir: Path | None = None
    create: Callable[..., Any] | None = None

    def plan(self) -> ProviderPlan:
        available = self.available if self.available is not None else available_providers()
        return plan_providers(
            self.preference, self.resources.device, available, cache_dir=self.cache_dir
        )

    def session_options(self) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, self.resources.threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # warnings about unused initialisers are noise here
        return options

    def open(self, path: Path) -> Any:
        """An `InferenceSession` for the model file at ``path``; `ModelError` if it cannot load."""
        check_single_runtime()
        plan = self.plan()
        create = self.create
        if create is None:
            import onnxruntime as ort

            create = ort.InferenceSession
        try:
            return create(
                str(path), sess_options=self.session_options(), providers=list(plan.providers)
            )
        except FarmError:
            raise
        except Exception as exc:  # onnxruntime raises its own untyped errors
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"onnxruntime could not load {path}: {first}") from None


def session_on_gpu(session: Any) -> bool:
    """Whether a session's first provider is a GPU one (IO binding pays off there)."""
    providers = session.get_providers()
    return bool(providers) and providers[0] in (CUDA, TENSORRT)


def run_bound(session: Any, feeds: dict[str, Any], outputs: Sequence[str]) -> list[Any]:
    """Run a session; on CUDA through IO binding, so inputs go to the device once and outputs
    come back in one copy, instead of onnxruntime's per-run staging."""
    if not session_on_gpu(session):
        return list(session.run(list(outputs), feeds))
    binding = session.io_binding()
    for name, value in feeds.items():
        binding.bind_cpu_input(name, value)
    for name in outputs:
        binding.bind_output(name, "cuda")
    session.run_with_iobinding(binding)
    return list(binding.copy_outputs_to_cpu())
