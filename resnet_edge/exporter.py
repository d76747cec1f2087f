"""``export()``: Keras model to a deployable artifact, written atomically, metadata inside, verified.

A format is a converter ``convert(job) -> ModelMetadata`` that writes ``job.output`` (a temporary path,
and its companions beside it, OpenVINO's ``.bin``), plus one ``FormatEntry`` row in ``registry.FORMATS``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._memo import KeepLast, PerModel
from .atomic import atomic_path
from .errors import InvalidArgumentError, ModelFileError, ParityError
from .registry import (
    BACKENDS,
    FORMATS,
    KERAS_SUFFIXES,
    FormatEntry,
    companions_of,
    find_format,
    has_suffix,
    load_target,
)
from .runtime import ExportJob

DEFAULT_CALIBRATION_COUNT = 300

Progress = Callable[[str], None]


@dataclass
class ExportResult:
    path: Path
    format: str
    size_bytes: int
    seconds: float
    metadata: Any
    parity: Any = None
    fallback: Any = None
    calibration_report: Any = None

    def summary(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "format": self.format,
            "size_bytes": self.size_bytes,
            "seconds": round(self.seconds, 3),
            "parity": None if self.parity is None else self.parity.to_dict(),
            "fallback": None if self.fallback is None else self.fallback.to_dict(),
            "calibration_report": None if self.calibration_report is None else self.calibration_report.to_dict(),
        }


def default_output(model_path: str | os.PathLike[str], fmt: FormatEntry) -> Path:
    """Where an export goes by default: beside the model, ``model.onnx``, ``model_int8.tflite``, ``model_trt.engine``."""
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.stem}{'_' + fmt.tag if fmt.tag else ''}{fmt.suffix}")


_loaded = KeepLast()  # the last Keras file: (model, metadata, sha256)
_preprocessed = PerModel()  # a model put behind a preprocessing front, kept while the model lives


def load_source(path: Path) -> tuple[Any, Any, str]:
    """(model, metadata, sha256) of a Keras file, loaded once for the several formats exported from it."""
    from .metadata import sha256_file
    from .models.io import load_model

    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    stat = path.stat()
    return _loaded.get((str(path.resolve()), stat.st_mtime_ns, stat.st_size),
                       lambda: (*load_model(path), sha256_file(path)))


def converter(fmt: FormatEntry) -> Callable[[ExportJob], Any]:
    return load_target(fmt.target)


def check_request(fmt: FormatEntry, options: dict[str, Any], *, calibration: Any = None, calibration_given: bool = True,
                  budget: Any = None, calib_report: bool = False, verify: bool = True) -> None:
    """Refuse, in one line and before any work, an export the format cannot do with these options and features."""
    if fmt.needs_calibration(options) and not calibration_given and calibration is None:
        raise InvalidArgumentError(f"{fmt.name} needs calibration data: pass --calib-data DIR|photos|digits|FILE.npy")
    for feature, wanted in (("max_drop", budget is not None), ("calib_report", calib_report)):
        if wanted:
            reason = fmt.refusal(feature, options)
            if reason is not None:
                raise InvalidArgumentError(reason)
            if not verify:
                raise InvalidArgumentError(f"--{feature.replace('_', '-')} needs verification; drop --no-verify")


def check_float_layers(model: Any, float_layers: Any) -> None:
    """``--float-layers`` names must be layers of the model (else nothing would stay float, and ``info`` would lie)."""
    names = [layer.name for layer in model.layers]
    for name in float_layers or ():
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise InvalidArgumentError(f"--float-layers: {model.name} has no layer {name!r}{hint}")


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
    calib_report: bool = False,
    preprocessing: str | None = None,
    task: str | None = None,
    labels: Sequence[str] | str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> ExportResult:
    """Export a Keras model (object or ``.keras`` path) to ``format`` at ``output``.

    Writes atomically, embeds ModelMetadata, and (unless ``verify=False``) runs the artifact beside the
    Keras model, raising ParityError when it is outside its precision's tolerance. The images that verify it
    follow one rule (``parity.verification_set``): ``verify_data``, else the calibration hold-out, else the
    calibration images themselves, else (no images given at all) the built-in digits, and the report names them.
    ``budget`` (a ``fallback.AccuracyBudget``, int8 formats) rebuilds with the layers that lose the most in
    float until the artifact meets it; with ``budget.keep_best`` the best artifact is written even when
    none meets it (and ParityError is still raised). ``calib_report`` also calibrates on half the set and
    reports how agreement and activation ranges move. ``preprocessing`` (caffe, torch, tf, scale) puts that
    preprocessing in front of a model that has none inside (``keras.applications``), so the artifact takes
    RGB pixels 0-255 and records it. Every option and feature is checked against the format's row first.
    ``labels`` (a list, or a text file with one per line) name a classifier's outputs in the artifact (``labelled``).
    """
    from .models.io import describe, with_task
    from .models.reference import model_digest, weights_digest
    from .models.resnet import with_preprocessing

    fmt = find_format(format)
    resolved = fmt.resolve_options(options)
    output = Path(output)
    suffixes = (fmt.suffix, *BACKENDS[fmt.backend].suffixes)
    if not has_suffix(output, suffixes):
        raise InvalidArgumentError(f"{output}: a {fmt.name} file must end in {fmt.suffix}")
    check_request(fmt, resolved, calibration=calibration, calibration_given=False, budget=budget,
                  calib_report=calib_report, verify=verify)
    say = progress or (lambda message: None)
    if isinstance(model, (str, os.PathLike)):
        model, metadata, source_digest = load_source(Path(model))
    else:
        metadata, source_digest = describe(model), weights_digest(model)
    check_float_layers(model, resolved.get("float_layers"))
    if labels is not None:
        if task not in (None, "classifier"):
            raise InvalidArgumentError(f"--labels name a classifier's outputs, not a {task}'s")
        metadata = labelled(model, metadata, labels)
    if preprocessing is not None:
        model = _preprocessed.get(model, (model_digest(model), preprocessing),
                                  lambda: with_preprocessing(model, preprocessing))
        metadata = metadata.replace(preprocessing=preprocessing)
    if metadata.output_activation is None:  # a model saved before resnet-edge recorded it
        from .models.resnet import output_activation_of

        metadata = metadata.replace(output_activation=output_activation_of(model))
    metadata = with_task(model, metadata, task).replace(source_sha256=source_digest)
    size = tuple(metadata.input_shape[:2])
    if calibration is not None:
        calibration = calibration.resized(size, metadata.resize)
    data = None
    if verify:
        from .parity import verification_set

        data = verification_set(calibration, verify_data, size, metadata.resize)

    started = time.perf_counter()
    failure = None
    with atomic_path(output, fmt.companions) as tmp:
        job = ExportJob(model, metadata, tmp, fmt, resolved, calibration, say)
        final_metadata = converter(fmt)(job)
        seconds = time.perf_counter() - started
        report = fallback = calibration_report = None
        if verify:
            from .models.reference import matching_reference
            from .parity import verify_artifact

            def check(path: Path = tmp, label: str = fmt.name):
                return verify_artifact(model, path, data, count=verify_count, label=label)

            say(f"verifying {fmt.name} against the Keras model on {data.describe()}")
            report = check()
            say(report.line())
            if budget is not None:
                from .fallback import fit_budget

                final_metadata, report, fallback = fit_budget(
                    job, report, converter(fmt), check,
                    lambda meta: matching_reference(model, meta.output_activation), budget, say)
                if not fallback.met and report.passed:
                    report.failures.append(budget.describe(report))
            if calib_report and report.passed:
                from .calib_report import calibration_report as half_and_full

                say(f"{fmt.name}: calibrating again on half of the {len(calibration)} images")
                kept_float = tuple(final_metadata.extra.get("float_layers", ()))  # the budget's, if it added any
                final_job = dataclasses.replace(job, options={**job.options, "float_layers": kept_float})
                calibration_report = half_and_full(
                    tmp, report, calibration,
                    lambda half, path: converter(fmt)(dataclasses.replace(final_job, output=path, calibration=half)),
                    lambda path, label: check(path, label))
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
    size_bytes = sum(path.stat().st_size for path in (output, *companions_of(output)))  # the IR's .bin counts
    return ExportResult(output, fmt.name, size_bytes, seconds, final_metadata, report, fallback, calibration_report)


def label_names(labels: Sequence[str] | str | os.PathLike[str]) -> list[str]:
    """``labels`` as a list: given as one, or read from a text file (one per line)."""
    from .models.io import read_labels

    return read_labels(labels) if isinstance(labels, (str, os.PathLike)) else [str(label) for label in labels]


def labelled(model: Any, metadata: Any, labels: Sequence[str] | str | os.PathLike[str]) -> Any:
    """``metadata`` with ``labels`` naming the model's classes: for a model built elsewhere (``keras.applications``),
    whose classes are otherwise their indices. Their count must be the model's output count."""
    names = label_names(labels)
    shape = model.output_shape
    if len(model.outputs) != 1 or len(shape) != 2:
        raise InvalidArgumentError(f"--labels name a classifier's outputs; {model.name} has no single flat output")
    if len(names) != shape[-1]:
        source = f"{labels}: " if isinstance(labels, (str, os.PathLike)) else ""
        raise InvalidArgumentError(f"--labels: {source}{len(names)} labels for a model with {shape[-1]} outputs")
    return metadata.replace(labels=tuple(names), task="classifier")


def export_formats(
    model: str | os.PathLike[str],
    formats: Sequence[str],
    out: str | os.PathLike[str] | None = None,
    *,
    calib_data: str | os.PathLike[str] | None = None,
    calib_count: int = DEFAULT_CALIBRATION_COUNT,
    verify_data: str | os.PathLike[str] | None = None,
    verify: bool = True,
    budget: Any = None,
    calib_report: bool = False,
    preprocessing: str | None = None,
    labels: Sequence[str] | str | os.PathLike[str] | None = None,
    task: str | None = None,
    progress: Progress | None = None,
    on_result: Callable[[ExportResult], None] | None = None,
    **options: Any,
) -> list[ExportResult]:
    """``resnet-edge export``: one Keras model file to several formats, every request checked before any work.

    ``out`` is a file (one format) or a folder (several formats, or a path ending in ``/``); by default each
    artifact goes beside the model (``model_int8.tflite``). ``options`` are format options; each must apply to
    at least one of the formats and is given to those it applies to. One CalibrationSet from ``calib_data``
    serves every format (built when any needs it, or when given: float formats then verify on its hold-out).
    ``labels`` (a text file, one per line) go into every artifact's metadata (``labelled``).
    """
    from .calibration import CalibrationSet

    names = list(dict.fromkeys(find_format(name).name for name in formats if str(name).strip()))
    if not names:
        raise InvalidArgumentError("--format is empty")
    chosen = [FORMATS[name] for name in names]
    model = Path(model)
    given = {k: v for k, v in options.items() if v is not None}
    unused = sorted(k for k in given if not any(k in f.options for f in chosen))
    if unused and len(chosen) > 1:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in unused)
        raise InvalidArgumentError(f"{flags} applies to none of {', '.join(f.name for f in chosen)}")
    per_format = {}
    for fmt in chosen:
        mine = given if len(chosen) == 1 else {k: v for k, v in given.items() if k in fmt.options}
        per_format[fmt.name] = fmt.resolve_options(mine)
        check_request(fmt, per_format[fmt.name], calibration_given=calib_data is not None, budget=budget,
                      calib_report=calib_report, verify=verify)
    if calib_count < 1:
        raise InvalidArgumentError("--calib-count must be at least 1")
    if labels is not None:
        label_names(labels)  # an unreadable or empty file is refused before any work
    if model.suffix.lower() not in KERAS_SUFFIXES:
        raise InvalidArgumentError(f"{model}: export reads a Keras model ({', '.join(KERAS_SUFFIXES)})")
    if not model.is_file():
        raise ModelFileError(f"{model}: no such model file")
    out_path = None if out is None else Path(out)
    to_folder = out_path is not None and (out_path.is_dir() or str(out).endswith(("/", os.sep)) or len(chosen) > 1
                                          or not out_path.suffix)
    if len(chosen) > 1 and out_path is not None and out_path.suffix and not out_path.is_dir():
        raise InvalidArgumentError("--out must be a folder when exporting several formats")
    size, policy = model_geometry(model)
    calibration = None
    if calib_data is not None:
        calibration = CalibrationSet.from_source(calib_data, size, calib_count, policy=policy,
                                                 holdout=verify_data is None)
    verify_set = None
    if verify and verify_data is not None:
        from .data import load_dataset

        verify_set = load_dataset(verify_data, size, policy)
    results = []
    for fmt in chosen:
        default = default_output(model, fmt)
        target = out_path / default.name if to_folder else out_path or default
        result = export(model, fmt.name, target, calibration=calibration, verify=verify, verify_data=verify_set,
                        budget=budget, calib_report=calib_report, preprocessing=preprocessing, labels=labels, task=task,
                        progress=progress,
                        **{k: v for k, v in per_format[fmt.name].items() if k in given})
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def model_geometry(model: str | os.PathLike[str]) -> tuple[tuple[int, int], str]:
    """A Keras model file's input (height, width) and resize policy, from its embedded metadata (or the model)."""
    from .artifact import read_metadata

    metadata = read_metadata(model)
    if metadata is None:
        metadata = load_source(Path(model))[1]
    return (int(metadata.input_shape[0]), int(metadata.input_shape[1])), metadata.resize


__all__ = ["FORMATS", "ExportJob", "ExportResult", "FormatEntry", "check_request", "default_output", "export",
           "export_formats", "find_format", "model_geometry"]
