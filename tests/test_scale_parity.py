"""Parity on Ray: per-image statistics reduced on the driver give the in-process report, figure for figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CANDIDATES = ("tflite-int8", "onnx", "onnx-fp16")


@pytest.fixture(scope="module")
def labelled_folder(digit_folder) -> Path:
    """100 digits in class folders (four batches of 32, the last one short) and a broken file at the very end."""
    return digit_folder("parity_images", 100, "zz_broken.png")


@pytest.fixture(scope="module")
def in_process_reports(trained_model_path, artifacts, labelled_folder):
    from resnet_edge.data import load_dataset
    from resnet_edge.parity import compare
    from resnet_edge.predictor import load

    with load(trained_model_path, device="cpu") as reference:
        with pytest.warns(UserWarning, match="skipped 1 unreadable"):
            data = load_dataset(labelled_folder, reference.input_spec.size, reference.resize_policy)
        reports = []
        for name in CANDIDATES:
            with load(artifacts[name]) as candidate:
                reports.append(compare(reference, candidate, data))
    return [json.loads(json.dumps(r.to_dict(), default=str)) for r in reports]


def test_reports_equal_the_in_process_ones(ray_local, trained_model_path, artifacts, labelled_folder,
                                           in_process_reports):
    from resnet_edge.scale.parity import parity_on_ray

    reports, unreadable = parity_on_ray(trained_model_path, [artifacts[n] for n in CANDIDATES], labelled_folder)
    assert len(unreadable) == 1 and "zz_broken.png" in unreadable[0]
    assert [json.loads(json.dumps(r.to_dict(), default=str)) for r in reports] == in_process_reports
    assert all(r.samples == 100 and r.candidate_accuracy is not None for r in reports)


def test_cli_on_a_cluster_address_gives_the_same_report(ray_local, trained_model_path, artifacts, labelled_folder,
                                                        in_process_reports):
    address = ray_local.get_runtime_context().gcs_address
    result = subprocess.run(
        [sys.executable, "-m", "resnet_edge.cli", "parity", str(trained_model_path),
         *(str(artifacts[n]) for n in CANDIDATES), "--data", str(labelled_folder), "--ray", address, "--json"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == in_process_reports
    assert "left out 1 unreadable image(s)" in result.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ray", "--save-outputs", "x.npz"], "cannot be combined with --ray"),
        (["--workers", "2"], "--workers applies only with --ray"),
        (["--ray", "--data", "digits"], "parity on Ray reads an image folder"),
    ],
)
def test_bad_combinations_are_one_line_errors(trained_model_path, artifacts, extra, message):
    result = subprocess.run([sys.executable, "-m", "resnet_edge.cli", "parity", str(trained_model_path),
                             str(artifacts["onnx"]), *extra], capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
