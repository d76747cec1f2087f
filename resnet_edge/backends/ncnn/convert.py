"""Formats ``ncnn`` and ``ncnn-fp16``: the shared fp32 ONNX, batch norms folded, converted by pnnx's binary.

pnnx is on PyPI with a self-contained converter binary, but its package metadata asks for torch, which the binary
does not need: install it with ``pip install --no-deps pnnx`` (``import pnnx`` itself imports torch, so the binary
is found without importing the package). Two things pnnx does silently are caught here: tf2onnx's ``Pad`` has no
``mode`` attribute, which pnnx leaves unconverted while exiting 0 (``load_param`` then fails), so ``mode=constant``
is written in; and any op pnnx reports as ``ignore``/``todo`` fails the export. pnnx writes a dozen side files
beside its input; it runs in a temporary folder and only the ``.param`` and ``.bin`` are kept.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..._lazy import lazy_import
from ...errors import ExportError, MissingDependencyError, first_line
from ...interchange import build_onnx, fold_constants
from ...metadata import ModelMetadata, tool_versions
from ...runtime import ExportJob
from .container import SIDECAR, weights_digest, weights_path

INPUT_BLOB = "in0"  # pnnx names the input in0 and the outputs out0, out1, ... in the ONNX graph's output order
PNNX_TIMEOUT_S = 600
WINOGRAD_FROM = 160  # input side from which Winograd convolutions pay on x86 (measured: README "NCNN")


def pnnx_binary() -> str:
    """The pnnx converter binary inside the ``pnnx`` package, found without importing it (that imports torch)."""
    spec = importlib.util.find_spec("pnnx")
    if spec is None or spec.origin is None:
        raise MissingDependencyError("exporting to NCNN needs pnnx's converter: pip install --no-deps pnnx "
                                     "(its metadata asks for torch, which the converter binary does not need)")
    binary = Path(spec.origin).parent / "pnnx"
    if not os.access(binary, os.X_OK):
        raise MissingDependencyError(f"{binary}: the pnnx package has no converter binary for this platform "
                                     "(PyPI has x86_64 and aarch64 Linux wheels)")
    return str(binary)


def with_pad_modes(proto) -> None:
    """Give every ``Pad`` an explicit ``mode`` (ONNX's default, constant): pnnx matches only explicit ones."""
    helper = lazy_import("onnx.helper", extra="export")
    for node in proto.graph.node:
        if node.op_type == "Pad" and not any(a.name == "mode" for a in node.attribute):
            node.attribute.append(helper.make_attribute("mode", "constant"))


def run_pnnx(onnx_path: Path, param: Path, weights: Path, fp16: bool) -> None:
    """Convert with pnnx, its side files kept in ``onnx_path``'s folder; a silently skipped op is an ExportError."""
    folder = onnx_path.parent
    side = {"pnnxparam": "m.pnnx.param", "pnnxbin": "m.pnnx.bin", "pnnxpy": "m_pnnx.py", "pnnxonnx": "m.pnnx.onnx",
            "ncnnpy": "m_ncnn.py"}
    command = [pnnx_binary(), str(onnx_path), f"fp16={int(fp16)}", f"ncnnparam={param}", f"ncnnbin={weights}",
               *(f"{key}={folder / name}" for key, name in side.items())]
    try:
        done = subprocess.run(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              errors="replace", timeout=PNNX_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ExportError(f"pnnx did not finish in {PNNX_TIMEOUT_S} s") from exc
    except OSError as exc:
        raise ExportError(f"pnnx could not start: {first_line(exc)}") from exc
    skipped = [line for line in done.stdout.splitlines() if line.startswith(("ignore ", "todo "))]
    if done.returncode != 0 or not param.is_file() or not weights.is_file():
        last = [line for line in done.stdout.splitlines() if line.strip()][-1:] or ["no output"]
        raise ExportError(f"pnnx failed (exit code {done.returncode}): {first_line(last[0])}")
    if skipped:
        raise ExportError(f"pnnx could not convert every op ({len(skipped)} left): {first_line(skipped[0])}")


def convert(job: ExportJob) -> ModelMetadata:
    """Write ``job.output`` (``.ncnn.param``) and its ``.ncnn.bin``; the sidecar metadata is written beside them."""
    onnx = lazy_import("onnx", extra="export")
    fp16 = job.format.precision == "fp16"
    proto, onnx_metadata = build_onnx(job, "fp32")
    outputs = [output.name for output in proto.graph.output]
    proto = fold_constants(proto)
    with_pad_modes(proto)
    side = min(job.metadata.input_shape[:2])
    winograd = job.options.get("winograd", "auto")
    job.progress(f"converting to NCNN with pnnx ({'fp16' if fp16 else 'fp32'} weights)")
    output = Path(job.output)
    with tempfile.TemporaryDirectory(prefix="resnet-edge-pnnx-") as workdir:
        source = Path(workdir) / "model.onnx"
        onnx.save(proto, str(source))
        param, weights = Path(workdir) / "m.ncnn.param", Path(workdir) / "m.ncnn.bin"
        run_pnnx(source, param, weights, fp16)
        shutil.move(weights, weights_path(output))
        shutil.move(param, output)
    extra = {
        "opset": onnx_metadata.extra.get("opset"),
        "input_blob": INPUT_BLOB,
        "outputs": [{"blob": f"out{index}", "name": name} for index, name in enumerate(outputs)],
        "storage": job.options.get("storage", "fp16" if fp16 else "fp32"),
        "winograd": winograd == "on" or (winograd == "auto" and side >= WINOGRAD_FROM),
        "weights_sha256": weights_digest(weights_path(output)),
    }
    precision = "bf16" if extra["storage"] == "bf16" else job.format.precision
    metadata = job.metadata.replace(format=job.format.name, precision=precision, extra=extra,
                                    tools=tool_versions(*onnx_metadata.tools, "ncnn", "pnnx"))
    output.with_suffix(SIDECAR).write_text(metadata.to_json(), encoding="utf-8")
    return metadata
