"""Latency of any Predictor (``measure``) and the per-format table of size, parity and speed (``run_all``)."""

from __future__ import annotations

import os
import resource
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from .errors import InvalidArgumentError
from .preprocess import cast_batch
from .runtime.base import usable_cores

Progress = Callable[[str], None]
FRAME_SIZES = {"480p": (480, 640), "720p": (720, 1280), "1080p": (1080, 1920), "1440p": (1440, 2560),
               "4k": (2160, 3840), "2160p": (2160, 3840)}

NOISY_CV = 0.15
REFERENCE = "keras"
TRT_SKIPPED = "skipped: needs an NVIDIA GPU with TensorRT"
MIB = 1 << 20


@dataclass
class BenchmarkResult:
    """Latency statistics of one predictor at one batch size; times in milliseconds."""

    name: str
    backend: str
    device: str
    batch_size: int
    end_to_end: bool
    runs: int
    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    throughput: float
    first_inference_ms: float
    rss_peak_mib: float
    max_rss_mib: float
    cv: float
    noisy: bool
    warning: str | None = None
    load_s: float | None = None
    frame: tuple[int, int] | None = None
    times_ms: list[float] = field(default_factory=list, repr=False)

    def to_dict(self, include_times: bool = False) -> dict[str, Any]:
        """Plain-JSON form; the per-run times only when asked (they can be 100k numbers)."""
        data = asdict(self)
        if not include_times:
            data.pop("times_ms")
        return data

    @property
    def input(self) -> str:
        """What each timed call was given."""
        if self.frame is not None:
            return f"{self.frame[1]}x{self.frame[0]} uint8 frame"
        return "uint8 frame at the input size" if self.end_to_end else "input tensor (raw call)"

    def line(self) -> str:
        """One human-readable summary line."""
        text = (f"{self.name} [{self.backend}/{self.device}] batch {self.batch_size}, {self.input}: "
                f"p50 {self.p50_ms:.3f} ms, "
                f"mean {self.mean_ms:.3f} ± {self.std_ms:.3f} ms, p99 {self.p99_ms:.3f} ms, "
                f"{self.throughput:.1f} img/s, {self.runs} runs")
        return f"{text} ({self.warning})" if self.warning else text


def _rss_mib(process: psutil.Process) -> float:
    return process.memory_info().rss / MIB


def _max_rss_mib() -> float:
    """Peak resident size of this process so far (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024


def parse_frame(text: str) -> tuple[int, int]:
    """``1080p``, ``720p``, ``4k`` … or ``WxH`` (width first, as cameras say it) to (height, width)."""
    key = text.strip().lower()
    if key in FRAME_SIZES:
        return FRAME_SIZES[key]
    width, _, height = key.partition("x")
    if width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0:
        return int(height), int(width)
    raise InvalidArgumentError(f"frame size must be one of {', '.join(FRAME_SIZES)} or WxH (e.g. 1920x1080), "
                               f"not {text!r}")


def _random_frames(predictor: Any, batch_size: int, seed: int = 0,
                   frame: tuple[int, int] | None = None) -> np.ndarray:
    spec = predictor.input_spec
    height, width = frame or spec.size
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(batch_size, height, width, spec.channels), dtype=np.uint8)


def _call(predictor: Any, batch_size: int, end_to_end: bool,
          frame: tuple[int, int] | None = None) -> Callable[[], object]:
    """The zero-argument call to time: raw ``run`` on a pre-cast batch, or ``predict`` from uint8 frames
    (BGR as a camera gives them, of the model's size or of ``frame``)."""
    frames = _random_frames(predictor, batch_size, frame=frame)
    if end_to_end:
        frame_list = list(frames)
        return lambda: predictor.predict(frame_list, top_k=1, batch_size=batch_size, color="bgr")
    batch = cast_batch(frames, predictor.input_spec)
    return lambda: predictor.run(batch)


def _timed(call: Callable[[], object]) -> int:
    started = time.perf_counter_ns()
    call()
    return time.perf_counter_ns() - started


def _statistics(times_ns: Sequence[int], batch_size: int) -> dict[str, float]:
    times = np.asarray(times_ns, dtype=np.float64) / 1e6
    mean = float(times.mean())
    p50, p90, p99 = (float(v) for v in np.percentile(times, [50, 90, 99]))
    return {
        "mean_ms": mean, "std_ms": float(times.std()), "min_ms": float(times.min()), "max_ms": float(times.max()),
        "p50_ms": p50, "p90_ms": p90, "p99_ms": p99,
        "throughput": batch_size * 1000.0 / mean if mean > 0 else float("inf"),
        "cv": float(times.std() / mean) if mean > 0 else 0.0,
    }


def noise_warning(cv: float) -> str | None:
    """A warning when run-to-run variation makes the figures unreliable (another load, throttling)."""
    if cv <= NOISY_CV:
        return None
    return (f"noisy: run-to-run variation {cv:.0%} > {NOISY_CV:.0%}; close other programs, pin threads "
            "or raise min_time_s before trusting these figures")


def measure(
    predictor: Any,
    batch_size: int = 1,
    warmup: int = 10,
    min_time_s: float = 5.0,
    min_runs: int = 10,
    max_runs: int = 100_000,
    end_to_end: bool = False,
    frame: tuple[int, int] | None = None,
) -> BenchmarkResult:
    """Time a predictor on a fixed random batch until ``min_time_s`` and ``min_runs`` are both reached.

    The raw path times ``predictor.run`` on a batch already in the input dtype (runtime only); with
    ``end_to_end`` it times ``predictor.predict`` from uint8 HWC frames (casting, softmax, top-k included),
    and with ``frame`` (height, width) from camera frames of that size (resize included).
    """
    if batch_size < 1 or warmup < 0 or min_runs < 1 or max_runs < min_runs or min_time_s < 0:
        raise InvalidArgumentError(
            "benchmark needs batch_size >= 1, warmup >= 0, min_runs >= 1, max_runs >= min_runs, min_time_s >= 0"
        )
    end_to_end = end_to_end or frame is not None
    call = _call(predictor, batch_size, end_to_end, frame)
    process = psutil.Process()
    first_ns = _timed(call)
    for _ in range(warmup):
        call()
    times: list[int] = []
    rss_peak = _rss_mib(process)
    budget_ns = int(min_time_s * 1e9)
    started = time.perf_counter_ns()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter_ns() - started < budget_ns):
        times.append(_timed(call))
        rss_peak = max(rss_peak, _rss_mib(process))
    stats = _statistics(times, batch_size)
    backend = getattr(predictor, "backend", None)
    return BenchmarkResult(
        name=Path(str(getattr(predictor, "path", "model"))).name,
        backend=getattr(backend, "name", type(predictor).__name__),
        device=str(getattr(predictor, "device", "cpu")),
        batch_size=batch_size, end_to_end=end_to_end, runs=len(times), frame=frame,
        first_inference_ms=first_ns / 1e6, rss_peak_mib=rss_peak, max_rss_mib=_max_rss_mib(),
        noisy=stats["cv"] > NOISY_CV, warning=noise_warning(stats["cv"]),
        times_ms=[t / 1e6 for t in times], **stats,
    )


def benchmark_artifact(
    path: str | os.PathLike[str],
    device: str = "auto",
    batch_sizes: Iterable[int] = (1,),
    threads: int | None = None,
    warmup: int = 10,
    min_time_s: float = 5.0,
    end_to_end: bool = False,
    frame: tuple[int, int] | None = None,
) -> list[BenchmarkResult]:
    """Load an artifact (timed apart from its first inference) and measure it at each batch size.

    With ``frame``, each batch size is measured twice in one run: the raw call, then ``predict`` on
    frames of that size, so the host-side cost is the difference of two figures taken together.
    """
    from .runtime import load

    started = time.perf_counter()
    predictor = load(path, device=device, threads=threads)
    load_s = time.perf_counter() - started
    with predictor:
        results = []
        for batch_size in batch_sizes:
            runs = [(False, None), (True, frame)] if frame is not None else [(end_to_end, None)]
            for whole, size in runs:
                result = measure(predictor, batch_size, warmup=warmup, min_time_s=min_time_s, end_to_end=whole,
                                 frame=size)
                result.load_s = load_s
                results.append(result)
        return results


@dataclass
class FormatRow:
    """One line of the format table: what was built, whether it matches the Keras model, how fast it runs."""

    format: str
    status: str
    size_mb: float | None = None
    top1_agreement: float | None = None
    accuracy: float | None = None
    p50_ms: float | None = None
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
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


COLUMNS: tuple[tuple[str, str], ...] = (
    ("Format", "format"), ("Status", "status"), ("Size MB", "size_mb"), ("Top-1 agreement", "top1_agreement"),
    ("Accuracy", "accuracy"), ("p50 ms", "p50_ms"), ("FPS", "fps"), ("Speed-up", "speedup"),
)


def rows_to_dict(rows: Sequence[FormatRow]) -> list[dict[str, Any]]:
    """The table as plain JSON-ready dicts, one per format."""
    return [row.to_dict() for row in rows]


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as ``Type: first line`` for a table cell."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return (f"{name}: {text}" if text else name)[:limit]


def trt_available() -> bool:
    """Whether TensorRT and a CUDA device are usable here (never raises)."""
    try:
        from .runtime import backend_class

        return bool(backend_class("tensorrt").available_devices())
    except Exception:
        return False


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


def _latency(predictor: Any, ctx: _Context) -> BenchmarkResult:
    return measure(predictor, ctx.batch_size, warmup=ctx.warmup, min_time_s=ctx.min_time_s)


def _fill_latency(row: FormatRow, result: BenchmarkResult) -> None:
    row.p50_ms, row.fps, row.latency = result.p50_ms, result.throughput, result.to_dict()


def _reference_row(ctx: _Context) -> FormatRow:
    from .parity import compare_outputs, labels_match

    row = FormatRow(REFERENCE, "ok", size_mb=ctx.model_path.stat().st_size / 1e6, precision="fp32",
                    path=str(ctx.model_path), batch_size=ctx.batch_size, threads=ctx.threads)
    if ctx.reference_outputs is not None:
        outputs = ctx.reference_outputs
        labels = ctx.holdout.labels if labels_match(ctx.holdout, outputs, ctx.reference.labels) else None
        report = compare_outputs(outputs, outputs, "fp32", labels, REFERENCE)
        row.top1_agreement, row.accuracy, row.parity = report.top1_agreement, report.candidate_accuracy, report.to_dict()
    _fill_latency(row, _latency(ctx.reference, ctx))
    return row


def _format_row(fmt: Any, ctx: _Context) -> FormatRow:
    from . import export as export_module
    from .parity import compare
    from .runtime import load

    path = ctx.out_dir / export_module.default_output(ctx.model_path, fmt).name
    row = FormatRow(fmt.name, "ok", precision=fmt.precision, path=str(path), batch_size=ctx.batch_size,
                    threads=ctx.threads)
    ctx.say(f"{fmt.name}: exporting to {path}")
    result = export_module.export(ctx.model_path, fmt.name, path, verify=False, progress=ctx.say,
                                  calibration=ctx.calibration if fmt.calibrated else None)
    row.size_mb, row.export_s = result.size_bytes / 1e6, result.seconds
    with load(path, device=ctx.device, threads=ctx.threads) as candidate:
        if ctx.reference_outputs is not None:
            report = compare(ctx.reference, candidate, ctx.holdout, reference_outputs=ctx.reference_outputs,
                             name=fmt.name)
            ctx.say(report.line())
            row.top1_agreement, row.accuracy, row.parity = (report.top1_agreement, report.candidate_accuracy,
                                                            report.to_dict())
            if not report.passed:
                row.status = f"exported but failed parity: {'; '.join(report.failures)}"
        ctx.say(f"{fmt.name}: measuring latency")
        _fill_latency(row, _latency(candidate, ctx))
    return row


def _guarded(name: str, build: Callable[[], FormatRow], say: Progress) -> FormatRow:
    """A format's row, or a ``failed:`` row carrying the one-line reason; the run goes on either way."""
    try:
        return build()
    except Exception as exc:
        reason = one_line(exc)
        say(f"{name}: failed: {reason}")
        return FormatRow(name, f"failed: {reason}")


def _selected_formats(formats: Sequence[str] | None) -> list[Any]:
    from .export import FORMATS, resolve_format

    names = list(FORMATS) if formats is None else [resolve_format(f).name for f in formats]
    return [FORMATS[name] for name in dict.fromkeys(names)]


def _parity_data(data: Any, size: tuple[int, int], policy: str, calib_count: int, parity_count: int,
                 say: Progress):
    """(calibration set, hold-out sample): the hold-out never overlaps the calibration images."""
    from calibration import CalibrationSet

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
) -> list[FormatRow]:
    """Export the Keras model to each format, check parity against it and time it: one row per format.

    The Keras model is the first row and the reference for agreement and speed-up; formats needing an
    NVIDIA GPU are skipped where TensorRT is not usable; any failure is reported in its row, never raised.
    ``parity_count=0`` skips the parity check (latency only). Every runtime gets the same ``threads``
    (default: every usable core), since their own defaults differ (TFLite's is one thread).
    """
    from .parity import run_outputs
    from .runtime import load

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
                       batch_size, warmup, min_time_s, say)
        say(f"{REFERENCE}: measuring latency")
        rows = [_guarded(REFERENCE, lambda: _reference_row(ctx), say)]
        gpu = None
        for fmt in selected:
            if fmt.needs_gpu:
                gpu = trt_available() if gpu is None else gpu
                if not gpu:
                    rows.append(FormatRow(fmt.name, TRT_SKIPPED, precision=fmt.precision, batch_size=batch_size))
                    continue
            rows.append(_guarded(fmt.name, lambda fmt=fmt: _format_row(fmt, ctx), say))
    finally:
        reference.close()
    _speedups(rows)
    return rows


__all__ = [
    "COLUMNS", "BenchmarkResult", "FormatRow", "benchmark_artifact", "measure", "noise_warning", "rows_to_dict",
    "run_all",
    "trt_available", "usable_cores",
]
