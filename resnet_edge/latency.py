"""Latency of any Predictor: ``measure`` (warm-up, repeated timed calls, statistics, memory) and ``benchmark_artifact``."""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from .errors import InvalidArgumentError
from .preprocess import cast_batch

Progress = Callable[[str], None]
FRAME_SIZES = {"480p": (480, 640), "720p": (720, 1280), "1080p": (1080, 1920), "1440p": (1440, 2560),
               "4k": (2160, 3840), "2160p": (2160, 3840)}

NOISY_CV = 0.15
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
    backend: str | None = None,
) -> list[BenchmarkResult]:
    """Load an artifact (timed apart from its first inference) and measure it at each batch size.

    With ``frame``, each batch size is measured twice in one run: the raw call, then ``predict`` on
    frames of that size, so the host-side cost is the difference of two figures taken together.
    """
    from .runtime import load

    started = time.perf_counter()
    predictor = load(path, device=device, backend=backend, threads=threads)
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
