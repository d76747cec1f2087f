"""What this machine really gives ONNX Runtime (``resnet-edge doctor``): each execution provider is asked to load
and run a one-node model, since onnxruntime-gpu lists the CUDA and TensorRT providers even where their libraries
cannot load (and then runs on the CPU without a word). Also which CUDA the installed build wants, and whether the
CUDA/cuDNN libraries it links load here."""

from __future__ import annotations

import ctypes
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from ... import machine
from ...errors import first_line
from ...metadata import tool_versions
from .backend import PROVIDERS, _ort, stdout_to_stderr

GPU_INSTALL = ("pip uninstall -y onnxruntime && pip install 'resnet-edge[gpu]'  (onnxruntime-gpu>=1.27: CUDA 13 + "
               "cuDNN 9; a CUDA 12 driver: 'resnet-edge[gpu-cu12]', onnxruntime-gpu<1.27)")
CUDA_LIBRARIES_INSTALL = "pip install 'onnxruntime-gpu[cuda,cudnn]'  (CUDA and cuDNN as pip packages), or a system CUDA/cuDNN"
ONE_NODE_OPSET = 17
ONE_NODE_IR = 8  # readable by every onnxruntime the project supports (1.18+)


def cuda_libraries(cuda_major: int) -> tuple[str, ...]:
    """The sonames the CUDA provider links for a CUDA major (``readelf -d libonnxruntime_providers_cuda.so``:
    1.26.0 is CUDA 12.8, 1.27.0 CUDA 13.0, which also needs NVRTC)."""
    fft = {12: 11, 13: 12}.get(cuda_major, cuda_major - 1)
    names = [f"libcudart.so.{cuda_major}", f"libcublas.so.{cuda_major}", f"libcublasLt.so.{cuda_major}",
             f"libcufft.so.{fft}", "libcurand.so.10", "libcudnn.so.9"]
    if cuda_major >= 13:
        names.append(f"libnvrtc.so.{cuda_major}")
    return tuple(names)


def _pip_library(name: str) -> Path | None:
    """``name`` inside the NVIDIA pip packages (``site-packages/nvidia/*/lib``), where ``[cuda,cudnn]`` puts them."""
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        for found in Path(root).glob(f"*/lib/{name}"):
            return found
    return None


def library_status(names: tuple[str, ...]) -> dict[str, str]:
    """Each library: ``loads`` (the loader finds it), ``in a pip package only: PATH`` (present, but the loader will
    not find it unless it is preloaded or on LD_LIBRARY_PATH), or ``missing``. Never raises."""
    status = {}
    for name in names:
        try:
            ctypes.CDLL(name)
            status[name] = "loads"
            continue
        except OSError:
            pass
        found = _pip_library(name)
        status[name] = f"in a pip package only: {found}" if found else "missing"
    return status


def one_node_model() -> bytes | None:
    """A Relu on a float [1, 4] tensor, serialized; None when the onnx package is not installed."""
    if importlib.util.find_spec("onnx") is None:
        return None
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONE_NODE_OPSET)])
    model.ir_version = ONE_NODE_IR
    return model.SerializeToString()


def run_one_node(ort: Any, model: bytes, provider: str) -> dict[str, Any]:
    """Load and run the one-node model on ``provider`` alone (CPU as the fallback ONNX Runtime would take)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    chain = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
    try:
        with stdout_to_stderr():
            session = ort.InferenceSession(model, options, providers=chain)
        x = np.array([[-1.0, 0.0, 2.0, -3.0]], dtype=np.float32)
        y = session.run(None, {"x": x})[0]
    except Exception as exc:
        return {"ok": False, "detail": f"cannot load or run: {first_line(exc, 200)}"}
    active = session.get_providers()[0]
    if active != provider:
        return {"ok": False, "detail": f"{provider} did not load: the model ran on {active}"}
    if not np.array_equal(y, np.maximum(x, 0)):
        return {"ok": False, "detail": f"{provider} ran the model but returned {y.tolist()}"}
    return {"ok": True, "detail": f"ran a one-node model on {provider}"}


def _build_info(ort: Any) -> dict[str, Any]:
    from onnxruntime.capi import build_and_package_info as info

    facts: dict[str, Any] = {"package": getattr(info, "package_name", None), "version": ort.__version__}
    for key in ("cuda_version", "cudnn_version"):
        if getattr(info, key, None):
            facts[key.replace("_version", "_wanted")] = getattr(info, key)
    if hasattr(ort, "get_build_info"):
        facts["build"] = ort.get_build_info()
    return facts


def probe() -> dict[str, Any]:
    """Providers listed and really working, the CUDA the build wants and whether its libraries load."""
    ort = _ort()
    listed = list(ort.get_available_providers())
    facts: dict[str, Any] = {**_build_info(ort), "providers": listed}
    missing: list[str] = []
    installed = tool_versions("onnxruntime", "onnxruntime-gpu")
    if len(installed) == 2:
        missing.append("pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'resnet-edge[gpu]'  (both are "
                       "installed and share one module: whichever was installed last wins)")
    wanted = facts.get("cuda_wanted")
    if wanted:
        libraries = library_status(cuda_libraries(int(str(wanted).split(".")[0])))
        facts["cuda_libraries"] = libraries
        if any(state != "loads" for state in libraries.values()):
            missing.append(CUDA_LIBRARIES_INSTALL)
    model = one_node_model()
    devices: dict[str, dict[str, Any]] = {}
    for device, chain in PROVIDERS.items():
        provider = chain[0]
        if provider not in listed:
            devices[device] = {"ok": False, "detail": f"this onnxruntime ({facts.get('package')}) has no {provider}"}
        elif model is None:
            devices[device] = {"ok": None, "detail": f"{provider} listed; not run (the onnx package builds the "
                                                     "one-node model: pip install onnx)"}
        else:
            devices[device] = run_one_node(ort, model, provider)
    if "CUDAExecutionProvider" not in listed and machine.nvidia_gpus().get("gpus"):
        missing.append(GPU_INSTALL)
    return {"devices": devices, "facts": facts, "missing": missing}

