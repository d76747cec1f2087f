"""Every format x every export option and feature: it works, or it is refused in one line before any work."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from resnet_edge.errors import InvalidArgumentError
from resnet_edge.exporter import check_request
from resnet_edge.registry import FEATURES, FORMATS

# A value other than the default for every format option in the rows (each must be a valid one).
SAMPLES = {"opset": 18, "int8_softmax": True, "float_layers": "conv1_conv", "scheme": "s8s8",
           "calib_method": "entropy", "io": "uint8", "precision": "fp16", "workspace": 512, "batch": "1,2,4",
           "dla_core": 0, "timing_cache": "cache.bin", "hardware_compatibility": True, "inference_precision": "bf16",
           "method": "nncf", "storage": "bf16", "winograd": "on", "quantizer": "mlir"}
ALL_OPTIONS = sorted({name for fmt in FORMATS.values() for name in fmt.options})


def test_every_option_has_a_sample() -> None:
    assert set(ALL_OPTIONS) <= set(SAMPLES)


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("option", ALL_OPTIONS)
def test_an_option_applies_exactly_where_the_row_says(fmt, option) -> None:
    row = FORMATS[fmt]
    if option in row.options:
        assert row.resolve_options({option: SAMPLES[option]})[option] is not None
        return
    with pytest.raises(InvalidArgumentError) as caught:
        row.resolve_options({option: SAMPLES[option]})
    message = str(caught.value)
    assert "\n" not in message and f"--{option.replace('_', '-')} does not apply to {fmt}" in message


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("feature", FEATURES)
@pytest.mark.parametrize("precision", ["default", "int8"])
def test_a_feature_is_taken_or_refused_by_the_row(fmt, feature, precision) -> None:
    row = FORMATS[fmt]
    options = row.resolve_options({"precision": "int8"} if precision == "int8" and "precision" in row.options else {})
    request = {"budget": object()} if feature == "max_drop" else {"calib_report": True}
    reason = row.refusal(feature, options)
    if reason is None:
        assert row.needs_calibration(options)
        check_request(row, options, calibration=object(), **request)
        with pytest.raises(InvalidArgumentError, match="needs verification"):
            check_request(row, options, calibration=object(), verify=False, **request)
    else:
        flag = "--" + feature.replace("_", "-")
        assert reason.startswith(f"{flag} applies to ") and f"not to {fmt}" in reason and "\n" not in reason
        with pytest.raises(InvalidArgumentError, match=flag):
            check_request(row, options, calibration=object(), **request)


def test_which_formats_take_the_features() -> None:
    """What the rows decide today (a new int8 format either joins these or is refused, by its row)."""
    takes = {feature: sorted(f for f, row in FORMATS.items() if row.refusal(feature) is None) for feature in FEATURES}
    assert takes["max_drop"] == ["onnx-int8", "tflite-int8"]
    assert takes["calib_report"] == ["onnx-int8", "openvino-int8", "tflite-int8"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "resnet_edge.cli", *args], capture_output=True, text=True,
                          timeout=900)


def _flags(option: str, value) -> list[str]:
    flag = "--" + option.replace("_", "-")
    return [flag] if value is True else [flag, str(value)]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("fmt", [name for name, row in FORMATS.items() if row.runs_on_cpu])
def test_every_option_of_a_format_at_once_works_or_is_one_line(fmt, trained_model_path, tmp_path) -> None:
    """All of a format's options away from their defaults, plus every feature it takes: a file, or one line and none."""
    row = FORMATS[fmt]
    args = ["export", str(trained_model_path), "--format", fmt, "--out", str(tmp_path / "out/")]
    for option in row.options:
        args += _flags(option, SAMPLES[option])
    if row.needs_calibration():
        args += ["--calib-data", "digits", "--calib-count", "64"]
        if row.refusal("max_drop") is None:
            args += ["--max-drop", "5", "--max-float-layers", "4"]
        if row.refusal("calib_report") is None:
            args += ["--calib-report"]
    result = cli(*args)
    assert "Traceback" not in result.stderr, result.stderr
    files = _leftovers(tmp_path / "out") if (tmp_path / "out").exists() else []
    if result.returncode == 0:
        assert any(name.endswith(row.suffix) for name in files), files
    else:
        assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error: ")
        assert not [name for name in files if not name.startswith(".")] and not files, files
    if row.needs_calibration():
        return
    # a float format refuses every int8-only feature before any work
    for extra, flag in ((["--max-drop", "1"], "--max-drop"), (["--calib-report"], "--calib-report")):
        started = time.perf_counter()
        refused = cli("export", str(trained_model_path), "--format", fmt, "--out", str(tmp_path / "x/"), *extra)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and flag in refused.stderr
        assert time.perf_counter() - started < 30 and not (tmp_path / "x").exists()


@pytest.mark.slow
def test_float_layers_must_name_layers_of_the_model(trained_model_path, tmp_path) -> None:
    result = cli("export", str(trained_model_path), "--format", "onnx-int8", "--calib-data", "digits",
                 "--float-layers", "conv1_conv,conv2_blok1_1_conv", "--out", str(tmp_path / "m.onnx"))
    assert result.returncode == 2
    assert "has no layer 'conv2_blok1_1_conv'; did you mean conv2_block1_1_conv?" in result.stderr
    assert not (tmp_path / "m.onnx").exists()
