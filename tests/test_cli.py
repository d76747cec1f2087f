"""The CLI: one-line errors with exit code 2, readable output, JSON for machines."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "resnet_edge.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["build", "resnet99"], "did you mean resnet50"),
        (["build", "resnet18", "--input-size", "16"], "at least 32"),
        (["build", "resnet18", "--input-size", "abc"], "input size must be"),
        (["build", "resnet18", "--bogus"], "No such option"),
        (["train", "--data", "/nonexistent/folder"], "no such folder"),
        (["info", "/nonexistent/model.onnx"], "no such file"),
        (["predict", "/nonexistent/model.onnx", "x.png"], "x.png: no such file or folder"),
        (["export", "/nonexistent/model.keras", "--format", "onnx"], "no such model file"),
        (["benchmark", "/nonexistent/model.onnx", "--frame", "huge"], "frame size must be one of 480p"),
        (["train", "--resize", "fill"], "resize policy must be one of squash, center-crop, letterbox"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, message) -> None:
    result = cli(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in result.stderr


def test_export_option_errors(trained_model_path, tmp_path) -> None:
    target = tmp_path / "m.onnx"
    for args, message in [
        (["--format", "onx"], "did you mean onnx"),
        (["--format", "tflite", "--precision", "fp16"], "--precision does not apply to tflite"),
        (["--format", "tflite-int8"], "--calib-data"),
        (["--format", "onnx-int8", "--calib-data", "/nope"], "no such folder"),
        (["--format", "onnx", "--max-drop", "1"], "--max-drop applies to onnx-int8, tflite-int8; not to onnx"),
        (["--format", "onnx-int8", "--calib-data", "digits", "--keep-best"], "only with --max-drop"),
        (["--format", "tflite-int8", "--calib-data", "digits", "--max-drop", "120"], "percentage from 0 to 100"),
        (["--format", "tflite", "--int8-softmax"], "--int8-softmax does not apply to tflite"),
    ]:
        result = cli("export", str(trained_model_path), "--out", str(target), *args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert not target.exists()


def test_build_info_json(tmp_path) -> None:
    path = tmp_path / "r50.keras"
    built = cli("build", "resnet50", "--input-size", "64", "--classes", "3", "--out", str(path), "--json")
    assert built.returncode == 0, built.stderr
    info = json.loads(cli("info", str(path), "--json").stdout)
    assert info["parameters"] == json.loads(built.stdout)["parameters"] == 23_593_859
    assert info["depth"] == 50 and info["block"] == "bottleneck"
    assert info["metadata"]["input_shape"] == [64, 64, 3] and info["metadata"]["labels"] == ["0", "1", "2"]


def test_export_predict_parity_round_trip(trained_model_path, artifacts, tmp_path, digits) -> None:
    exported = cli("export", str(trained_model_path), "--format", "onnx", "--out", str(tmp_path / "m.onnx"),
                   "--json")
    assert exported.returncode == 0, exported.stderr
    summary = json.loads(exported.stdout)
    assert summary["parity"]["passed"] and summary["size_bytes"] == (tmp_path / "m.onnx").stat().st_size

    from PIL import Image

    for index in range(3):
        Image.fromarray(digits.images[index]).save(tmp_path / f"{index}.png")
    table = cli("predict", str(tmp_path / "m.onnx"), str(tmp_path / "0.png"), "--top-k", "2")
    assert table.returncode == 0 and "0.png" in table.stdout
    csv_rows = cli("predict", str(tmp_path / "m.onnx"), str(tmp_path), "--csv", "--top-k", "2").stdout.splitlines()
    assert csv_rows[0] == "source,rank,label,index,score" and len(csv_rows) == 1 + 3 * 2

    reference = tmp_path / "reference.npz"
    parity = cli("parity", str(trained_model_path), str(artifacts["tflite-int8"]), str(artifacts["onnx-fp16"]),
                 "--n", "200", "--save-outputs", str(reference), "--json")
    assert parity.returncode == 0, parity.stderr + parity.stdout
    reports = json.loads(parity.stdout)
    assert [r["precision"] for r in reports] == ["int8", "fp16"] and all(r["passed"] for r in reports)
    assert reports[0]["samples"] == 200 and reports[0]["candidate_accuracy"] is not None
    elsewhere = cli("parity", str(artifacts["tflite-int8"]), "--load-outputs", str(reference), "--json")
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert json.loads(elsewhere.stdout)[0]["top1_agreement"] == reports[0]["top1_agreement"]


def test_parity_exit_code_when_an_artifact_fails(trained_model_path, tmp_path) -> None:
    from resnet_edge.exporter import export
    from resnet_edge.models import build_resnet

    impostor = build_resnet("resnet18", (32, 32, 3), num_classes=10)
    wrong = tmp_path / "wrong.onnx"
    export(impostor, "onnx", wrong, verify=False)
    result = cli("parity", str(trained_model_path), str(wrong), "--n", "100")
    assert result.returncode == 1
    assert "FAIL" in result.stdout and "top-1 agreement" in result.stdout


def test_export_with_a_budget_and_a_calibration_report(trained_model_path, tmp_path) -> None:
    target = tmp_path / "m.tflite"
    result = cli("export", str(trained_model_path), "--format", "tflite-int8", "--calib-data", "digits",
                 "--calib-count", "120", "--max-drop", "1", "--calib-report", "--out", str(target), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["parity"]["passed"] and summary["parity"]["calibration_images"] == 120
    assert summary["fallback"] == {"float_layers": [], "rounds": 0, "met": True, "int8_p50_ms": None,
                                   "final_p50_ms": None}  # a healthy model needs no float layer
    report = summary["calibration_report"]
    assert report["half_images"] == 60 and report["full_images"] == 120 and report["tensors"] > 20


def test_the_resize_policy_is_chosen_at_build_or_train_and_recorded(tmp_path) -> None:
    from PIL import Image

    built = tmp_path / "cropped.keras"
    assert cli("build", "resnet18", "--input-size", "32", "--classes", "2", "--resize", "center-crop",
               "--out", str(built)).returncode == 0
    assert json.loads(cli("info", str(built), "--json").stdout)["metadata"]["resize"] == "center-crop"
    assert "center-crop (the largest centred region" in cli("info", str(built)).stdout

    folder = tmp_path / "wide"
    rng = np.random.default_rng(0)
    for label, color in enumerate(((200, 30, 30), (30, 30, 200))):
        (folder / f"class{label}").mkdir(parents=True)
        for index in range(4):
            frame = np.clip(np.array(color) + rng.normal(0, 20, (90, 160, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(frame).save(folder / f"class{label}" / f"{index}.png")
    trained = tmp_path / "letterboxed.keras"
    result = cli("train", "--model", "resnet18", "--data", str(folder), "--input-size", "32", "--epochs", "1",
                 "--resize", "letterbox", "--out", str(trained), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["resize"] == "letterbox"
    assert json.loads(cli("info", str(trained), "--json").stdout)["metadata"]["resize"] == "letterbox"
    bad = cli("build", "resnet18", "--resize", "stretch", "--out", str(tmp_path / "x.keras"))
    assert bad.returncode == 2 and "resize policy must be one of squash, center-crop, letterbox" in bad.stderr
    assert not (tmp_path / "x.keras").exists()


@pytest.mark.slow
def test_predict_an_onnx_file_with_the_openvino_backend(artifacts, tmp_path, digits) -> None:
    pytest.importorskip("openvino")
    from PIL import Image

    for index, image in enumerate(digits.sample(6, seed=9).images):
        Image.fromarray(image).save(tmp_path / f"{index}.png")
    answers = {}
    for backend in ("onnxruntime", "openvino"):
        result = cli("predict", str(artifacts["onnx"]), str(tmp_path), "--backend", backend, "--top-k", "1", "--json")
        assert result.returncode == 0, result.stderr
        answers[backend] = [p["indices"] for p in json.loads(result.stdout)["predictions"]]
    assert answers["openvino"] == answers["onnxruntime"]
    wrong = cli("predict", str(artifacts["tflite"]), str(tmp_path), "--backend", "openvino")
    assert wrong.returncode == 2 and "the openvino backend runs .xml, .onnx files" in wrong.stderr
