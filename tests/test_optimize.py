"""``optimize`` keeps the fastest artifact that passes, never a planted slow or failing one, calls candidates
within each other's noise a tie and says how it settled it, and writes its receipt."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from resnet_edge import registry
from resnet_edge.backends.onnxruntime.backend import OnnxRuntimeBackend
from resnet_edge.benchmark import FormatRow
from resnet_edge.errors import InvalidArgumentError, ParityError
from resnet_edge.optimize import Choice, decide, optimize, summary_lines, tie_band, tied
from resnet_edge.predictor import load

FAST = {"min_time_s": 0.2, "warmup": 2, "calib_count": 100, "parity_count": 200}


class SlowBackend(OnnxRuntimeBackend):
    """A correct artifact that is 30 ms slower per call than ONNX Runtime."""

    name = "planted-slow"

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        time.sleep(0.03)
        return super().run(batch)


class WrongBackend(OnnxRuntimeBackend):
    """The fastest artifact of all, and wrong: one fixed class for every image."""

    name = "planted-wrong"

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        scores = np.zeros((len(batch), 10), np.float32)
        scores[:, 3] = 1.0
        return [scores]


@pytest.fixture
def planted(monkeypatch):
    """Two formats written by the real ONNX converter but run by the planted backends."""
    onnx_row = registry.BACKENDS["onnxruntime"]
    for name, cls in (("planted-slow", SlowBackend), ("planted-wrong", WrongBackend)):
        suffix = "." + name.split("-")[1]
        monkeypatch.setitem(registry.BACKENDS, name, registry.BackendEntry(
            name, f"{__name__}:{cls.__name__}", (suffix,), onnx_row.container, ("cpu",), "onnxruntime"))
        monkeypatch.setitem(registry.FORMATS, name, registry.FormatEntry(
            name, "resnet_edge.backends.onnxruntime.convert:convert_fp32", suffix, "fp32", name, "planted", registry.FORMATS["onnx"].options,
            tag=name))


@pytest.mark.slow
def test_picks_the_fastest_passing_format_never_a_planted_one(trained_model_path, tmp_path, planted) -> None:
    choice = optimize(trained_model_path, tmp_path, max_drop=1.0,
                      formats=["onnx", "tflite-int8", "planted-slow", "planted-wrong"], **FAST)
    rows = {row.format: row for row in choice.rows}
    assert rows["planted-wrong"].status.startswith("exported but failed parity")
    assert rows["planted-wrong"].p50_ms is None  # a failing format is not timed
    assert rows["planted-slow"].status == "ok" and rows["planted-slow"].p50_ms > 30
    chosen_format = choice.chosen.format.split(" (")[0] if choice.chosen else None  # a variant: "tflite-int8 (mlir)"
    assert chosen_format in ("onnx", "tflite-int8")
    assert all(row.latency["interleaved"] for row in choice.rows if row.p50_ms is not None)
    candidates = [row for row in choice.rows if row.status == "chosen" or row.status.startswith("tied with")]
    fastest = min(candidates, key=lambda row: row.p50_ms)
    assert choice.chosen is fastest or tied(fastest, choice.chosen)  # the fastest, or within its noise
    assert not tied(fastest, rows["planted-slow"])  # 30 ms slower is never a tie
    assert choice.decision.tied_with == [row for row in candidates if row is not choice.chosen]
    with load(choice.artifact) as predictor:
        assert predictor.metadata.format == chosen_format
    receipt = json.loads((tmp_path / "optimize.json").read_text())
    assert receipt["chosen"] == choice.chosen.format and receipt["max_drop_points"] == 1.0
    assert receipt["rule"] in ("fastest", "smaller file", "registry order") and "tie_rule" in receipt
    assert receipt["tied_with"] == [row.format for row in choice.decision.tied_with]
    assert receipt["summary"][0].startswith(f"chosen: {choice.chosen.format}")
    assert all(row["noise_ms"] is not None for row in receipt["rows"] if row["p50_ms"] is not None)
    assert {row["format"] for row in receipt["rows"]} >= {"keras", "onnx", "planted-slow", "planted-wrong"}
    assert (tmp_path / "optimize.md").read_text().count("planted-wrong") >= 1
    assert (tmp_path / "optimize.png").stat().st_size > 0


@pytest.mark.slow
def test_nothing_passing_is_an_error_with_the_receipt_written(trained_model_path, tmp_path, planted) -> None:
    with pytest.raises(ParityError, match="no format passed"):
        optimize(trained_model_path, tmp_path, formats=["planted-wrong"], **FAST)
    assert json.loads((tmp_path / "optimize.json").read_text())["chosen"] is None
    assert not list(tmp_path.glob("*_best*"))


def _timed(name: str, p50: float, noise: float, size: float, noisy: bool = False) -> FormatRow:
    return FormatRow(name, "ok", size_mb=size, p50_ms=p50, noise_ms=noise, noisy=noisy, fps=1000.0 / p50,
                     top1_agreement=1.0, path=f"/tmp/{name}")


def _choice(passing: list[FormatRow]) -> Choice:
    decision = decide(passing)
    return Choice(passing, decision.chosen, None, 1.0, {row.format: 0.0 for row in passing}, decision=decision)


def test_a_sub_noise_gap_is_a_tie_settled_by_the_smaller_file() -> None:
    openvino = _timed("openvino-int8", 0.607, 0.05, 11.47, noisy=True)
    tflite = _timed("tflite-int8", 0.608, 0.004, 11.33)
    onnx = _timed("onnx", 2.44, 0.02, 44.8)
    decision = decide([onnx, tflite, openvino])
    assert decision.chosen is tflite and decision.fastest is openvino  # not the 0.001 ms "winner"
    assert decision.tied_with == [openvino] and decision.rule == "smaller file"
    assert decision.band_ms == pytest.approx(0.03 * 0.607)  # the 3 % floor: wider than the steadier row's noise
    lines = summary_lines(_choice([onnx, tflite, openvino]))
    assert lines[0].startswith("chosen: tflite-int8 (0.608 ms p50")
    assert lines[1] == ("tie: openvino-int8 0.607 ms and tflite-int8 0.608 ms are within noise (±0.018 ms); "
                        "chose tflite-int8: smaller file (openvino-int8 11.47 MB, tflite-int8 11.33 MB)")
    facts = _choice([onnx, tflite, openvino]).to_dict()
    assert facts["chosen"] == "tflite-int8" and facts["tied_with"] == ["openvino-int8"]
    assert facts["rule"] == "smaller file" and facts["tie_band_ms"] == pytest.approx(0.01821)


def test_clearly_separated_candidates_the_faster_wins() -> None:
    tflite = _timed("tflite-int8", 0.111, 0.002, 11.33)
    openvino = _timed("openvino-int8", 0.173, 0.004, 11.2)
    decision = decide([openvino, tflite])
    assert decision.chosen is tflite and decision.rule == "fastest" and not decision.tie
    assert decision.runner_up is openvino
    lines = summary_lines(_choice([openvino, tflite]))
    assert lines[1] == "next: openvino-int8 0.173 ms, beyond the noise (±0.0033 ms)"
    assert not any(line.startswith(("tie:", "warning:")) for line in lines)


def test_the_tie_rule_is_symmetric_and_has_a_relative_floor() -> None:
    first, second = _timed("a", 0.50, 0.06, 10.0), _timed("b", 0.55, 0.08, 12.0)
    assert tied(first, second) and tied(second, first)  # each within the other's band
    assert tie_band(first, second) == tie_band(second, first) == pytest.approx(0.06)
    steady, wobbly = _timed("a", 0.50, 0.001, 10.0), _timed("b", 0.60, 0.15, 12.0)
    assert not tied(steady, wobbly) and not tied(wobbly, steady)  # the steady one's band excludes the other
    same, twin = _timed("onnx-int8", 1.00, 0.0, 11.0), _timed("openvino-int8", 1.02, 0.0, 11.0)
    assert tied(same, twin) and not tied(same, _timed("c", 1.04, 0.0, 1.0))  # 3 % of the faster p50
    decision = decide([twin, same])  # equal sizes: the table's (registry's) order decides
    assert decision.chosen is twin and decision.rule == "registry order" and decision.tied_with == [same]
    assert "same size, earlier in the registry's format order" in summary_lines(_choice([twin, same]))[1]
    assert decide([]).chosen is None


def test_a_noisy_slow_row_never_wins_a_tie_on_file_size() -> None:
    fast = _timed("tflite-int8", 0.437, 0.043, 11.31)
    wild = _timed("onnx-int8", 2.14, 7.8, 11.25, noisy=True)  # seen on a loaded 2-core machine
    decision = decide([wild, fast])
    assert decision.chosen is fast and decision.rule == "fastest" and not decision.tie
    assert summary_lines(_choice([wild, fast]))[1] == "next: onnx-int8 2.14 ms (noisy), beyond the noise (±0.043 ms)"
    assert summary_lines(_choice([_timed("x", 0.38, 0.0, 1.0)]))[0].startswith("chosen: x (0.380 ms p50")


def test_a_noisy_choice_is_said_out_loud() -> None:
    noisy = _timed("openvino-int8", 0.3, 0.2, 11.0, noisy=True)
    lines = summary_lines(_choice([noisy]))
    assert lines[1].startswith("warning: openvino-int8's timing is noisy (round-to-round ±0.2 ms)")


def test_a_budget_over_the_drop_marks_the_format(trained_model_path) -> None:
    from resnet_edge.optimize import accuracy_drop, passes

    reference = FormatRow("keras", "ok", accuracy=0.95, top1_agreement=1.0, p50_ms=10.0)
    int8 = FormatRow("tflite-int8", "ok", accuracy=0.93, top1_agreement=0.97, p50_ms=2.0)
    drop = accuracy_drop(int8, reference)
    assert drop == pytest.approx(2.0)
    assert not passes(int8, drop, 1.0) and passes(int8, drop, 2.5)
    unlabelled = FormatRow("onnx", "ok", top1_agreement=0.995, p50_ms=5.0)
    assert accuracy_drop(unlabelled, reference) == pytest.approx(0.5)


@pytest.mark.parametrize(("kwargs", "message"), [({"max_drop": -1}, "at least 0"), ({"parity_count": 0}, "parity"),
                                                  ({"formats": ["onnx-int9"]}, "did you mean onnx-int8")])
def test_bad_arguments_are_one_line_errors(trained_model_path, tmp_path, kwargs, message) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        optimize(trained_model_path, tmp_path, **kwargs)
