"""LiteRT (TFLite) with XNNPACK: ``.tflite``; formats tflite, tflite-fp16, tflite-int8."""

from ...registry import INT8, BackendEntry, Container, FormatEntry, Option, Runtime, options

HERE = __name__

RUNTIME = Runtime(
    BackendEntry(
        "tflite", f"{HERE}.backend:TFLiteBackend", (".tflite",),
        Container(f"{HERE}.container:read_tflite", f"{HERE}.container:write_tflite"),
        ("cpu",), "tflite", device_help={"cpu": "the host CPU"},
        intermediates=f"{HERE}.layers:intermediates", activation_scales=f"{HERE}.layers:activation_scales",
        description="LiteRT (TFLite) with XNNPACK", tools=("ai-edge-litert",),
    ),
    (
        FormatEntry("tflite", f"{HERE}.convert:convert", ".tflite", "fp32", "tflite", "TFLite float32"),
        FormatEntry("tflite-fp16", f"{HERE}.convert:convert", ".tflite", "fp16", "tflite", "TFLite float16 weights",
                    tag="fp16"),
        FormatEntry("tflite-int8", f"{HERE}.convert:convert", ".tflite", "int8", "tflite",
                    "TFLite full-integer int8 (int8/uint8 in and out)",
                    options(Option("io", "int8", "int8 or uint8 input/output.", str, ("int8", "uint8")), *INT8),
                    tag="int8"),
    ),
)
