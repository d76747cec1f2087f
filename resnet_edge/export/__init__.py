"""``export()``: Keras model to a deployable artifact, written atomically, metadata inside, verified.

A format is one module with one function ``convert(job) -> ModelMetadata`` that writes ``job.output``
(a temporary path), plus one row in ``FORMATS``.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._memo import KeepLast
from ..atomic import atomic_path
from ..errors import InvalidArgumentError, ModelFileError, ParityError

Progress = Callable[[str], None]

@dataclass(frozen=True)
class ExportFormat:
    """One row of the format table."""

    name: str
    target: str
    suffix: str
    precision: str
    aliases: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    calibrated: bool = False
    needs_gpu: bool = False
    description: str = ""

    def needs_calibration(self, options: Mapping[str, Any]) -> bool:
        """int8 formats (and TensorRT at int8) are built from calibrated data."""
        return self.calibrated or (self.name == "trt" and options.get("precision") == "int8")


_ONNX = {"opset": 17}
_INT8 = {"int8_softmax": False, "float_layers": ()}  # logits out of the integer graph; layers kept float
_INT8_ONNX = {**_ONNX, **_INT8, "scheme": "cpu", "calib_method": "minmax"}
_TRT = {"precision": "fp32", "workspace": 4096, "batch": "1,1,1", "dla_core": None,
        "timing_cache": None, "hardware_compatibility": False, "calib_method": "minmax", "opset": 17, **_INT8}

FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat("onnx", "resnet_edge.export.onnx:convert", ".onnx", "fp32", options=_ONNX,
                     description="ONNX fp32 (tf2onnx), dynamic batch"),
        ExportFormat("onnx-fp16", "resnet_edge.export.onnx_fp16:convert", ".onnx", "fp16", options=_ONNX,
                     description="ONNX fp16 weights and compute, fp32 inputs/outputs"),
        ExportFormat("onnx-int8", "resnet_edge.export.onnx_int8:convert", ".onnx", "int8", options=_INT8_ONNX,
                     calibrated=True, description="ONNX Runtime static QDQ int8, per-channel weights"),
        ExportFormat("tflite", "resnet_edge.export.tflite:convert", ".tflite", "fp32",
                     description="TFLite float32"),
        ExportFormat("tflite-fp16", "resnet_edge.export.tflite:convert", ".tflite", "fp16",
                     description="TFLite float16 weights"),
        ExportFormat("tflite-int8", "resnet_edge.export.tflite:convert", ".tflite", "int8", options={"io": "int8", **_INT8},
                     calibrated=True, description="TFLite full-integer int8 (int8/uint8 in and out)"),
        ExportFormat("trt", "resnet_edge.export.tensorrt:convert", ".engine", "fp32", aliases=("tensorrt", "engine"),
                     options=_TRT, needs_gpu=True, description="TensorRT engine, strongly typed, from ONNX"),
    )
}


def resolve_format(name: str) -> ExportFormat:
    """A format by name or alias; an unknown one is an error naming the nearest valid format."""
    key = name.lower().strip()
    for fmt in FORMATS.values():
        if key == fmt.name or key in fmt.aliases:
            return fmt
    names = list(FORMATS) + [a for f in FORMATS.values() for a in f.aliases]
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.4)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise InvalidArgumentError(f"unknown format {name!r}{hint} (valid: {', '.join(FORMATS)})")


def resolve_options(fmt: ExportFormat, given: Mapping[str, Any]) -> dict[str, Any]:
    """The format's defaults updated with ``given``; an option the format does not take is an error."""
    given = {k: v for k, v in given.items() if v is not None}
    unknown = sorted(set(given) - set(fmt.options))
    if unknown:
        applicable = ", ".join(f"--{o.replace('_', '-')}" for o in fmt.options) or "none"
        flags = ", ".join(f"--{o.replace('_', '-')}" for o in unknown)
        raise InvalidArgumentError(f"{flags} does not apply to {fmt.name} (options for {fmt.name}: {applicable})")
    return {**fmt.options, **given}


@dataclass
class ExportJob:
    """Everything a format's ``convert`` needs; ``output`` is a temporary path it must write."""

    model: Any
    metadata: Any
    output: Path
    format: ExportFormat
    options: dict[str, Any]
    calibration: Any = None
    progress: Progress = lambda message: None


@dataclass
class ExportResult:
    path: Path
    format: str
    size_bytes: int
    seconds: float
    metadata: Any
    parity: Any = None
    fallback: Any = None

    def summary(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "format": self.format,
            "size_bytes": self.size_bytes,
            "seconds": round(self.seconds, 3),
            "parity": None if self.parity is None else self.parity.to_dict(),
            "fallback": None if self.fallback is None else self.fallback.to_dict(),
        }


def weights_digest(model) -> str:
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(weight.numpy().tobytes())
    return digest.hexdigest()


def model_digest(model) -> str:
    """Architecture and weights: a kept conversion or reference output is reused only for the very same model."""
    config = json.dumps(model.get_config(), sort_keys=True, default=str).encode()
    return hashlib.sha256(config + weights_digest(model).encode()).hexdigest()


def ends_in_logits(job: ExportJob) -> bool:
    """An int8 export leaves a classifier's softmax out of the integer graph unless ``int8_softmax`` asks for it."""
    return (job.format.precision == "int8" and not job.options.get("int8_softmax")
            and job.metadata.output_activation == "softmax")


def calibration_extra(job: ExportJob, float_layers: tuple[str, ...]) -> dict[str, Any]:
    """What every int8 artifact records of its calibration and of the layers kept in float."""
    extra: dict[str, Any] = {"calibration_images": len(job.calibration), "calibration_source": job.calibration.source}
    if float_layers:
        extra["float_layers"] = sorted(float_layers)
    return extra


def default_output(model_path: str | os.PathLike[str], fmt: ExportFormat) -> Path:
    """Where an export goes by default: beside the model, ``model.onnx``, ``model_int8.tflite``, ``model_trt.engine``."""
    model_path = Path(model_path)
    variant = fmt.name.split("-", 1)[1] if "-" in fmt.name else ("" if fmt.name in ("onnx", "tflite") else fmt.name)
    return model_path.with_name(f"{model_path.stem}{'_' + variant if variant else ''}{fmt.suffix}")


_loaded = KeepLast()  # the last Keras file: (model, metadata, sha256)
_preprocessed = KeepLast()  # the last model put behind a preprocessing front


def load_source(path: Path) -> tuple[Any, Any, str]:
    """(model, metadata, sha256) of a Keras file, loaded once for the several formats exported from it."""
    from ..metadata import sha256_file
    from ..models.io import load_model

    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    stat = path.stat()
    return _loaded.get((str(path.resolve()), stat.st_mtime_ns, stat.st_size),
                       lambda: (*load_model(path), sha256_file(path)))


def converter(fmt: ExportFormat) -> Callable[[ExportJob], Any]:
    module_name, function = fmt.target.split(":")
    return getattr(importlib.import_module(module_name), function)


def export(
    model: Any,
    format: str,
    output: str | os.PathLike[str],
    *,
    calibration: Any = None,
    verify: bool = True,
    verify_data: Any = None,
    verify_count: int = 500,
    budget: Any = None,
    preprocessing: str | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> ExportResult:
    """Export a Keras model (object or ``.keras`` path) to ``format`` at ``output``.

    Writes atomically, embeds ModelMetadata, and (unless ``verify=False``) runs the artifact beside the
    Keras model on held-out images, raising ParityError when it is outside its precision's tolerance.
    ``budget`` (a ``fallback.AccuracyBudget``, int8 formats) rebuilds with the layers that lose the most in
    float until the artifact meets it; with ``budget.keep_best`` the best artifact is written even when
    none meets it (and ParityError is still raised). ``preprocessing`` (caffe, torch, tf, scale) puts that
    preprocessing in front of a model that has none inside (``keras.applications``), so the artifact takes
    RGB pixels 0-255 and records it.
    """
    from ..models.io import describe
    from ..models.resnet import with_preprocessing

    fmt = resolve_format(format)
    resolved = resolve_options(fmt, options)
    output = Path(output)
    if output.suffix.lower() != fmt.suffix and not (fmt.suffix == ".engine" and output.suffix.lower() == ".plan"):
        raise InvalidArgumentError(f"{output}: a {fmt.name} file must end in {fmt.suffix}")
    if fmt.needs_calibration(resolved) and calibration is None:
        raise InvalidArgumentError(f"{fmt.name} needs calibration data: pass --calib-data DIR|digits|FILE.npy")
    if budget is not None and not (fmt.needs_calibration(resolved) and "float_layers" in fmt.options):
        raise InvalidArgumentError(f"--max-drop applies to int8 formats, not {fmt.name}")
    if budget is not None and not verify:
        raise InvalidArgumentError("--max-drop needs verification; drop --no-verify")
    say = progress or (lambda message: None)
    if isinstance(model, (str, os.PathLike)):
        model, metadata, source_digest = load_source(Path(model))
    else:
        metadata, source_digest = describe(model), weights_digest(model)
    if preprocessing is not None:
        model = _preprocessed.get((id(model), model_digest(model), preprocessing),
                                  lambda: with_preprocessing(model, preprocessing))
        metadata = metadata.replace(preprocessing=preprocessing)
    if metadata.output_activation is None:  # a model saved before resnet-edge recorded it
        from ..models.resnet import output_activation_of

        metadata = metadata.replace(output_activation=output_activation_of(model))
    metadata = metadata.replace(source_sha256=source_digest)
    if calibration is not None:
        calibration = calibration.resized(metadata.input_shape[:2], metadata.resize)

    started = time.perf_counter()
    failure = None
    with atomic_path(output) as tmp:
        job = ExportJob(model, metadata, tmp, fmt, resolved, calibration, say)
        final_metadata = converter(fmt)(job)
        seconds = time.perf_counter() - started
        report = fallback = None
        if verify:
            from ..parity import matching_reference, verify_artifact

            data = verify_data if verify_data is not None else (calibration.holdout if calibration else None)
            precision = final_metadata.precision

            def check():
                return verify_artifact(model, tmp, precision, data, count=verify_count, label=fmt.name)

            say(f"verifying {fmt.name} against the Keras model")
            report = check()
            say(report.line())
            if budget is not None:
                from ..fallback import fit_budget

                final_metadata, report, fallback = fit_budget(
                    job, report, converter(fmt), check,
                    lambda meta: matching_reference(model, meta.output_activation), budget, say)
                if not fallback.met and report.passed:
                    report.failures.append(budget.describe(report))
            hint = "export again with --no-verify to keep it anyway"
            if budget is None and not report.passed and report.precision == "int8":
                hint = "--max-drop PCT keeps the layers that lose the most in float; " + hint
            try:
                report.raise_if_failed(hint=hint)
            except ParityError as exc:
                if budget is None or not budget.keep_best:
                    raise
                failure = exc
    if failure is not None:
        raise ParityError(f"{failure} (the best artifact was kept: {output})")
    return ExportResult(output, fmt.name, output.stat().st_size, seconds, final_metadata, report, fallback)


__all__ = ["FORMATS", "ExportFormat", "ExportJob", "ExportResult", "default_output", "export", "resolve_format", "resolve_options"]
