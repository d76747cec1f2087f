"""TensorRT engines on an NVIDIA GPU or Jetson, one job per module:

- :mod:`.backend`: ``TensorRTBackend``, the one ``tensorrt`` backend (devices "jetson", then "cuda").
- :mod:`.jetson`: device "jetson": ``JetsonBackend`` (DLA core, zero-copy buffers), named by the row below.
- :mod:`.compat`: which engines this TensorRT and GPU may load, and which batch sizes they take.
- :mod:`.cuda`: cuda-python: the runtime module, checked calls, the current GPU, host/device buffers.
- :mod:`.trtlog`: TensorRT itself: the lazy import, the error-keeping logger, its factories.
- :mod:`.convert`: the ``trt`` format, strongly typed, built from the shared ONNX route.
- :mod:`.container`: the metadata header before the engine.
"""

from pathlib import Path

from ...registry import CALIB_METHOD, INT8, OPSET, BackendEntry, Container, FormatEntry, Option, Runtime, options

HERE = __name__

RUNTIME = Runtime(
    BackendEntry(
        "tensorrt", f"{HERE}.backend:TensorRTBackend", (".engine", ".plan"),
        Container(f"{HERE}.container:read_engine", f"{HERE}.container:write_engine"),
        ("jetson", "cuda"), "tensorrt",
        probe=f"{HERE}.probe:probe",  # what this machine really gives it (resnet-edge doctor)
        device_help={"cuda": "an NVIDIA GPU through CUDA", "jetson": "an NVIDIA Jetson (integrated GPU, DLA cores)"},
        device_classes={"jetson": f"{HERE}.jetson:JetsonBackend"},
        description="TensorRT engines (NVIDIA GPU, Jetson)", needs="an NVIDIA GPU with TensorRT",
        tools=("tensorrt", "cuda-python", "cuda-bindings"),
    ),
    (
        FormatEntry("trt", f"{HERE}.convert:convert", ".engine", "fp32", "tensorrt",
                    "TensorRT engine, strongly typed, from ONNX",
                    options(
                        Option("precision", "fp32", "fp32, fp16 or int8.", str, ("fp32", "fp16", "int8")),
                        Option("workspace", 4096, "Workspace MiB.", int),
                        Option("batch", "1,1,1", "Optimization profile min,opt,max batch.", str),
                        Option("dla_core", None, "DLA core (Jetson), with GPU fallback.", int),
                        Option("timing_cache", None, "Timing cache file (read and updated).", Path),
                        Option("hardware_compatibility", False, "Ampere+ compatible engine.", bool),
                        CALIB_METHOD, OPSET, *INT8,
                    ),
                    aliases=("tensorrt", "engine"), tag="trt", extra="tensorrt"),
    ),
)
