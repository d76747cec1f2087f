"""What this machine really gives TensorRT (``resnet-edge doctor``): TensorRT's version, a Builder really created
(which initialises CUDA), its DLA cores, cuda-python's version against the driver's CUDA, the GPU, and on a Jetson
the JetPack/L4T release. Also the hardware paths ``doctor --selftest`` adds: fp16 and int8 engines, and a DLA engine
where TensorRT has DLA cores."""

from __future__ import annotations

from typing import Any

from ... import machine
from ...errors import MissingDependencyError, first_line
from .cuda import cuda_runtime, gpu_info
from .trtlog import create, import_tensorrt, make_logger

DESKTOP_INSTALL = ("pip install 'resnet-edge[tensorrt]'  (TensorRT for CUDA 13: driver R580+; a CUDA 12 driver: "
                   "'resnet-edge[tensorrt-cu12]')")
JETSON_INSTALL = {
    "6": "sudo apt install python3-libnvinfer; a venv made with --system-site-packages; "
         "pip install 'resnet-edge[jetpack6]'  (TensorRT 10.3 and CUDA 12.6 come with JetPack 6)",
    "7": "sudo apt install python3-libnvinfer; a venv made with --system-site-packages; "
         "pip install 'resnet-edge[jetpack7]'  (TensorRT 10.13/10.16 and CUDA 13 come with JetPack 7)",
}
CUDA_PYTHON_EXTRA = {12: "jetpack6", 13: "jetpack7"}
SELFTEST_PRECISIONS = ("fp16", "int8")
DLA_PRECISION = "fp16"  # DLA runs fp16 and int8 layers only


def _cuda_version(value: int) -> str:
    """CUDA's integer version (12060) as ``12.6``."""
    return f"{value // 1000}.{value % 1000 // 10}"


def jetson_install(jetson: dict[str, Any] | None) -> str:
    release = str((jetson or {}).get("jetpack") or "")
    return JETSON_INSTALL.get(release[:1], JETSON_INSTALL["6"] + "; on JetPack 7: 'resnet-edge[jetpack7]'")


def _cuda_facts(runtime: Any) -> dict[str, Any]:
    """The CUDA the driver supports and the one cuda-python was built for (``cudaDriverGetVersion``,
    ``cudaRuntimeGetVersion``), where this cuda-python offers them."""
    facts: dict[str, Any] = {}
    for key, call in (("driver_cuda", "cudaDriverGetVersion"), ("cuda_python_runtime", "cudaRuntimeGetVersion")):
        function = getattr(runtime, call, None)
        if function is None:
            continue
        try:
            status, value = function()
        except Exception:
            continue
        if status == runtime.cudaError_t.cudaSuccess and value:
            facts[key] = _cuda_version(int(value))
    return facts


def cuda_mismatch(facts: dict[str, Any], jetson: dict[str, Any] | None) -> str | None:
    """An install line when cuda-python is built for a newer CUDA major than the driver runs (cuda-python 13 on
    JetPack 6's CUDA 12.6 driver), else None."""
    driver, runtime = facts.get("driver_cuda"), facts.get("cuda_python_runtime")
    if not driver or not runtime or int(runtime.split(".")[0]) <= int(driver.split(".")[0]):
        return None
    major = int(driver.split(".")[0])
    if jetson is not None and major in CUDA_PYTHON_EXTRA:
        return (f"pip install 'resnet-edge[{CUDA_PYTHON_EXTRA[major]}]'  (cuda-python for CUDA {runtime} needs a "
                f"newer driver than this one, CUDA {driver})")
    return (f"pip install 'cuda-python>={major},<{major + 1}'  (cuda-python for CUDA {runtime} needs a newer driver "
            f"than this one, CUDA {driver})")


def probe() -> dict[str, Any]:
    """TensorRT, cuda-python, the GPU and the DLA, each as far as this machine goes; never raises for a missing
    piece (each is named with the install line that brings it)."""
    jetson = machine.jetson()
    facts: dict[str, Any] = {"jetson": jetson} if jetson else {}
    no = {"ok": False, "detail": ""}
    devices = {"cuda": dict(no), "jetson": dict(no)}
    if jetson is None:
        devices["jetson"]["detail"] = "not a Jetson (no /etc/nv_tegra_release)"
    try:
        trt = import_tensorrt()
    except MissingDependencyError:
        gpus = machine.nvidia_gpus().get("gpus")
        for state in devices.values():
            state["detail"] = state["detail"] or "TensorRT is not installed" + ("" if gpus else " (nor is an NVIDIA GPU)")
        install = jetson_install(jetson) if jetson else DESKTOP_INSTALL if gpus else None
        return {"devices": devices, "facts": facts, "missing": [install] if install else []}
    facts["tensorrt"] = trt.__version__
    missing: list[str] = []
    try:
        runtime = cuda_runtime()
        facts.update(_cuda_facts(runtime))
        gpu = gpu_info(runtime)
        facts["gpu"] = {"name": gpu.name, "compute_capability": gpu.compute_capability, "integrated": gpu.integrated}
    except MissingDependencyError:
        missing.append(f"pip install 'resnet-edge[{CUDA_PYTHON_EXTRA[12] if jetson else 'tensorrt'}]'  (cuda-python)")
        for state in devices.values():
            state["detail"] = state["detail"] or "cuda-python is not installed"
        return {"devices": devices, "facts": facts, "missing": missing}
    except Exception as exc:
        mismatch = cuda_mismatch(facts, jetson)
        missing += [mismatch] if mismatch else []
        for state in devices.values():
            state["detail"] = state["detail"] or first_line(exc, 200)
        return {"devices": devices, "facts": facts, "missing": missing}
    try:
        logger = make_logger(trt)
        builder = create(logger, trt.Builder, logger)
        facts["dla_cores"] = int(builder.num_DLA_cores)
    except Exception as exc:
        for state in devices.values():
            state["detail"] = state["detail"] or f"no TensorRT Builder: {first_line(exc, 200)}"
        return {"devices": devices, "facts": facts, "missing": missing}
    made = f"created a TensorRT {trt.__version__} Builder on {gpu.name} (compute capability {gpu.compute_capability})"
    devices["cuda"] = {"ok": True, "detail": made}
    if jetson is not None:
        devices["jetson"] = {"ok": True, "detail": f"{made}; {facts['dla_cores']} DLA core(s)"}
    selftest = [{"options": {"precision": precision}} for precision in SELFTEST_PRECISIONS]
    if jetson is not None and facts["dla_cores"] > 0:
        selftest.append({"options": {"precision": DLA_PRECISION, "dla_core": 0}, "devices": ["jetson"]})
    return {"devices": devices, "facts": facts, "missing": missing, "selftest": {"trt": selftest}}
