"""OpenVINO on the CPU: IR (``.xml`` + ``.bin``) or a plain ``.onnx`` by name; formats openvino, openvino-int8."""

from ...registry import INT8, OPSET, BackendEntry, Container, FormatEntry, Option, Runtime, options

HERE = __name__

RUNTIME = Runtime(
    BackendEntry(
        "openvino", f"{HERE}.backend:OpenVINOBackend", (".xml",),
        Container(f"{HERE}.container:read_openvino", f"{HERE}.container:write_openvino"),
        ("cpu",), "openvino", device_help={"cpu": "the host CPU"}, also_runs=(".onnx",), companions=(".bin",),
        probe=f"{HERE}.probe:probe",  # what this machine really gives it (resnet-edge doctor)
        activation_scales=f"{HERE}.layers:activation_scales",
        description="OpenVINO (Intel CPUs; IR or ONNX)", tools=("openvino", "nncf"),
    ),
    (
        FormatEntry("openvino", f"{HERE}.convert:convert_float", ".xml", "fp32", "openvino",
                    "OpenVINO IR, inference precision recorded (f32, or bf16 where the CPU has it)",
                    options(Option("inference_precision", "f32", "f32, or bf16 where the CPU has it (recorded; "
                                   "OpenVINO would otherwise pick bf16 by itself on AMX CPUs).", str, ("f32", "bf16")),
                            OPSET),
                    tag="openvino", extra="openvino",
                    variants=({"inference_precision": "bf16", "when": f"{HERE}.backend:has_bf16"},)),
        FormatEntry("openvino-int8", f"{HERE}.convert:convert_int8", ".xml", "int8", "openvino",
                    "OpenVINO IR int8 (NNCF post-training quantization, or the project's Q/DQ ONNX)",
                    # qdq is the default because it measured better: ResNet-50 @224 on photos (make bench, AMD EPYC),
                    # qdq 100 % of 216 decisive crops at 5.77 ms, NNCF 92.6 % (fails parity) at 5.57 ms
                    options(Option("method", "qdq", "qdq (convert the project's calibrated Q/DQ ONNX) or nncf "
                                   "(NNCF post-training quantization of the IR from the same calibration set).", str,
                                   ("qdq", "nncf")), OPSET, *INT8),
                    tag="openvino_int8", extra="openvino", variants=({"method": "nncf"},)),
    ),
)
