"""The parity rules on outputs a user would recognise: a collapsed softmax, low-margin logits, a wrong model."""

from __future__ import annotations

import numpy as np
import pytest

from resnet_edge.parity import TOLERANCES, compare_outputs
from resnet_edge.predictor import to_probabilities

CLASSES = 1000


def _logits(spread: float, images: int = 400, seed: int = 0) -> np.ndarray:
    """A shared class pattern with near-tied top classes plus a per-image part: small spread is a random-init net."""
    rng = np.random.default_rng(seed)
    pattern = rng.uniform(-0.5, 0.5, CLASSES)
    return (pattern + spread * rng.normal(0.0, 1.0, (images, CLASSES))).astype(np.float32)


def _int8_noise(logits: np.ndarray, seed: int = 1) -> np.ndarray:
    """What an int8 graph does to logits: rounding to 1/255 of their range plus a little accumulated error."""
    step = float(np.ptp(logits)) / 255
    noise = np.random.default_rng(seed).normal(0.0, step, logits.shape)
    return (np.round(logits / step) * step + noise).astype(np.float32)


def test_a_quantized_softmax_that_erased_every_probability_fails() -> None:
    probabilities = to_probabilities(_logits(0.05), "linear")
    assert probabilities.max() < 1 / 512  # every class below one int8 step of 1/256, rounded to zero
    report = compare_outputs([probabilities], [np.zeros_like(probabilities)], "int8")
    assert not report and report.cosine == 0.0


@pytest.mark.parametrize("spread", [1.0, 0.01])
def test_int8_logits_pass_on_confident_and_on_low_margin_models(spread) -> None:
    """Low spread: top-1 of a random-init net flips on images whose best two classes are within the noise."""
    reference = _logits(spread)
    report = compare_outputs([reference], [_int8_noise(reference)], "int8", logits=True)
    assert report, report.line()
    assert report.compared == "logits" and report.cosine > TOLERANCES["int8"].min_logit_cosine
    assert report.decisive_top1 >= 0.99
    if spread < 0.1:
        assert report.top1_agreement < 0.99 and report.decisive < report.samples


def test_top1_flips_on_decisive_images_fail() -> None:
    reference = _logits(1.0)
    candidate = _int8_noise(reference)
    order = np.argsort(-reference, axis=1)
    flipped = np.arange(0, 40)  # 10 % of the images get their second class on top
    candidate[flipped, order[flipped, 1]] = reference[flipped, order[flipped, 0]] + 1.0
    report = compare_outputs([reference], [candidate], "int8", logits=True)
    assert not report and any("top-1 agreement" in failure for failure in report.failures)


def test_a_wrong_model_fails_top1_as_well_as_cosine() -> None:
    """The decisive margin belongs to the precision, so a badly wrong artifact cannot make its images indecisive."""
    reference, impostor = _logits(1.0, seed=0), _logits(1.0, seed=7)
    report = compare_outputs([reference], [impostor], "int8", logits=True)
    assert report.decisive > 0.5 * report.samples
    assert any("top-1" in failure for failure in report.failures) and any("cosine" in f for f in report.failures)


def test_a_constant_shift_of_the_logits_changes_nothing_a_softmax_sees() -> None:
    reference = _logits(1.0)
    report = compare_outputs([reference], [reference + 3.0], "int8", logits=True)
    assert report and report.cosine == pytest.approx(1.0) and report.top1_agreement == 1.0


def test_report_line_names_calibration_images_and_decisive_share() -> None:
    reference = _logits(0.01)
    report = compare_outputs([reference], [_int8_noise(reference)], "int8", logits=True, calibration_images=300)
    line = report.line()
    assert "calib 300" in line and "decisive" in line and "cos (logits)" in line
    assert report.to_dict()["calibration_images"] == 300


# Non-finite numbers, saved references, stand-in images -----------------------------------------------------------

def _trained_probabilities(images: int = 200, seed: int = 3) -> np.ndarray:
    return to_probabilities(_logits(2.0, images, seed), "linear")


@pytest.mark.parametrize("side", ["reference", "candidate"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_non_finite_output_fails_with_its_own_reason(side, value) -> None:
    """NaN compares false with every bound: without its own check a NaN table said 'pass'."""
    reference = _trained_probabilities()
    candidate = reference.copy()
    (reference if side == "reference" else candidate)[3, 7] = value
    for precision in TOLERANCES:
        report = compare_outputs([reference], [candidate], precision)
        assert not report.passed
        reason = "the reference's outputs are not finite" if side == "reference" else "non-finite outputs"
        assert any(reason in failure and "1 of 200 images" in failure for failure in report.failures), report.failures


def test_every_output_nan_fails_and_says_so() -> None:
    reference = _trained_probabilities()
    report = compare_outputs([reference], [np.full_like(reference, np.nan)], "fp32")
    assert not report.passed and "non-finite outputs (NaN or inf) on 200 of 200 images" in report.line()


def test_logits_that_do_not_vary_fail_with_the_reason() -> None:
    """An untrained network whose logits are all ~0 leaves nothing to compare: say so rather than 'cos 0 < 0.99'."""
    flat = np.random.default_rng(0).normal(0, 1e-12, (50, 4)).astype(np.float32)
    report = compare_outputs([flat], [flat * 0.5], "int8", logits=True)
    assert not report.passed and "logits do not vary" in report.line()


def test_stand_in_images_report_no_class_agreement(tmp_path) -> None:
    """Digits standing in for a photo model's images: errors and cosine gate, top-1 'agreement' is not reported."""
    from resnet_edge.data import Dataset
    from resnet_edge.parity import Candidate, reduce_candidate, row_stats

    reference = _trained_probabilities(images=60)[:, :4]
    stats = row_stats([reference], [reference])
    info = Candidate("m.onnx", str(tmp_path / "m.onnx"), "fp32", ("cat", "dog", "car", "sky"), None, None)
    images = np.zeros((60, 8, 8, 3), np.uint8)
    labels = np.zeros(60, np.int64)
    digits = Dataset(images, labels, tuple("0123456789"), "digits", note="built-in: no images given", stand_in=True)
    report = reduce_candidate(stats, info, digits)
    assert report.passed and report.top1_agreement is None and report.candidate_accuracy is None
    assert report.stand_in and "60 images of digits (built-in: no images given)" in report.line()
    assert report.to_dict()["data"] == report.data and report.to_dict()["stand_in"] is True
    own = reduce_candidate(stats, info, Dataset(images, labels, ("cat", "dog", "car", "sky"), "val/"))
    assert own.top1_agreement == 1.0 and own.candidate_accuracy is not None and "60 images of val/" in own.line()


def _saved(tmp_path, **arrays) -> str:
    path = tmp_path / "ref.npz"
    np.savez(path, **arrays)
    return str(path)


GOOD_IMAGES = np.zeros((4, 8, 8, 3), np.uint8)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"weights": np.zeros(3)}, "no outputs or images"),
        ({"output_0": np.zeros((4, 2)), "images": np.zeros((4, 8, 8))}, "not RGB uint8 NHWC"),
        ({"output_0": np.zeros((4, 2)), "images": GOOD_IMAGES.astype(np.float32)}, "not RGB uint8 NHWC"),
        ({"output_0": np.zeros((3, 2)), "images": GOOD_IMAGES}, "cover 3 images, the data has 4"),
        ({"output_0": np.zeros(4), "images": GOOD_IMAGES}, "not a batch of numbers"),
        ({"output_0": np.full((4, 2), np.nan), "images": GOOD_IMAGES}, "NaN or inf"),
        ({"output_1": np.zeros((4, 2)), "images": GOOD_IMAGES}, "not numbered 0, 1"),
        ({"output_0": np.zeros((4, 2)), "images": GOOD_IMAGES, "labels": np.zeros(3)}, "labels do not match"),
        ({"output_0": np.zeros((4, 2)), "images": GOOD_IMAGES, "info": np.array("[1, 2]")}, "not a JSON object"),
        ({"output_0": np.zeros((4, 2)), "images": GOOD_IMAGES, "info": np.array(3)}, "not a JSON text"),
        ({"output_0": np.zeros((4, 2)), "images": GOOD_IMAGES, "info": np.array('{"class_names": [1]}')},
         "class names are not a list of strings"),
        ({"output_0": np.zeros((4, 2)), "images": GOOD_IMAGES, "info": np.array("{")}, "cannot read"),
    ],
)
def test_a_foreign_or_broken_saved_reference_is_one_data_error(tmp_path, arrays, message) -> None:
    from resnet_edge.errors import DataError
    from resnet_edge.parity import load_reference

    with pytest.raises(DataError, match=message) as caught:
        load_reference(_saved(tmp_path, **arrays))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04 truncated"])
def test_a_file_that_is_no_npz_is_one_data_error(tmp_path, content) -> None:
    from resnet_edge.errors import DataError
    from resnet_edge.parity import load_reference

    path = tmp_path / "ref.npz"
    path.write_bytes(content)
    with pytest.raises(DataError):
        load_reference(path)
    array = tmp_path / "array.npy"
    np.save(array, np.zeros((2, 2)))
    with pytest.raises(DataError, match=r"plain \.npy array"):
        load_reference(array)


def test_a_saved_reference_round_trips(tmp_path) -> None:
    from resnet_edge.data import Dataset
    from resnet_edge.parity import load_reference, save_reference

    data = Dataset(GOOD_IMAGES, np.arange(4), ("a", "b", "c", "d"), "val/")
    outputs = [np.eye(4, dtype=np.float32)]
    save_reference(tmp_path / "ref.npz", outputs, data)
    loaded, back = load_reference(tmp_path / "ref.npz")
    assert np.array_equal(loaded[0], outputs[0]) and back.class_names == data.class_names and back.source == "val/"
    with pytest.raises(Exception, match="NaN or inf"):
        save_reference(tmp_path / "bad.npz", [np.full((4, 4), np.nan, np.float32)], data)
    assert not (tmp_path / "bad.npz").exists()
