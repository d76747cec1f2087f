"""LiteRT (TFLite) with XNNPACK: ``.tflite``; formats tflite, tflite-fp16, tflite-int8."""

from ...registry import INT8, BackendEntry, Container, FormatEntry, Option, Runtime, options

HERE = __name__

RUNTIME = Runtime(
    BackendEntry(
        "tflite", f"{HERE}.backend:TFLiteBackend", (".tflite",),
        Container(f"{HERE}.container:read_tflite", f"{HERE}.container:write_tflite"),
        ("cpu",), "tflite", device_help={"cpu": "the host CPU"},
        probe=f"{HERE}.probe:probe",  # what this machine really gives it (resnet-edge doctor)
        intermediates=f"{HERE}.layers:intermediates", activation_scales=f"{HERE}.layers:activation_scales",
        description="LiteRT (TFLite) with XNNPACK", tools=("ai-edge-litert", "litert-quantizer"),
    ),
    (
        FormatEntry("tflite", f"{HERE}.convert:convert", ".tflite", "fp32", "tflite", "TFLite float32"),
        FormatEntry("tflite-fp16", f"{HERE}.convert:convert", ".tflite", "fp16", "tflite", "TFLite float16 weights",
                    tag="fp16"),
        FormatEntry("tflite-int8", f"{HERE}.convert:convert", ".tflite", "int8", "tflite",
                    "TFLite full-integer int8 (int8/uint8 in and out)",
                    # litert is the default because it measured as good and cheaper to export: ResNet-50 @224 on
                    # photos (make bench, benchmarks/README.md "TFLite int8: which quantizer"); mlir stays a variant
                    options(Option("io", "int8", "int8 or uint8 input/output.", str, ("int8", "uint8")), *INT8,
                            Option("quantizer", "litert", "litert (LiteRT Quantizer on the float .tflite, no "
                                   "TensorFlow-private calls) or mlir (TensorFlow's converter-internal MLIR "
                                   "quantizer).", str, ("litert", "mlir"))),
                    tag="int8", variants=({"quantizer": "mlir"},)),
    ),
)
