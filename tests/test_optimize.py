"""``optimize`` keeps the fastest artifact that passes, never a planted slow or failing one, and writes its receipt."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from resnet_edge import registry
from resnet_edge.errors import InvalidArgumentError, ParityError
from resnet_edge.optimize import optimize
from resnet_edge.runtime import load
from resnet_edge.runtime.onnxrt import OnnxRuntimeBackend

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
            name, "resnet_edge.export.onnx:convert", suffix, "fp32", name, "planted", registry.FORMATS["onnx"].options,
            tag=name))


@pytest.mark.slow
def test_picks_the_fastest_passing_format_never_a_planted_one(trained_model_path, tmp_path, planted) -> None:
    choice = optimize(trained_model_path, tmp_path, max_drop=1.0,
                      formats=["onnx", "tflite-int8", "planted-slow", "planted-wrong"], **FAST)
    rows = {row.format: row for row in choice.rows}
    assert rows["planted-wrong"].status.startswith("exported but failed parity")
    assert rows["planted-wrong"].p50_ms is None  # a failing format is not timed
    assert rows["planted-slow"].status == "ok" and rows["planted-slow"].p50_ms > 30
    assert choice.chosen is not None and choice.chosen.format in ("onnx", "tflite-int8")
    timed = [row for row in choice.rows if row.format != "keras" and row.p50_ms is not None]
    assert choice.chosen.p50_ms == min(row.p50_ms for row in timed if row.status in ("ok", "chosen"))
    with load(choice.artifact) as predictor:
        assert predictor.metadata.format == choice.chosen.format
    receipt = json.loads((tmp_path / "optimize.json").read_text())
    assert receipt["chosen"] == choice.chosen.format and receipt["max_drop_points"] == 1.0
    assert {row["format"] for row in receipt["rows"]} >= {"keras", "onnx", "planted-slow", "planted-wrong"}
    assert (tmp_path / "optimize.md").read_text().count("planted-wrong") >= 1
    assert (tmp_path / "optimize.png").stat().st_size > 0


@pytest.mark.slow
def test_nothing_passing_is_an_error_with_the_receipt_written(trained_model_path, tmp_path, planted) -> None:
    with pytest.raises(ParityError, match="no format passed"):
        optimize(trained_model_path, tmp_path, formats=["planted-wrong"], **FAST)
    assert json.loads((tmp_path / "optimize.json").read_text())["chosen"] is None
    assert not list(tmp_path.glob("*_best*"))


def test_a_budget_over_the_drop_marks_the_format(trained_model_path) -> None:
    from resnet_edge.benchmark import FormatRow
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
