"""``export()``: Keras model to a deployable artifact, written atomically, metadata inside, verified.

A format is a converter ``convert(job) -> ModelMetadata`` that writes ``job.output`` (a temporary path,
and its companions beside it, OpenVINO's ``.bin``), plus one ``FormatEntry`` row in ``registry.FORMATS``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._memo import KeepLast
from ..atomic import atomic_path
from ..errors import InvalidArgumentError, ModelFileError, ParityError
from ..registry import BACKENDS, FORMATS, FormatEntry, companions_of, resolve, resolve_format

Progress = Callable[[str], None]


@dataclass
class ExportJob:
    """Everything a format's ``convert`` needs; ``output`` is a temporary path it must write."""

    model: Any
    metadata: Any
    output: Path
    format: FormatEntry
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


def default_output(model_path: str | os.PathLike[str], fmt: FormatEntry) -> Path:
    """Where an export goes by default: beside the model, ``model.onnx``, ``model_int8.tflite``, ``model_trt.engine``."""
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.stem}{'_' + fmt.tag if fmt.tag else ''}{fmt.suffix}")


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


def converter(fmt: FormatEntry) -> Callable[[ExportJob], Any]:
    return resolve(fmt.target)


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
    from ..models.reference import model_digest, weights_digest
    from ..models.resnet import with_preprocessing

    fmt = resolve_format(format)
    resolved = fmt.resolve_options(options)
    output = Path(output)
    suffixes = (fmt.suffix, *BACKENDS[fmt.backend].suffixes)
    if output.suffix.lower() not in suffixes:
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
    with atomic_path(output, fmt.companions) as tmp:
        job = ExportJob(model, metadata, tmp, fmt, resolved, calibration, say)
        final_metadata = converter(fmt)(job)
        seconds = time.perf_counter() - started
        report = fallback = None
        if verify:
            from ..models.reference import matching_reference
            from ..parity import verify_artifact

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
    size = sum(path.stat().st_size for path in (output, *companions_of(output)))  # the IR's .bin counts
    return ExportResult(output, fmt.name, size, seconds, final_metadata, report, fallback)


__all__ = ["FORMATS", "ExportJob", "ExportResult", "FormatEntry", "default_output", "export", "resolve_format"]
