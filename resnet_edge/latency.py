"""Latency of any Predictor: ``measure`` (one predictor) and ``measure_together`` (several, in interleaved rounds).

Every figure here follows one convention, so a table never mixes statistics:

- **p50** (the median of every timed call) is the figure that ranks; **throughput** (FPS) is
  ``batch_size * 1000 / p50``, from the same statistic, never from the mean.
- **noise** is how far the median moves between rounds: ``noise_ms`` = 1.4826 × the median absolute deviation
  of the per-round medians (a standard deviation that one disturbed round cannot inflate). A round is one
  interleaved slice in ``measure_together`` and one of ``ROUNDS`` consecutive blocks of calls in ``measure``.
  ``spread`` is ``noise_ms / p50``; a result is ``noisy`` when ``spread`` exceeds ``NOISY_CV``.
- **interleaving**: when several candidates are compared, their timing rounds alternate (``interleave``) so a
  change of machine load hits all of them alike instead of whichever happened to run during it.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable, Mapping, Sequence
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

NOISY_CV = 0.15  # round-to-round spread (noise_ms / p50) above which a result is flagged noisy
ROUNDS = 10  # interleaved rounds (or consecutive blocks for one predictor) the noise figure is taken over
SLICE_WARMUP = 3  # calls discarded at the start of every slice: caches and thread pools are cold after a switch
SETTLE_S = 0.01  # pause before every slice so the previous runtime's spinning worker threads go idle
MAD_TO_SD = 1.4826  # median absolute deviation -> standard deviation of a normal distribution
MIB = 1 << 20


@dataclass
class BenchmarkResult:
    """Latency statistics of one predictor at one batch size; times in milliseconds.

    ``p50_ms`` ranks; ``throughput`` is images per second from the p50 (``batch_size * 1000 / p50_ms``);
    ``noise_ms`` is the robust standard deviation of the per-round medians in ``round_p50_ms`` and ``spread``
    the same relative to the p50 (``noisy`` above ``NOISY_CV``); ``cv`` is std/mean over every call (outliers
    included, for information). ``interleaved`` says whether the rounds alternated with other candidates'.
    """

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
    noise_ms: float = 0.0
    spread: float = 0.0
    rounds: int = 1
    round_p50_ms: list[float] = field(default_factory=list)
    interleaved: bool = False
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
                f"noise ±{self.noise_ms:.3f} ms, mean {self.mean_ms:.3f} ms, p99 {self.p99_ms:.3f} ms, "
                f"{self.throughput:.1f} img/s at p50, {self.runs} runs")
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
    """Summary statistics of the timed calls; throughput from the p50, the figure that ranks."""
    times = np.asarray(times_ns, dtype=np.float64) / 1e6
    mean = float(times.mean())
    p50, p90, p99 = (float(v) for v in np.percentile(times, [50, 90, 99]))
    return {
        "mean_ms": mean, "std_ms": float(times.std()), "min_ms": float(times.min()), "max_ms": float(times.max()),
        "p50_ms": p50, "p90_ms": p90, "p99_ms": p99,
        "throughput": batch_size * 1000.0 / p50 if p50 > 0 else float("inf"),
        "cv": float(times.std() / mean) if mean > 0 else 0.0,
    }


def round_noise(round_p50_ms: Sequence[float]) -> float:
    """The noise figure: 1.4826 × the median absolute deviation of the per-round medians, in ms.

    A robust standard deviation of "what one round would have reported": it grows when the machine's load
    changes between rounds (the thing that makes one candidate look faster than another), and one disturbed
    round does not inflate it the way a standard deviation would. Zero with fewer than two rounds.
    """
    values = np.asarray(round_p50_ms, dtype=np.float64)
    if values.size < 2:
        return 0.0
    return float(MAD_TO_SD * np.median(np.abs(values - np.median(values))))


def noise_warning(spread: float) -> str | None:
    """A warning when round-to-round variation makes the figures unreliable (another load, throttling)."""
    if spread <= NOISY_CV:
        return None
    return (f"noisy: round-to-round variation {spread:.0%} > {NOISY_CV:.0%}; close other programs, pin threads "
            "or raise min_time_s before trusting these figures")


def _blocks(times_ns: Sequence[int], count: int) -> list[list[int]]:
    """``times_ns`` cut into ``count`` consecutive blocks (fewer when there are fewer calls)."""
    count = max(1, min(count, len(times_ns)))
    return [list(block) for block in np.array_split(np.asarray(times_ns, dtype=np.int64), count)]


def _result(predictor: Any, batch_size: int, end_to_end: bool, frame: tuple[int, int] | None, first_ns: int,
            rounds: Sequence[Sequence[int]], rss_peak: float, interleaved: bool) -> BenchmarkResult:
    """One BenchmarkResult from the timed calls grouped by round."""
    times = [t for block in rounds for t in block]
    stats = _statistics(times, batch_size)
    round_p50 = [float(np.median(block)) / 1e6 for block in rounds if len(block)]
    noise = round_noise(round_p50)
    spread = noise / stats["p50_ms"] if stats["p50_ms"] > 0 else 0.0
    backend = getattr(predictor, "backend", None)
    return BenchmarkResult(
        name=Path(str(getattr(predictor, "path", "model"))).name,
        backend=getattr(backend, "name", type(predictor).__name__),
        device=str(getattr(predictor, "device", "cpu")),
        batch_size=batch_size, end_to_end=end_to_end, runs=len(times), frame=frame,
        first_inference_ms=first_ns / 1e6, rss_peak_mib=rss_peak, max_rss_mib=_max_rss_mib(),
        noisy=spread > NOISY_CV, warning=noise_warning(spread), noise_ms=noise, spread=spread,
        rounds=len(round_p50), round_p50_ms=round_p50, interleaved=interleaved,
        times_ms=[t / 1e6 for t in times], **stats,
    )


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
    and with ``frame`` (height, width) from camera frames of that size (resize included). The noise figure
    comes from ``ROUNDS`` consecutive blocks of the timed calls, as ``measure_together``'s comes from its rounds;
    to compare several predictors, use ``measure_together``, not several ``measure`` calls one after another.
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
    return _result(predictor, batch_size, end_to_end, frame, first_ns, _blocks(times, ROUNDS), rss_peak,
                   interleaved=False)


@dataclass
class Timings:
    """The timed calls of one candidate in ``interleave``, in nanoseconds, grouped by round.

    ``first_ns`` is its first call ever (cold), ``discarded`` counts the per-slice warm-up calls left out, and
    ``error`` is what it raised, if it did (it then sat out the remaining rounds).
    """

    first_ns: int = 0
    rounds: list[list[int]] = field(default_factory=list)
    discarded: int = 0
    error: Exception | None = None

    @property
    def times_ns(self) -> list[int]:
        """Every timed call, round after round."""
        return [t for block in self.rounds for t in block]

    @property
    def p50_ms(self) -> float | None:
        """Median of every timed call (None when nothing was timed)."""
        times = self.times_ns
        return float(np.median(times)) / 1e6 if times else None

    @property
    def round_p50_ms(self) -> list[float]:
        """The median of each round's timed calls."""
        return [float(np.median(block)) / 1e6 for block in self.rounds if block]

    @property
    def noise_ms(self) -> float:
        """The noise figure of these rounds (``round_noise``)."""
        return round_noise(self.round_p50_ms)


def interleave(
    calls: Mapping[str, Callable[[], object]],
    min_time_s: float = 5.0,
    warmup: int = 10,
    rounds: int = ROUNDS,
    slice_warmup: int = SLICE_WARMUP,
    settle_s: float = SETTLE_S,
    on_slice: Callable[[str], None] | None = None,
) -> dict[str, Timings]:
    """Time several zero-argument calls in alternating rounds, so load changes hit them all alike.

    Each call gets ``warmup`` untimed calls first. Then, ``rounds`` times, every call runs for one slice of
    ``min_time_s / rounds`` seconds (at least one timed call), the order rotated one place per round. Before a
    slice: a ``settle_s`` pause (ONNX Runtime's worker threads spin after a call and steal the CPU from
    whatever runs next) and ``slice_warmup`` discarded calls (caches and thread pools are cold after a switch).
    Measured on 2 cores with a 0.4 ms int8 ResNet-18: right after ONNX Runtime, TFLite's first call took 8.5 ms
    (1.1 ms after a 10 ms pause) and its 2nd-4th calls ran 170 %, 75 % and 20 % slower than steady state
    (64 %, 15 % and 4 % after OpenVINO). So every call is timed for about ``min_time_s`` in all, in ``rounds`` slices.
    A call that raises keeps its error and sits out the rest.
    """
    if min_time_s < 0 or warmup < 0 or rounds < 1 or slice_warmup < 0 or settle_s < 0:
        raise InvalidArgumentError("interleave needs min_time_s >= 0, warmup >= 0, rounds >= 1, slice_warmup >= 0 "
                                   "and settle_s >= 0")
    timings = {name: Timings() for name in calls}
    for name, call in calls.items():
        try:
            timings[name].first_ns = _timed(call)
            for _ in range(warmup):
                call()
        except Exception as exc:
            timings[name].error = exc
    slice_ns = int(min_time_s * 1e9 / rounds)
    for number in range(rounds):
        live = [name for name in calls if timings[name].error is None]
        if not live:
            break
        shift = number % len(live)
        for name in live[shift:] + live[:shift]:
            call, timing = calls[name], timings[name]
            if settle_s:
                time.sleep(settle_s)
            block: list[int] = []
            try:
                for _ in range(slice_warmup):
                    call()
                timing.discarded += slice_warmup
                started = time.perf_counter_ns()
                while not block or time.perf_counter_ns() - started < slice_ns:
                    block.append(_timed(call))
            except Exception as exc:
                timing.error = exc
            if block:
                timing.rounds.append(block)
            if on_slice is not None:
                on_slice(name)
    return timings


@dataclass(frozen=True)
class Candidate:
    """What ``measure_together`` times: a predictor's raw ``run``, or ``predict`` (with ``end_to_end``) on uint8
    frames of the model's size or of ``frame`` (height, width)."""

    predictor: Any
    end_to_end: bool = False
    frame: tuple[int, int] | None = None


def measure_together(
    candidates: Mapping[str, Any],
    batch_size: int = 1,
    warmup: int = 10,
    min_time_s: float = 5.0,
    rounds: int = ROUNDS,
    settle_s: float = SETTLE_S,
) -> dict[str, BenchmarkResult | Exception]:
    """Time several predictors (or ``Candidate`` s) in one interleaved run: ``interleave`` over their calls.

    Each gets about ``min_time_s`` of timed calls in ``rounds`` slices; its p50 is the median of all of them
    and its noise the spread of the per-slice medians. A candidate that raised is returned as its exception.
    """
    if batch_size < 1:
        raise InvalidArgumentError("benchmark needs batch_size >= 1")
    wanted = {name: c if isinstance(c, Candidate) else Candidate(c) for name, c in candidates.items()}
    results: dict[str, BenchmarkResult | Exception] = {}
    calls = {}
    for name, candidate in wanted.items():
        try:
            whole = candidate.end_to_end or candidate.frame is not None
            calls[name] = _call(candidate.predictor, batch_size, whole, candidate.frame)
        except Exception as exc:
            results[name] = exc
    process = psutil.Process()
    rss_peak = {name: _rss_mib(process) for name in calls}

    def sample(name: str) -> None:
        rss_peak[name] = max(rss_peak[name], _rss_mib(process))

    timings = interleave(calls, min_time_s, warmup, rounds, settle_s=settle_s, on_slice=sample)
    for name, candidate in wanted.items():
        if name in results:
            continue
        timing = timings[name]
        if timing.error is not None:
            results[name] = timing.error
            continue
        whole = candidate.end_to_end or candidate.frame is not None
        results[name] = _result(candidate.predictor, batch_size, whole, candidate.frame, timing.first_ns,
                                timing.rounds, rss_peak[name], interleaved=len(calls) > 1)
    return {name: results[name] for name in wanted}
