"""NCNN (Tencent's runtime for Arm boards, Raspberry Pi among them): ``.ncnn.param`` + ``.ncnn.bin``, converted from
the shared ONNX with pnnx's self-contained binary; formats ncnn (fp32) and ncnn-fp16. No int8: NCNN's calibration
tools (ncnn2table, ncnn2int8) are on neither PyPI nor Debian."""

from ...registry import BackendEntry, Container, FormatEntry, Option, Runtime, options

HERE = __name__
PNNX = "pip install --no-deps pnnx  (its converter binary; the package's metadata asks for torch, which it does not need)"
WINOGRAD = Option("winograd", "auto", "auto (on from 160 px a side: at 32-128 px it ran 1.2-3.8x slower on x86), "
                  "on or off; recorded and followed at run time.", str, ("auto", "on", "off"))

RUNTIME = Runtime(
    BackendEntry(
        "ncnn", f"{HERE}.backend:NcnnBackend", (".ncnn.param",),
        Container(f"{HERE}.container:read_ncnn", f"{HERE}.container:write_ncnn"),
        ("cpu",), "ncnn", device_help={"cpu": "the host CPU"}, companions=(".bin", ".json"),
        probe=f"{HERE}.probe:probe",  # what this machine really gives it (resnet-edge doctor)
        description="NCNN (Arm boards, x86)", tools=("ncnn", "pnnx"),
    ),
    (
        FormatEntry("ncnn", f"{HERE}.convert:convert", ".ncnn.param", "fp32", "ncnn",
                    "NCNN fp32 (pnnx from the ONNX), fp32 weights and arithmetic",
                    options(Option("storage", "fp32", "fp32, or bf16 where the CPU has it (weights and activations "
                                   "stored in bf16, computed in fp32; recorded).", str, ("fp32", "bf16")), WINOGRAD),
                    tag="", extra="ncnn", install=PNNX,
                    variants=({"storage": "bf16", "when": "resnet_edge.machine:has_bf16"},)),
        FormatEntry("ncnn-fp16", f"{HERE}.convert:convert", ".ncnn.param", "fp16", "ncnn",
                    "NCNN with fp16 weights (half the file), fp16 storage and arithmetic where the CPU has them (Arm)",
                    options(WINOGRAD), tag="fp16", extra="ncnn", install=PNNX),
    ),
)
