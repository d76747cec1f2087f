"""measure() statistics, interleaved timing rounds and run_all()'s table: statuses, planted failures, speed-up,
noise and FPS from the p50."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from resnet_edge import benchmark as benchmark_module
from resnet_edge.benchmark import FormatRow, benchmark_artifact, rows_to_dict, run_all
from resnet_edge.errors import InvalidArgumentError
from resnet_edge.latency import (
    NOISY_CV,
    ROUNDS,
    Candidate,
    interleave,
    measure,
    measure_together,
    parse_frame,
    round_noise,
)
from resnet_edge.predictor import Backend, Predictor
from resnet_edge.preprocess import InputSpec

FAST = {"min_time_s": 0.05, "warmup": 1, "calib_count": 100, "parity_count": 100}


class _EchoBackend(Backend):
    """A backend with no runtime: outputs ten scores from the batch mean, so predict() works."""

    name = "echo"
    devices = ("cpu",)

    def __init__(self, path: Path, device: str = "cpu", threads: int | None = None) -> None:
        super().__init__(path, device, threads)
        self.input_spec = InputSpec(8, 8, 3, "float32")
        self.calls = 0

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        self.calls += 1
        assert batch.dtype == np.float32
        return [np.tile(batch.mean(axis=(1, 2, 3))[:, None], (1, 10)).astype(np.float32)]


@pytest.fixture
def echo() -> Predictor:
    return Predictor(_EchoBackend(Path("echo.bin")))

TRT_SKIPPED = "skipped: needs an NVIDIA GPU with TensorRT"  # what the trt row says here (its row's needs)


def test_measure_statistics_are_consistent(echo: Predictor) -> None:
    result = measure(echo, batch_size=2, warmup=3, min_time_s=0.02, min_runs=25)
    assert result.runs >= 25 and len(result.times_ms) == result.runs
    assert echo.backend.calls == 1 + 3 + result.runs
    assert result.min_ms <= result.p50_ms <= result.p90_ms <= result.p99_ms <= result.max_ms
    assert result.throughput == pytest.approx(2 * 1000.0 / result.p50_ms)  # FPS from the figure that ranks
    assert result.cv == pytest.approx(result.std_ms / result.mean_ms)
    assert result.rounds == ROUNDS == len(result.round_p50_ms) and not result.interleaved
    assert result.noise_ms == pytest.approx(round_noise(result.round_p50_ms))
    assert result.spread == pytest.approx(result.noise_ms / result.p50_ms)
    assert result.noisy == (result.spread > NOISY_CV)
    assert (result.warning is not None) == result.noisy
    assert "img/s at p50" in result.line()
    assert result.first_inference_ms > 0 and result.rss_peak_mib > 0 and result.max_rss_mib > 0
    assert result.backend == "echo" and result.batch_size == 2 and not result.end_to_end
    data = result.to_dict()
    assert "times_ms" not in data and data["p50_ms"] == result.p50_ms
    assert len(result.to_dict(include_times=True)["times_ms"]) == result.runs


def test_measure_stops_at_max_runs(echo: Predictor) -> None:
    result = measure(echo, warmup=0, min_time_s=60.0, min_runs=5, max_runs=7)
    assert result.runs == 7


def test_measure_end_to_end_goes_through_predict(echo: Predictor, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = echo.predict
    monkeypatch.setattr(echo, "predict", lambda *a, **k: calls.append(len(a[0])) or original(*a, **k))
    result = measure(echo, batch_size=3, warmup=0, min_time_s=0.0, min_runs=4, end_to_end=True)
    assert result.end_to_end and result.runs == 4
    assert calls == [3] * 5


def test_measure_frame_times_predict_on_camera_frames(echo: Predictor, monkeypatch: pytest.MonkeyPatch) -> None:
    shapes = []
    original = echo.predict
    monkeypatch.setattr(echo, "predict", lambda *a, **k: shapes.append(a[0][0].shape) or original(*a, **k))
    result = measure(echo, warmup=0, min_time_s=0.0, min_runs=3, frame=parse_frame("1080p"))
    assert result.end_to_end and result.frame == (1080, 1920) and result.input == "1920x1080 uint8 frame"
    assert shapes == [(1080, 1920, 3)] * 4


@pytest.mark.parametrize(("text", "size"), [("1080p", (1080, 1920)), ("720P", (720, 1280)), ("4k", (2160, 3840)),
                                            ("640x480", (480, 640))])
def test_frame_sizes_parse(text: str, size: tuple[int, int]) -> None:
    assert parse_frame(text) == size


@pytest.mark.parametrize("text", ["1080", "x480", "0x10", "big"])
def test_bad_frame_sizes_are_one_line_errors(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match="1080p"):
        parse_frame(text)


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"min_runs": 0}, {"min_runs": 5, "max_runs": 2}])
def test_measure_rejects_bad_settings(echo: Predictor, bad: dict) -> None:
    with pytest.raises(InvalidArgumentError):
        measure(echo, **bad)


class _Paced(_EchoBackend):
    """An echo backend that sleeps: 1 ms per call for the first ``fast`` calls, 4 ms after (a machine that
    became busy half-way)."""

    fast = 11

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        time.sleep(0.001 if self.calls < self.fast else 0.004)
        return super().run(batch)


def test_a_run_whose_rounds_disagree_is_flagged_noisy() -> None:
    paced = Predictor(_Paced(Path("paced.bin")))
    result = measure(paced, warmup=0, min_time_s=0.0, min_runs=20, max_runs=20)
    assert result.rounds == ROUNDS and min(result.round_p50_ms) < 2.0 < max(result.round_p50_ms)
    assert result.noise_ms > 1.0 and result.noisy
    assert result.warning.startswith("noisy: round-to-round variation")


def test_round_noise_is_a_robust_spread_of_the_round_medians() -> None:
    assert round_noise([1.0]) == 0.0
    assert round_noise([1.0, 1.0, 1.0, 1.0, 9.0]) == 0.0  # one disturbed round does not make a run noisy
    assert round_noise([1.0, 2.0, 3.0]) == pytest.approx(1.4826)


def _recorder(order: list[str], name: str, fail_on: int | None = None):
    def call() -> None:
        order.append(name)
        if fail_on is not None and order.count(name) == fail_on:
            raise RuntimeError(f"{name} broke")
    return call


def test_interleave_alternates_candidates_and_rotates_the_order() -> None:
    order: list[str] = []
    calls = {name: _recorder(order, name) for name in ("a", "b", "c")}
    timings = interleave(calls, min_time_s=0.0, warmup=2, rounds=4, slice_warmup=1, settle_s=0.0)
    warm = ["a"] * 3 + ["b"] * 3 + ["c"] * 3  # first call + 2 warm-up calls each
    slices = [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    assert order == warm + [name for rotation in slices for name in rotation for _ in range(2)]
    for timing in timings.values():
        assert len(timing.rounds) == 4 and all(len(block) == 1 for block in timing.rounds)
        assert timing.discarded == 4 and timing.first_ns > 0 and timing.error is None
        assert len(timing.round_p50_ms) == 4 and timing.p50_ms > 0


def test_interleave_gives_each_candidate_its_time_in_slices() -> None:
    seen: list[str] = []
    calls = {"slow": lambda: time.sleep(0.002), "fast": lambda: None}
    timings = interleave(calls, min_time_s=0.04, warmup=0, rounds=4, slice_warmup=0, settle_s=0.0,
                         on_slice=seen.append)
    assert seen == ["slow", "fast", "fast", "slow", "slow", "fast", "fast", "slow"]
    assert all(len(timing.rounds) == 4 for timing in timings.values())
    assert sum(timings["slow"].times_ns) >= 0.95 * 0.04e9  # about min_time_s of timed calls, over the rounds
    assert len(timings["slow"].times_ns) <= 4 * (0.01 / 0.002 + 1)  # no more than its slices allow
    assert len(timings["fast"].times_ns) > len(timings["slow"].times_ns)


def test_interleave_drops_a_failing_candidate_and_goes_on() -> None:
    order: list[str] = []
    calls = {"good": _recorder(order, "good"), "bad": _recorder(order, "bad", fail_on=3)}
    timings = interleave(calls, min_time_s=0.0, warmup=0, rounds=5, slice_warmup=0, settle_s=0.0)
    assert str(timings["bad"].error) == "bad broke" and len(timings["bad"].rounds) == 1
    assert timings["good"].error is None and len(timings["good"].rounds) == 5


def test_measure_together_reports_fps_from_p50_and_noise_per_candidate() -> None:
    first, second = (Predictor(_EchoBackend(Path(f"{name}.bin"))) for name in ("first", "second"))
    results = measure_together({"first": first, "second": Candidate(second, end_to_end=True)}, batch_size=4,
                               warmup=1, min_time_s=0.02, settle_s=0.0)
    assert list(results) == ["first", "second"]
    for result in results.values():
        assert result.interleaved and result.rounds == ROUNDS and result.batch_size == 4
        assert result.throughput == pytest.approx(4 * 1000.0 / result.p50_ms)
        assert result.noise_ms == pytest.approx(round_noise(result.round_p50_ms))
        assert result.to_dict()["round_p50_ms"] == result.round_p50_ms
    assert not results["first"].end_to_end and results["second"].end_to_end


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random-init resnet18 at 32x32 made confident in one class, so int8 agreement is deterministic."""
    from resnet_edge._lazy import import_keras
    from resnet_edge.models import build_resnet
    from resnet_edge.models.io import describe, save_model

    import_keras().utils.set_random_seed(0)
    model = build_resnet("resnet18", (32, 32, 3), num_classes=10)
    kernel, bias = model.layers[-1].get_weights()
    bias[3] += 8.0
    model.layers[-1].set_weights([kernel, bias])
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    return save_model(model, path, describe(model, labels=[str(i) for i in range(10)]))


@pytest.fixture(scope="module")
def good_rows(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> list[FormatRow]:
    return run_all(tiny_model, tmp_path_factory.mktemp("good"), formats=["onnx", "tflite-int8"], **FAST)


@pytest.mark.slow
def test_run_all_rows(good_rows: list[FormatRow]) -> None:
    assert [r.format for r in good_rows] == ["keras", "onnx", "tflite-int8"]
    assert [r.status for r in good_rows] == ["ok", "ok", "ok"]
    for row in good_rows:
        assert row.size_mb > 0 and row.p50_ms > 0 and row.fps > 0
        assert row.top1_agreement is not None and row.accuracy is not None
        assert row.latency["batch_size"] == 1 and row.parity["samples"] == 100
        assert Path(row.path).is_file()


@pytest.mark.slow
def test_run_all_times_every_format_together_fps_from_p50(good_rows: list[FormatRow]) -> None:
    for row in good_rows:
        assert row.latency["interleaved"] and row.latency["rounds"] == ROUNDS
        assert row.fps == pytest.approx(row.batch_size * 1000.0 / row.p50_ms)
        assert row.noise_ms == row.latency["noise_ms"] >= 0 and row.noisy == row.latency["noisy"]
        assert row.noisy == (row.noise_ms > NOISY_CV * row.p50_ms)
        assert rows_to_dict([row])[0]["noise_ms"] == row.noise_ms
    assert good_rows[0].top1_agreement == 1.0 and good_rows[0].speedup == 1.0
    assert [r.precision for r in good_rows] == ["fp32", "fp32", "int8"]


@pytest.mark.slow
def test_speedup_is_keras_p50_over_p50(good_rows: list[FormatRow]) -> None:
    keras_p50 = good_rows[0].p50_ms
    for row in good_rows:
        assert row.speedup == pytest.approx(keras_p50 / row.p50_ms)
    assert rows_to_dict(good_rows)[1]["speedup"] == good_rows[1].speedup


@pytest.mark.slow
def test_benchmark_artifact_per_batch_size(good_rows: list[FormatRow]) -> None:
    results = benchmark_artifact(good_rows[1].path, device="cpu", batch_sizes=(1, 2), warmup=1, min_time_s=0.05)
    assert [r.batch_size for r in results] == [1, 2]
    assert all(r.load_s is not None and r.load_s > 0 and r.backend == "onnxruntime" for r in results)
    framed = benchmark_artifact(good_rows[1].path, device="cpu", warmup=1, min_time_s=0.05, frame=(720, 1280))
    assert [(r.batch_size, r.frame, r.end_to_end) for r in framed] == [(1, None, False), (1, (720, 1280), True)]
    assert all(r.interleaved and r.load_s > 0 for r in framed)  # raw and predict(frame) timed in alternation


@pytest.mark.slow
def test_planted_wrong_and_broken_artifacts_are_reported(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import resnet_edge.exporter as export_module
    from resnet_edge.models import build_resnet

    stranger = build_resnet("resnet18", (32, 32, 3), num_classes=10)
    real = export_module.converter

    def planted(fmt):
        convert = real(fmt)
        if fmt.name == "tflite":
            def broken(job):
                raise RuntimeError("converter exploded\nsecond line")
            return broken

        def wrong_weights(job):
            job.model = stranger
            return convert(job)
        return wrong_weights

    monkeypatch.setattr(export_module, "converter", planted)
    together = []
    real_measure = benchmark_module.measure_together

    def recorded(candidates, *args, **kwargs):
        together.append(list(candidates))
        return real_measure(candidates, *args, **kwargs)

    monkeypatch.setattr(benchmark_module, "measure_together", recorded)
    rows = {r.format: r for r in run_all(tiny_model, tmp_path, formats=["onnx", "tflite", "trt"], **FAST)}
    assert together == [["keras", "onnx"]]  # one interleaved run; a failed parity is still timed by default
    assert rows["keras"].status == "ok"
    assert rows["onnx"].status.startswith("exported but failed parity: ")
    assert rows["onnx"].p50_ms is not None and rows["onnx"].parity["passed"] is False
    assert rows["tflite"].status == "failed: RuntimeError: converter exploded"
    assert rows["tflite"].p50_ms is None and rows["tflite"].speedup is None
    assert rows["trt"].status in (TRT_SKIPPED, "ok") or rows["trt"].status.startswith("failed")


@pytest.mark.slow
def test_latency_only_run_has_no_parity(tiny_model: Path, tmp_path: Path) -> None:
    rows = run_all(tiny_model, tmp_path, formats=[], min_time_s=0.02, warmup=1, calib_count=20, parity_count=0)
    assert [(r.format, r.status) for r in rows] == [("keras", "ok")]
    assert rows[0].top1_agreement is None and rows[0].parity is None and rows[0].p50_ms > 0


# several artifacts, one benchmark: loaded with the same threads, timed together, one table and its receipts -------

class _Sized(_EchoBackend):
    """An echo backend whose input size comes from its file name (``a16.onnx`` takes 16x16) and that records
    every call in a shared list, so the order of the calls shows whether the artifacts were interleaved."""

    order: ClassVar[list[str]] = []

    def __init__(self, path: Path, device: str = "cpu", threads: int | None = None) -> None:
        super().__init__(path, device, threads)
        side = int("".join(ch for ch in path.stem if ch.isdigit()) or 8)
        self.input_spec = InputSpec(side, side, 3, "float32")

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        assert batch.shape[1:3] == self.input_spec.size  # each artifact gets an input of its own size
        self.order.append(self.path.name)
        return super().run(batch)


@pytest.fixture
def fake_artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[Path], list[tuple[str, int]]]:
    """Three files with runtime suffixes that ``load`` turns into echo predictors (``broken.tflite`` fails to load),
    and the list of (name, threads) ``load`` was called with."""
    import resnet_edge.predictor as predictor_module

    paths = [tmp_path / "a8.onnx", tmp_path / "b16.tflite", tmp_path / "broken.tflite"]
    for index, path in enumerate(paths):
        path.write_bytes(b"x" * 1000 * (index + 1))
    loaded: list[tuple[str, int | None]] = []

    def fake_load(path, device="auto", backend=None, threads=None):
        path = Path(path)
        loaded.append((path.name, threads))
        if path.stem == "broken":
            raise RuntimeError("not a model\nsecond line")
        return Predictor(_Sized(path, threads=threads))

    monkeypatch.setattr(predictor_module, "load", fake_load)
    _Sized.order.clear()
    return paths, loaded


def test_several_artifacts_are_timed_together_in_one_table(fake_artifacts, tmp_path: Path) -> None:
    from resnet_edge.report import benchmark_files

    paths, loaded = fake_artifacts
    rows, written = benchmark_files(paths, tmp_path / "receipts", command="resnet-edge benchmark ...",
                                    threads=3, warmup=0, min_time_s=0.0)
    assert [(r.format, r.status) for r in rows] == [("a8.onnx", "ok"), ("b16.tflite", "ok"),
                                                    ("broken.tflite", "failed: RuntimeError: not a model")]
    assert loaded == [("a8.onnx", 3), ("b16.tflite", 3), ("broken.tflite", 3)]  # the same threads
    switches = sum(1 for x, y in itertools.pairwise(_Sized.order) if x != y)
    assert switches >= ROUNDS, "the artifacts must take turns (interleaved rounds), not run one after the other"
    for row in rows[:2]:
        assert row.threads == 3 and row.batch_size == 1 and row.path and row.size_mb > 0
        assert row.latency["interleaved"] and row.latency["rounds"] == ROUNDS
        assert row.fps == pytest.approx(1000.0 / row.p50_ms)  # FPS from the p50, not the mean
        assert row.noisy == (row.noise_ms > NOISY_CV * row.p50_ms)
    assert rows[0].speedup == 1.0 and rows[1].speedup == pytest.approx(rows[0].p50_ms / rows[1].p50_ms)
    assert rows[2].p50_ms is None and rows[2].speedup is None
    assert sorted(written) >= ["csv", "json", "md"] and all(path.is_file() for path in written.values())
    document = __import__("json").loads(written["json"].read_text())
    assert [row["format"] for row in document["rows"]] == ["a8.onnx", "b16.tflite", "broken.tflite"]
    assert "speed-up is the p50 of a8.onnx (the first row)" in written["md"].read_text()


def test_artifacts_with_the_same_name_are_labelled_by_path(tmp_path: Path) -> None:
    from resnet_edge.benchmark import artifact_labels

    paths = [tmp_path / "x" / "model.onnx", tmp_path / "y" / "model.onnx", tmp_path / "model.tflite"]
    assert artifact_labels(paths) == [str(paths[0]), str(paths[1]), "model.tflite"]


@pytest.mark.parametrize(("given", "message"), [
    ([], "give at least one artifact"),
    (["a8.onnx", "a8.onnx"], "a8.onnx is given twice"),
    (["a8.onnx", "missing.onnx"], "missing.onnx: no such file"),
    (["a8.onnx", "notes.txt"], "notes.txt"),
])
def test_several_artifacts_refuse_bad_lists_before_loading(fake_artifacts, given: list[str], message: str) -> None:
    from resnet_edge.benchmark import benchmark_artifacts
    from resnet_edge.errors import ResnetEdgeError

    paths, loaded = fake_artifacts
    folder = paths[0].parent
    (folder / "notes.txt").write_text("no model")
    with pytest.raises(ResnetEdgeError, match=message):
        benchmark_artifacts([folder / name for name in given], min_time_s=0.0, warmup=0)
    assert loaded == []


@pytest.mark.slow
def test_two_real_artifacts_benchmarked_together_from_the_cli(artifacts, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    paths = [artifacts["onnx"], artifacts["tflite-int8"]]
    done = subprocess.run([sys.executable, "-m", "resnet_edge.cli", "benchmark", *map(str, paths), "--threads", "1",
                           "--min-time-s", "0.1", "--warmup", "1", "--out", str(tmp_path / "bench"), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout)
    rows = answer["rows"]
    assert [(r["format"], r["status"], r["precision"]) for r in rows] == [(paths[0].name, "ok", "fp32"),
                                                                         (paths[1].name, "ok", "int8")]
    for row in rows:
        assert row["threads"] == 1 and row["latency"]["interleaved"] and row["p50_ms"] > 0
        assert row["fps"] == pytest.approx(1000.0 / row["p50_ms"])
    assert {"json", "csv", "md"} <= set(answer["reports"]) and all(Path(p).is_file() for p in answer["reports"].values())
    table = subprocess.run([sys.executable, "-m", "resnet_edge.cli", "benchmark", str(paths[0]), str(paths[1]),
                            "--all"], capture_output=True, text=True, timeout=120)
    assert table.returncode == 2 and "--all takes one Keras model" in table.stderr
