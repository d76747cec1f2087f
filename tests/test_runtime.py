"""One Predictor for every artifact: parity with Keras, every input kind, threads, bad files, no TensorFlow."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from resnet_edge.errors import DataError, DeviceError, InvalidArgumentError, ModelFileError
from resnet_edge.parity import compare
from resnet_edge.predictor import load
from resnet_edge.registry import FORMATS

BACKEND_OF = {"keras": "keras", **{name: fmt.backend for name, fmt in FORMATS.items() if fmt.runs_on_cpu}}


@pytest.fixture(scope="module")
def every_artifact(artifacts, trained_model_path):
    return {"keras": trained_model_path, **{k: v for k, v in artifacts.items() if k in BACKEND_OF}}


@pytest.fixture(scope="module")
def reference(trained_model_path):
    with load(trained_model_path, device="cpu") as predictor:
        yield predictor


@pytest.fixture(scope="module")
def sample_folder(tmp_path_factory, digits):
    folder = tmp_path_factory.mktemp("images")
    for index, image in enumerate(digits.sample(12, seed=4).images):
        Image.fromarray(image).resize((48, 40)).save(folder / f"digit_{index:02d}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return folder


@pytest.mark.parametrize("name", list(BACKEND_OF))
def test_every_backend_matches_the_keras_model(name, every_artifact, reference, calibration_set) -> None:
    with load(every_artifact[name], device="cpu") as predictor:
        assert predictor.backend.name == BACKEND_OF[name]
        report = compare(reference, predictor, calibration_set.holdout.sample(300, seed=2))
    assert report, report.line()
    assert report.candidate_accuracy is not None and report.candidate_accuracy > 0.9


@pytest.mark.parametrize("name", ["onnx", "tflite-int8"])
def test_predict_accepts_every_input_kind(name, every_artifact, sample_folder) -> None:
    files = sorted(sample_folder.glob("digit_*.png"))
    frame_rgb = np.asarray(Image.open(files[0]).convert("RGB"))
    with load(every_artifact[name], device="cpu") as predictor:
        by_path = predictor.predict(files[0], top_k=3).predictions[0]
        assert len(by_path.labels) == 3 and by_path.scores == sorted(by_path.scores, reverse=True)
        assert 0.0 <= by_path.scores[-1] <= by_path.scores[0] <= 1.0
        run = predictor.predict(sample_folder, top_k=1, batch_size=5)
        assert len(run.predictions) == 12 and run.skipped == [str(sample_folder / "broken.png")]
        assert len(predictor.predict(str(sample_folder / "digit_0*.png")).predictions) == 10
        assert predictor.predict(Image.open(files[0]), top_k=3).predictions[0].indices == by_path.indices
        from_bgr = predictor.predict(frame_rgb[..., ::-1].copy(), color="bgr").predictions[0]
        assert from_bgr.indices[0] == by_path.indices[0]
        batch = np.stack([np.asarray(Image.open(f).convert("RGB").resize((32, 32))) for f in files[:4]])
        assert len(predictor.predict(batch).predictions) == 4
        gray = np.asarray(Image.open(files[0]).convert("L"))
        assert predictor.predict(gray).predictions[0].indices[0] == by_path.indices[0]
        with pytest.raises(DataError, match=r"broken\.png"):
            predictor.predict(sample_folder, strict=True)


def test_a_logits_model_predicts_probabilities_whatever_its_outputs_look_like(tmp_path, digits) -> None:
    from resnet_edge.exporter import export
    from resnet_edge.models import build_resnet
    from resnet_edge.predictor import to_probabilities

    model = build_resnet("resnet18", (32, 32, 3), num_classes=10, classifier_activation=None)
    path = export(model, "onnx", tmp_path / "logits.onnx", verify=False).path
    with load(path, device="cpu") as predictor:
        assert predictor.metadata.output_activation == "linear"
        logits = predictor(digits.images[:1])[0]
        (prediction,) = predictor.predict(digits.images[:1], top_k=10).predictions
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(prediction.scores, np.sort(expected)[::-1], rtol=1e-5)

    looks_like_probabilities = np.array([[0.2, 0.3, 0.5]], np.float32)
    assert to_probabilities(looks_like_probabilities, "softmax") is looks_like_probabilities
    assert to_probabilities(looks_like_probabilities, None) is looks_like_probabilities  # metadata from before
    assert not np.allclose(to_probabilities(looks_like_probabilities, "linear"), looks_like_probabilities)


def test_raw_call_takes_pixels_and_returns_the_int8_logits(every_artifact, digits) -> None:
    with load(every_artifact["tflite-int8"], device="cpu") as predictor:
        assert predictor.input_spec.dtype == "int8" and predictor.metadata.output_activation == "linear"
        outputs = predictor(digits.images[:7])
        assert outputs.shape == (7, 10) and outputs.dtype == np.float32
        assert outputs.min() < 0 or outputs.max() > 1  # logits, not probabilities
        run = predictor.predict(digits.images[:7], top_k=10)
        for prediction, logits in zip(run.predictions, outputs, strict=True):
            assert prediction.indices[0] == int(np.argmax(logits))
            assert sum(prediction.scores) == pytest.approx(1.0, abs=1e-5)
        with pytest.raises(DataError, match="expected an NHWC batch"):
            predictor(np.zeros((2, 16, 16, 3), np.uint8))


@pytest.mark.parametrize("name", ["keras", "onnx", "tflite-int8"])
def test_threads_give_the_same_answers_as_serial_use(name, every_artifact, digits) -> None:
    images = digits.images[:64]
    with load(every_artifact[name], device="cpu", threads=2) as predictor:
        serial = [predictor(images[i : i + 8]) for i in range(0, 64, 8)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            parallel = list(pool.map(lambda i: predictor(images[i : i + 8]), range(0, 64, 8)))
    for expected, actual in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(expected, actual)


@pytest.mark.parametrize(
    ("content", "name", "error", "message"),
    [
        (None, "missing.onnx", ModelFileError, "no such model file"),
        (b"", "empty.tflite", ModelFileError, "empty"),
        (b"garbage" * 100, "garbage.onnx", ModelFileError, "onnxruntime cannot load it"),
        (b"garbage" * 100, "garbage.tflite", ModelFileError, "not a TFLite model"),
        (b"garbage" * 100, "garbage.keras", ModelFileError, "not a Keras model"),
        (b"x", "model.pt", ModelFileError, "unknown model suffix"),
    ],
)
def test_unreadable_models_are_one_line_errors(tmp_path, content, name, error, message) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(error, match=message) as info:
        load(path)
    assert "\n" not in str(info.value) and name in str(info.value)


def test_truncated_artifact(tmp_path, every_artifact) -> None:
    for name in ("onnx", "tflite"):
        source = every_artifact[name]
        truncated = tmp_path / source.name
        truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 3])
        with pytest.raises(ModelFileError) as info:
            load(truncated)
        assert "\n" not in str(info.value)


def test_devices_are_checked(every_artifact) -> None:
    with pytest.raises(InvalidArgumentError, match="unknown device"):
        load(every_artifact["onnx"], device="tpu")
    with pytest.raises(DeviceError, match="runs on cpu"):
        load(every_artifact["tflite"], device="cuda")
    with pytest.raises(DeviceError):
        load(every_artifact["onnx"], device="cuda")  # no silent CPU fallback
    with load(every_artifact["onnx"]) as predictor:
        assert predictor.device == "cpu"


NO_TENSORFLOW = textwrap.dedent(
    """
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"tensorflow", "keras", "tf2onnx", "onnx", "tensorrt", "sklearn"}:
                raise ImportError("blocked " + name)
    sys.meta_path.insert(0, Block())
    from resnet_edge.cli import main
    try:
        main(sys.argv[1:])
    finally:
        assert "tensorflow" not in sys.modules
    """
)


@pytest.mark.parametrize("name", ["onnx-int8", "tflite-int8"])
def test_predict_runs_end_to_end_without_tensorflow(name, every_artifact, sample_folder) -> None:
    result = subprocess.run(
        [sys.executable, "-c", NO_TENSORFLOW, "predict", str(every_artifact[name]), str(sample_folder), "--json",
         "--top-k", "2"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    import json

    payload = json.loads(result.stdout)
    assert len(payload["predictions"]) == 12 and len(payload["skipped"]) == 1
    assert {tuple(p["labels"]) for p in payload["predictions"]} and all(len(p["labels"]) == 2 for p in payload["predictions"])


# Camera-scale inputs: large JPEG folders decoded in the background, the model's resize policy --------------------

@pytest.fixture(scope="module")
def large_jpegs(tmp_path_factory, digits):
    """Digits as 12-megapixel-like camera JPEGs (4:3, far larger than the 32x32 model input)."""
    folder = tmp_path_factory.mktemp("large_jpegs")
    noise = np.random.default_rng(1)
    for index, image in enumerate(digits.sample(24, seed=7).images):
        big = np.asarray(Image.fromarray(image).resize((1600, 1200), Image.Resampling.BILINEAR)).astype(np.float64)
        big = np.clip(big + noise.normal(0, 4, big.shape), 0, 255).astype(np.uint8)
        Image.fromarray(big).save(folder / f"photo_{index:02d}.jpg", quality=90)
    return folder


@pytest.mark.parametrize("name", ["keras", "tflite-int8"])
def test_reduced_scale_jpeg_decoding_gives_the_full_decode_top1(name, every_artifact, large_jpegs) -> None:
    from resnet_edge.preprocess import load_image

    files = sorted(large_jpegs.glob("*.jpg"))
    with load(every_artifact[name], device="cpu") as predictor:
        reduced = predictor.predict(large_jpegs, top_k=1, batch_size=8).predictions
        full = predictor.classify(predictor.prepare([load_image(f) for f in files]), top_k=1)
    assert [p.source for p in reduced] == [str(f) for f in files]
    assert [p.indices[0] for p in reduced] == [p.indices[0] for p in full]


def test_background_decoding_keeps_order_and_skips_unreadable_files(every_artifact, sample_folder) -> None:
    files = sorted(sample_folder.glob("digit_*.png"))
    with load(every_artifact["onnx"], device="cpu") as predictor:
        serial = [predictor.predict(f, top_k=2).predictions[0] for f in files]
        for workers in (1, 4):
            batches = list(predictor.iter_batches([*files[:5], sample_folder / "broken.png", *files[5:]],
                                                  batch_size=3, workers=workers, skipped=(skipped := [])))
            names = [name for chunk, _ in batches for name in chunk]
            assert names == [str(f) for f in files] and skipped == [str(sample_folder / "broken.png")]
        parallel = predictor.predict(sample_folder, top_k=2, batch_size=5).predictions
    assert [(p.source, p.indices) for p in parallel] == [(p.source, p.indices) for p in serial]


@pytest.mark.parametrize("policy", ["center-crop", "letterbox"])
def test_every_artifact_follows_the_model_resize_policy(tmp_path, trained_model_path, policy) -> None:
    from resnet_edge.exporter import export
    from resnet_edge.models.io import load_model, read_keras, save_model
    from resnet_edge.preprocess import resize

    model, metadata = load_model(trained_model_path)
    source = save_model(model, tmp_path / "policy.keras", metadata.replace(resize=policy))
    assert read_keras(source).resize == policy
    onnx_path = export(source, "onnx", tmp_path / "policy.onnx", verify=False).path
    frame = np.random.default_rng(3).integers(0, 256, (90, 160, 3), dtype=np.uint8)  # 16:9
    for path in (source, onnx_path):
        with load(path, device="cpu") as predictor:
            assert predictor.resize_policy == policy
            got = predictor.predict(frame, top_k=10).predictions[0]
            expected = predictor.classify(resize(frame, (32, 32), policy)[None], top_k=10)[0]
            squashed = predictor.classify(resize(frame, (32, 32), "squash")[None], top_k=10)[0]
            assert got.indices == expected.indices
            np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-5, atol=1e-6)
            assert not np.allclose(sorted(got.scores), sorted(squashed.scores), rtol=1e-3, atol=1e-4)
