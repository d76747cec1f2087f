"""The per-format table (``run_all``): every format exported from one Keras model, its size, parity and speed.

Speed is measured last and all together: every candidate that is to be timed stays loaded and they are timed
in interleaved rounds (``latency.measure_together``), so a change of load on the machine (another process, a
thermal limit) hits every row alike instead of the ones that happened to run during it.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .cpu import usable_cores
from .errors import MissingDependencyError, first_line
from .latency import ROUNDS, BenchmarkResult, Candidate, measure, measure_together
from .registry import BACKENDS, FORMATS, REFERENCE, FormatEntry, find_format, load_target

Progress = Callable[[str], None]


@dataclass
class FormatRow:
    """One line of the format table: what was built, whether it matches the Keras model, how fast it runs.

    ``p50_ms`` is the median of every timed call and ranks; ``noise_ms`` is the robust spread of the per-round
    medians (see ``latency.round_noise``), ``noisy`` says it exceeds ``latency.NOISY_CV`` of the p50;
    ``fps`` is ``batch_size * 1000 / p50_ms`` (images per second from the same statistic, not the mean).
    """

    format: str
    status: str
    size_mb: float | None = None
    top1_agreement: float | None = None
    accuracy: float | None = None
    p50_ms: float | None = None
    noise_ms: float | None = None
    noisy: bool = False
    fps: float | None = None
    speedup: float | None = None
    precision: str | None = None
    path: str | None = None
    export_s: float | None = None
    batch_size: int = 1
    threads: int | None = None
    parity: dict[str, Any] | None = None
    latency: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """Built, verified (or not checked) and not failed."""
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


COLUMNS: tuple[tuple[str, str], ...] = (
    ("Format", "format"), ("Status", "status"), ("Size MB", "size_mb"), ("Top-1 agreement", "top1_agreement"),
    ("Accuracy", "accuracy"), ("p50 ms", "p50_ms"), ("Noise ms", "noise_ms"), ("FPS (p50)", "fps"),
    ("Speed-up", "speedup"),
)


def rows_to_dict(rows: Sequence[FormatRow]) -> list[dict[str, Any]]:
    """The table as plain JSON-ready dicts, one per format."""
    return [row.to_dict() for row in rows]


def unavailable(fmt: FormatEntry, device: str = "auto") -> str | None:
    """Why ``fmt`` cannot run on this machine (a ``skipped:`` status), or None when its backend has a device here."""

    row = BACKENDS[fmt.backend]
    try:
        available = row.backend_class().available_devices()
    except MissingDependencyError:
        return f"skipped: pip install 'resnet-edge[{row.extra}]'"
    except Exception as exc:
        return f"skipped: {first_line(exc)}"
    usable = [d for d in row.devices if d in available and device in ("auto", d)]
    return None if usable else f"skipped: needs {row.needs}"


@dataclass
class _Context:
    """What every format's row is measured against."""

    model_path: Path
    out_dir: Path
    reference: Any
    reference_outputs: list[np.ndarray] | None
    holdout: Any
    calibration: Any
    device: str
    threads: int
    batch_size: int
    warmup: int
    min_time_s: float
    say: Progress
    time_failed: bool = True
    end_to_end: bool = False
    frame: tuple[int, int] | None = None
    stack: ExitStack = field(default_factory=ExitStack)
    to_time: dict[str, tuple[FormatRow, Any]] = field(default_factory=dict)

    def time_later(self, row: FormatRow, predictor: Any) -> None:
        """Keep ``predictor`` loaded until every format is built, then time it with the others."""
        self.to_time[row.format] = (row, predictor)


def fill_latency(row: FormatRow, result: BenchmarkResult) -> None:
    """Copy a measurement into its row: p50, noise, the noisy flag and FPS, all from the same timed calls."""
    row.p50_ms, row.noise_ms, row.noisy = result.p50_ms, result.noise_ms, result.noisy
    row.fps, row.latency = result.throughput, result.to_dict()


def _failure(exc: Exception) -> str:
    text, kind = first_line(exc), type(exc).__name__
    return text if text == kind else f"{kind}: {text}"


def _time_together(ctx: _Context) -> None:
    """Time every loaded candidate in interleaved rounds; a candidate that raises becomes a ``failed:`` row."""
    if not ctx.to_time:
        return
    names = ", ".join(ctx.to_time)
    ctx.say(f"measuring latency of {names} together: {ROUNDS} interleaved rounds, {ctx.min_time_s:g} s each in all")
    results = measure_together({name: predictor for name, (_, predictor) in ctx.to_time.items()},
                               ctx.batch_size, warmup=ctx.warmup, min_time_s=ctx.min_time_s)
    for name, result in results.items():
        row = ctx.to_time[name][0]
        if isinstance(result, Exception):
            row.status = f"failed: {_failure(result)}"
            ctx.say(f"{name}: {row.status}")
        else:
            fill_latency(row, result)


def _reference_row(ctx: _Context) -> FormatRow:
    from .parity import compare_outputs, labels_match

    row = FormatRow(REFERENCE, "ok", size_mb=ctx.model_path.stat().st_size / 1e6, precision="fp32",
                    path=str(ctx.model_path), batch_size=ctx.batch_size, threads=ctx.threads)
    if ctx.reference_outputs is not None:
        outputs = ctx.reference_outputs
        labels = ctx.holdout.labels if labels_match(ctx.holdout, outputs, ctx.reference.labels) else None
        report = compare_outputs(outputs, outputs, "fp32", labels, REFERENCE)
        row.top1_agreement, row.accuracy, row.parity = report.top1_agreement, report.candidate_accuracy, report.to_dict()
    ctx.time_later(row, ctx.reference)
    return row


def _format_row(fmt: FormatEntry, ctx: _Context, options: Mapping[str, Any] | None = None) -> FormatRow:
    from . import exporter
    from .parity import compare
    from .predictor import load

    options = dict(options or {})
    label = variant_name(fmt, options)
    default = exporter.default_output(ctx.model_path, fmt)
    path = ctx.out_dir / (default.name if not options else f"{default.stem}_{'_'.join(map(str, options.values()))}{fmt.suffix}")
    row = FormatRow(label, "ok", precision=fmt.precision, path=str(path), batch_size=ctx.batch_size,
                    threads=ctx.threads)
    ctx.say(f"{label}: exporting to {path}")
    result = exporter.export(ctx.model_path, fmt.name, path, verify=False, progress=ctx.say,
                                  calibration=ctx.calibration if fmt.calibrated else None, **options)
    row.size_mb, row.export_s = result.size_bytes / 1e6, result.seconds
    with ExitStack() as opened:
        candidate = opened.enter_context(load(path, device=ctx.device, threads=ctx.threads))
        if ctx.reference_outputs is not None:
            report = compare(ctx.reference, candidate, ctx.holdout, reference_outputs=ctx.reference_outputs,
                             name=label)
            ctx.say(report.line())
            row.top1_agreement, row.accuracy, row.parity = (report.top1_agreement, report.candidate_accuracy,
                                                            report.to_dict())
            if not report.passed:
                row.status = f"exported but failed parity: {'; '.join(report.failures)}"
                if not ctx.time_failed:
                    return row
        ctx.stack.push(opened.pop_all())  # stays loaded until every candidate has been timed
        ctx.time_later(row, candidate)
    return row


def variant_name(fmt: FormatEntry, options: Mapping[str, Any]) -> str:
    """``openvino`` for the defaults, ``openvino (bf16)`` for a variant."""
    return fmt.name if not options else f"{fmt.name} ({', '.join(map(str, options.values()))})"


def _variants(fmt: FormatEntry) -> list[dict[str, Any]]:
    """The option sets of ``fmt``'s variants this machine supports."""

    chosen = []
    for variant in fmt.variants:
        when = variant.get("when")
        try:
            supported = when is None or bool(load_target(when)())
        except Exception:
            supported = False
        if supported:
            chosen.append({k: v for k, v in variant.items() if k != "when"})
    return chosen


def _guarded(name: str, build: Callable[[], FormatRow], say: Progress) -> FormatRow:
    """A format's row, or a ``failed:`` row carrying the one-line reason; the run goes on either way."""
    try:
        return build()
    except Exception as exc:
        reason = _failure(exc)
        say(f"{name}: failed: {reason}")
        return FormatRow(name, f"failed: {reason}")


def _selected_formats(formats: Sequence[str] | None) -> list[FormatEntry]:
    names = list(FORMATS) if formats is None else [find_format(f).name for f in formats]
    return [FORMATS[name] for name in dict.fromkeys(names)]


def _parity_data(data: Any, size: tuple[int, int], policy: str, calib_count: int, parity_count: int,
                 say: Progress):
    """(calibration set, hold-out sample): the hold-out never overlaps the calibration images."""
    from .calibration import CalibrationSet
    from .data import load_dataset

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        calibration = CalibrationSet.from_source(data, size, calib_count, policy=policy)
    for warning in caught:
        say(f"warning: {warning.message}")
    if parity_count <= 0:
        return calibration, None
    holdout = calibration.holdout
    if holdout is None:
        say(f"warning: no images left after {calib_count} for calibration; checking parity on calibration images")
        holdout = load_dataset(data, size, policy)
    return calibration, holdout.sample(parity_count).resized(size, policy)


def _speedups(rows: Sequence[FormatRow]) -> None:
    reference = next((r for r in rows if r.format == REFERENCE and r.p50_ms), None)
    for row in rows:
        if reference is not None and row.p50_ms:
            row.speedup = reference.p50_ms / row.p50_ms


def run_all(
    model_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    formats: Sequence[str] | None = None,
    data: str | os.PathLike[str] = "digits",
    device: str = "auto",
    batch_size: int = 1,
    min_time_s: float = 5.0,
    warmup: int = 10,
    calib_count: int = 300,
    parity_count: int = 500,
    progress: Progress | None = None,
    threads: int | None = None,
    variants: bool = False,
    time_failed: bool = True,
) -> list[FormatRow]:
    """Export the Keras model to each format, check parity against it and time it: one row per format.

    The Keras model is the first row and the reference for agreement and speed-up; formats needing an
    NVIDIA GPU are skipped where TensorRT is not usable; any failure is reported in its row, never raised.
    ``parity_count=0`` skips the parity check (latency only). Every runtime gets the same ``threads``
    (default: every usable core), since their own defaults differ (TFLite's is one thread). ``variants``
    adds each format's further option sets this machine supports (OpenVINO at bf16); ``time_failed=False``
    does not time a format that failed parity.

    Every format is exported and verified first; then all that are to be timed (they stay loaded) are timed
    together in interleaved rounds for about ``min_time_s`` each (``latency.measure_together``), so their p50s,
    noise figures and FPS come from the same minutes of the machine's life.
    """
    from .parity import run_outputs
    from .predictor import load

    say = progress or (lambda message: None)
    model_path, out_dir = Path(model_path), Path(out_dir)
    selected = _selected_formats(formats)
    threads = threads or usable_cores()
    reference = load(model_path, device=device, threads=threads)
    try:
        size = reference.input_spec.size
        calibration, holdout = _parity_data(data, size, reference.resize_policy, calib_count, parity_count, say)
        reference_outputs = None if holdout is None else run_outputs(reference, holdout.images)
        ctx = _Context(model_path, out_dir, reference, reference_outputs, holdout, calibration, device, threads,
                       batch_size, warmup, min_time_s, say, time_failed)
        with ctx.stack:
            rows = [_guarded(REFERENCE, lambda: _reference_row(ctx), say)]
            for fmt in selected:
                reason = unavailable(fmt, device)
                if reason is not None:
                    rows.append(FormatRow(fmt.name, reason, precision=fmt.precision, batch_size=batch_size))
                    continue
                rows.append(_guarded(fmt.name, lambda fmt=fmt: _format_row(fmt, ctx), say))
                for options in _variants(fmt) if variants else ():
                    rows.append(_guarded(variant_name(fmt, options),
                                         lambda fmt=fmt, options=options: _format_row(fmt, ctx, options), say))
            _time_together(ctx)
    finally:
        reference.close()
    _speedups(rows)
    return rows


__all__ = ["COLUMNS", "FormatRow", "fill_latency", "rows_to_dict", "run_all", "unavailable"]


def format_table(runs_here: bool = False, cpu: bool = False) -> list[dict[str, Any]]:
    """``resnet-edge formats``: every export format as the rows declare it, and whether it runs on this machine."""
    rows = []
    for fmt in FORMATS.values():
        if cpu and not fmt.runs_on_cpu:
            continue
        reason = unavailable(fmt)
        if runs_here and reason is not None:
            continue
        precisions = fmt.options["precision"].choices if "precision" in fmt.options else (fmt.precision,)
        exporting = ",".join(dict.fromkeys(("export", fmt.extra)))
        rows.append({"format": fmt.name, "suffix": fmt.suffix, "precision": "/".join(precisions),
                     "runtime": fmt.backend, "export_extra": exporting, "run_extra": BACKENDS[fmt.backend].extra,
                     "description": fmt.description, "install": fmt.install,
                     "here": "yes" if reason is None else reason.removeprefix("skipped: "),
                     "options": [o.flag for o in fmt.options.values()]})
    return rows


def benchmark_artifact(
    path: str | os.PathLike[str],
    device: str = "auto",
    batch_sizes: Iterable[int] = (1,),
    threads: int | None = None,
    warmup: int = 10,
    min_time_s: float = 5.0,
    end_to_end: bool = False,
    frame: tuple[int, int] | None = None,
    backend: str | None = None,
) -> list[BenchmarkResult]:
    """Load an artifact (timed apart from its first inference) and measure it at each batch size.

    With ``frame``, each batch size is measured twice in one interleaved run (``measure_together``): the raw
    call and ``predict`` on frames of that size, so the host-side cost is the difference of two figures taken
    together.
    """
    from .predictor import load

    started = time.perf_counter()
    predictor = load(path, device=device, backend=backend, threads=threads)
    load_s = time.perf_counter() - started
    with predictor:
        results = []
        for batch_size in batch_sizes:
            if frame is None:
                result = measure(predictor, batch_size, warmup=warmup, min_time_s=min_time_s, end_to_end=end_to_end)
                results.append(result)
            else:
                pair = measure_together({"raw": Candidate(predictor), "frame": Candidate(predictor, True, frame)},
                                        batch_size, warmup=warmup, min_time_s=min_time_s)
                for value in pair.values():
                    if isinstance(value, Exception):
                        raise value
                    results.append(value)
        for result in results:
            result.load_s = load_s
        return results


def artifact_labels(paths: Sequence[Path]) -> list[str]:
    """Each artifact's row label: its file name, or the path as given where two files share a name."""
    names = [path.name for path in paths]
    return [str(path) if names.count(path.name) > 1 else path.name for path in paths]


def _artifact_row(path: Path, label: str, ctx: _Context, backend: str | None) -> FormatRow:
    """Load one artifact and keep it loaded for the interleaved run; a load failure becomes its row's status."""
    from .predictor import load
    from .registry import companions_of

    files = [path, *(c for c in companions_of(path) if c.is_file())]
    row = FormatRow(label, "ok", size_mb=sum(f.stat().st_size for f in files) / 1e6, path=str(path),
                    batch_size=ctx.batch_size, threads=ctx.threads)
    try:
        predictor = ctx.stack.enter_context(load(path, device=ctx.device, backend=backend, threads=ctx.threads))
    except MissingDependencyError as exc:
        row.status = f"skipped: {first_line(exc)}"
        ctx.say(f"{label}: {row.status}")
        return row
    except Exception as exc:
        row.status = f"failed: {_failure(exc)}"
        ctx.say(f"{label}: {row.status}")
        return row
    metadata = predictor.metadata
    row.precision = getattr(metadata, "precision", None)
    ctx.say(f"{label}: {predictor.backend.name} on {predictor.device}")
    ctx.time_later(row, Candidate(predictor, ctx.end_to_end, ctx.frame))
    return row


def benchmark_artifacts(
    paths: Sequence[str | os.PathLike[str]],
    device: str = "auto",
    batch_size: int = 1,
    threads: int | None = None,
    warmup: int = 10,
    min_time_s: float = 5.0,
    end_to_end: bool = False,
    frame: tuple[int, int] | None = None,
    backend: str | None = None,
    progress: Progress | None = None,
) -> list[FormatRow]:
    """``resnet-edge benchmark A B C``: several artifacts timed together, one row each, labelled by file name.

    Every artifact is loaded first with the same ``threads`` (default: every usable core), then all are timed in
    one interleaved run (``latency.measure_together``), each on its own fixed random input of its own size and
    dtype (``end_to_end``: ``predict`` on uint8 frames; ``frame`` (height, width): on camera frames of that size),
    so their p50s, noise figures and FPS come from the same minutes of the machine's life. Speed-up is the
    first artifact's p50 over each row's. An artifact that cannot load (or fails while timed) gets a ``failed:``
    (or ``skipped:``) row and the others are still timed; a missing file is an error before anything loads.
    """
    from .errors import InvalidArgumentError
    from .registry import backend_for_file

    files = [Path(p) for p in paths]
    if not files:
        raise InvalidArgumentError("give at least one artifact to benchmark")
    seen: set[Path] = set()
    for path in files:
        backend_for_file(path)  # an unknown suffix is a one-line error here, before anything loads
        if not path.is_file():
            raise InvalidArgumentError(f"{path}: no such file")
        if path.resolve() in seen:
            raise InvalidArgumentError(f"{path} is given twice; each artifact is timed once")
        seen.add(path.resolve())
    say = progress or (lambda message: None)
    threads = threads or usable_cores()
    ctx = _Context(files[0], files[0].parent, None, None, None, None, device, threads, batch_size, warmup,
                   min_time_s, say, end_to_end=end_to_end, frame=frame)
    with ctx.stack:
        rows = [_artifact_row(path, label, ctx, backend) for path, label in zip(files, artifact_labels(files),
                                                                                 strict=True)]
        _time_together(ctx)
    first = rows[0].p50_ms
    for row in rows:
        if first and row.p50_ms:
            row.speedup = first / row.p50_ms
    return rows


__all__ = ["COLUMNS", "FormatRow", "artifact_labels", "benchmark_artifact", "benchmark_artifacts", "format_table",
           "rows_to_dict", "run_all", "unavailable"]
