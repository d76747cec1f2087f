"""``info`` on a Keras file reads its figures from the file (config and weight shapes), not by loading Keras."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from resnet_edge.info import describe_file, keras_figures
from resnet_edge.models import build_resnet, count_macs
from resnet_edge.models import io as keras_io


def _nested():
    import keras

    inner = build_resnet("resnet18", (32, 32, 3), num_classes=10)
    inputs = keras.Input((32, 32, 3))
    return keras.Model(inputs, inner(inputs), name="wrapped"), 37_016_576  # resnet18's multiply-adds at 32x32


@pytest.mark.parametrize(("make", "depth", "block"), [
    (lambda: build_resnet("resnet18", (32, 32, 3), num_classes=4, head="seed"), 18, "basic"),
    (lambda: build_resnet("resnet50", (64, 48, 3), num_classes=3, preprocessing="caffe"), 50, "bottleneck"),
    (lambda: build_resnet("resnet18", (32, 32, 3), num_classes=10, preprocessing="none"), 18, "basic"),
])
def test_figures_read_from_the_file_match_the_loaded_model(make, depth, block, tmp_path) -> None:
    model = make()
    path = keras_io.save_model(model, tmp_path / "m.keras")
    figures = keras_figures(path)
    assert figures is not None
    assert figures["parameters"] == model.count_params() and figures["macs"] == count_macs(model)
    assert (figures["model"], figures["depth"], figures["block"]) == (model.name, depth, block)
    keras_io.write_keras(path, keras_io.describe(model))  # rewritten: the weights entry is compressed now
    assert keras_figures(path)["parameters"] == model.count_params()


def test_a_model_inside_a_model_is_counted(tmp_path) -> None:
    model, macs = _nested()
    path = keras_io.save_model(model, tmp_path / "wrapped.keras")
    summary = describe_file(path)
    assert summary["macs"] == macs and summary["parameters"] == model.count_params()
    assert summary["depth"] is None and summary["metadata"]["model"] == "wrapped"


def test_a_file_without_metadata_is_still_described(tmp_path) -> None:
    model = build_resnet("resnet18", (32, 32, 3), num_classes=10, preprocessing="none")
    path = tmp_path / "plain.keras"
    model.save(path)  # plain Keras, as keras.applications users save: no resnet-edge metadata
    assert keras_figures(path) is None
    summary = describe_file(path)
    assert summary["parameters"] == model.count_params() and summary["metadata"]["preprocessing"] == "none"


def test_info_does_not_import_tensorflow(tmp_path) -> None:
    path = keras_io.save_model(build_resnet("resnet18", (32, 32, 3), num_classes=10), tmp_path / "m.keras")
    code = ("import sys, json; from resnet_edge.info import describe_file; "
            f"s = describe_file({str(path)!r}); "
            "print(json.dumps([s['parameters'], s['macs'], 'tensorflow' in sys.modules, 'keras' in sys.modules]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    parameters, macs, tensorflow, keras = json.loads(result.stdout)
    assert parameters == 11_196_042 and macs == 37_016_576 and not tensorflow and not keras
