"""Half vs all of the calibration set: agreement and activation ranges, read from the artifacts."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("fmt", ["onnx-int8", "tflite-int8"])
def test_half_and_full_calibration_are_compared(fmt, trained_model_path, calibration_set, tmp_path) -> None:
    from resnet_edge.calib_report import activation_scales
    from resnet_edge.exporter import export

    suffix = ".onnx" if fmt.startswith("onnx") else ".tflite"
    result = export(trained_model_path, fmt, tmp_path / f"m{suffix}", calibration=calibration_set, calib_report=True)
    report = result.calibration_report
    assert (report.half_images, report.full_images) == (len(calibration_set) // 2, len(calibration_set))
    assert report.full is result.parity
    assert report.half.samples == report.full.samples and report.half.calibration_images == report.half_images
    assert report.half.data == report.full.data  # both checked on the same images
    assert report.tensors >= 20 and report.tensors == len(activation_scales(result.path))
    assert 0 <= report.median_range_change <= report.max_range_change < 1.0
    lines = report.lines()
    assert f"calibration with {report.half_images} images" in lines[0] and report.most_changed in lines[2]
    assert result.summary()["calibration_report"]["half_images"] == report.half_images


def test_openvino_int8_reads_its_scales_too(trained_model_path, calibration_set, tmp_path) -> None:
    """--calib-report crossed with openvino-int8 used to write the artifact and die opening the .xml as TFLite."""
    pytest.importorskip("openvino")
    from resnet_edge.calib_report import activation_scales
    from resnet_edge.exporter import export

    result = export(trained_model_path, "openvino-int8", tmp_path / "m.xml", calibration=calibration_set,
                    calib_report=True)
    assert result.calibration_report.tensors >= 10
    assert len(activation_scales(result.path)) >= 10
