"""The parity rules on outputs a user would recognise: a collapsed softmax, low-margin logits, a wrong model."""

from __future__ import annotations

import numpy as np
import pytest

from resnet_edge.parity import TOLERANCES, compare_outputs
from resnet_edge.runtime.base import to_probabilities

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
