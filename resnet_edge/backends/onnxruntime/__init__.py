"""ONNX Runtime: ``.onnx`` on the CPU, CUDA or its TensorRT execution provider; formats onnx, onnx-fp16, onnx-int8."""

from ...registry import CALIB_METHOD, INT8, OPSET, BackendEntry, Container, FormatEntry, Option, Runtime, options

HERE = __name__

RUNTIME = Runtime(
    BackendEntry(
        "onnxruntime", f"{HERE}.backend:OnnxRuntimeBackend", (".onnx",),
        Container(f"{HERE}.container:read_onnx", f"{HERE}.container:write_onnx"),
        ("tensorrt-ep", "cuda", "cpu"), "onnxruntime",
        probe=f"{HERE}.probe:probe",  # what this machine really gives it (resnet-edge doctor)
        device_help={"cpu": "the host CPU", "cuda": "an NVIDIA GPU through CUDA",
                     "tensorrt-ep": "ONNX Runtime's TensorRT execution provider (an NVIDIA GPU)"},
        intermediates=f"{HERE}.layers:intermediates", activation_scales=f"{HERE}.layers:activation_scales",
        description="ONNX Runtime", tools=("tf2onnx", "onnx", "onnxruntime", "onnxruntime-gpu"),
    ),
    (
        FormatEntry("onnx", f"{HERE}.convert:convert_fp32", ".onnx", "fp32", "onnxruntime",
                    "ONNX fp32 (tf2onnx), dynamic batch", options(OPSET)),
        FormatEntry("onnx-fp16", f"{HERE}.convert:convert_fp16", ".onnx", "fp16", "onnxruntime",
                    "ONNX fp16 weights and compute, fp32 inputs/outputs", options(OPSET), tag="fp16"),
        FormatEntry("onnx-int8", f"{HERE}.convert:convert_int8", ".onnx", "int8", "onnxruntime",
                    "ONNX Runtime static QDQ int8, per-channel weights",
                    options(OPSET, *INT8, Option("scheme", "u8s8", "u8s8 (uint8 activations, int8 weights: what ONNX "
                                                 "Runtime fuses on x86) or s8s8 (symmetric int8, for TensorRT).", str,
                                                 ("u8s8", "s8s8")), CALIB_METHOD),
                    tag="int8"),
    ),
)
