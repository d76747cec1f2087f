"""The one preprocessing path: color order, channels, resize, casting and quantization."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from resnet_edge.errors import DataError
from resnet_edge.metadata import Quantization
from resnet_edge.preprocess import InputSpec, cast_batch, dequantize, prepare_images, quantize, to_rgb_uint8


def test_bgr_frames_are_reordered() -> None:
    frame = np.zeros((4, 4, 3), np.uint8)
    frame[..., 0] = 200  # blue in OpenCV's order
    assert to_rgb_uint8(frame, "bgr")[0, 0].tolist() == [0, 0, 200]


@pytest.mark.parametrize("shape", [(5, 6), (5, 6, 1), (5, 6, 4)])
def test_channel_counts_are_converted(shape) -> None:
    assert to_rgb_uint8(np.full(shape, 7, np.uint8)).shape == (5, 6, 3)


def test_wrong_image_shape_is_an_error() -> None:
    with pytest.raises(DataError):
        to_rgb_uint8(np.zeros((4, 4, 2), np.uint8))


@given(st.integers(-128, 127))
def test_integer_quantization_equals_float_path(zero_point: int) -> None:
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    q = Quantization(1.0, zero_point)
    integer = quantize(pixels, q, "int8")
    floating = np.clip(np.rint(pixels.astype(np.float32) / 1.0) + zero_point, -128, 127).astype(np.int8)
    np.testing.assert_array_equal(integer, floating)


def test_quantize_dequantize_round_trip() -> None:
    q = Quantization(0.5, 3)
    values = np.array([0.0, 1.0, 10.0], np.float32)
    np.testing.assert_allclose(dequantize(quantize(values, q, "int8"), q), values)


def test_prepare_images_resizes_and_casts() -> None:
    images = [np.full((10, 20, 3), 255, np.uint8), np.zeros((32, 32, 3), np.uint8)]
    batch = prepare_images(images, InputSpec(32, 32, 3, "float32"))
    assert batch.shape == (2, 32, 32, 3) and batch.dtype == np.float32 and batch[0].min() == 255.0
    quantized = cast_batch(np.full((1, 2, 2, 3), 255, np.uint8), InputSpec(2, 2, 3, "int8", Quantization(1.0, -128)))
    assert quantized.dtype == np.int8 and quantized.max() == 127


@given(st.integers(1, 12), st.integers(0, 2**16))
def test_top_k_matches_a_full_sort(k: int, seed: int) -> None:
    from resnet_edge.runtime.base import top_k_indices

    scores = np.random.default_rng(seed).random((3, 10)).astype(np.float32)
    expected = np.argsort(-scores, axis=1, kind="stable")[:, : min(k, 10)]
    np.testing.assert_array_equal(top_k_indices(scores, min(k, 10)), expected)
