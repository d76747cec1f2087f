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
    from resnet_edge.predictor import top_k_indices

    scores = np.random.default_rng(seed).random((3, 10)).astype(np.float32)
    expected = np.argsort(-scores, axis=1, kind="stable")[:, : min(k, 10)]
    np.testing.assert_array_equal(top_k_indices(scores, min(k, 10)), expected)


# Resize: quality against Pillow's antialiased bilinear, and the three policies ---------------------------------

def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _pillow_bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize(size[::-1], Image.Resampling.BILINEAR))


def _camera_frame(height: int = 1080, width: int = 1920) -> np.ndarray:
    """A real photo at camera resolution, with sensor-like noise so it has detail at every scale."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photo = Image.fromarray(load_sample_images().images[0]).resize((width, height), Image.Resampling.LANCZOS)
    noise = np.random.default_rng(0).normal(0, 6, (height, width, 3))
    return np.clip(np.asarray(photo) + noise, 0, 255).astype(np.uint8)


def _zone_plate(height: int = 1080, width: int = 1920) -> np.ndarray:
    """Rings whose frequency rises to Nyquist at the edges: any resize that aliases shows moiré here."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    rings = 127.5 + 127.5 * np.cos(np.pi * ((x - width / 2) ** 2 + (y - height / 2) ** 2) / width)
    return np.repeat(rings.astype(np.uint8)[..., None], 3, axis=-1)


RESIZE_QUALITY = [  # (frame, target, PSNR floor in dB against Pillow's bilinear); measured 40 / 32 / 46
    (_camera_frame, (224, 224), 37.0),
    (_zone_plate, (224, 224), 29.0),
    (lambda: _camera_frame(96, 128), (224, 224), 40.0),  # enlarging
]


@pytest.mark.parametrize(("frame", "size", "floor"), RESIZE_QUALITY)
def test_resize_matches_pillow_antialiased_bilinear(frame, size, floor) -> None:
    from resnet_edge.preprocess import resize

    image = frame()
    assert _psnr(resize(image, size), _pillow_bilinear(image, size)) >= floor


def test_the_quality_bound_catches_an_aliasing_resize() -> None:
    import cv2

    plate = _zone_plate()
    aliased = cv2.resize(plate, (224, 224), interpolation=cv2.INTER_LINEAR)
    assert _psnr(aliased, _pillow_bilinear(plate, (224, 224))) < RESIZE_QUALITY[1][2] - 10


def _banded_frame() -> np.ndarray:
    """16:9 frame: red left band, green centre square, blue right band (each 420 / 1080 / 420 wide)."""
    frame = np.zeros((1080, 1920, 3), np.uint8)
    frame[:, :420, 0] = 255
    frame[:, 420:1500, 1] = 255
    frame[:, 1500:, 2] = 255
    return frame


def test_squash_keeps_the_whole_frame_stretched() -> None:
    from resnet_edge.preprocess import resize

    out = resize(_banded_frame(), (224, 224), "squash")
    assert out[112, 5].tolist() == [255, 0, 0] and out[112, 218].tolist() == [0, 0, 255]
    assert out[112, 112].tolist() == [0, 255, 0]


def test_center_crop_keeps_the_centred_square() -> None:
    from resnet_edge.preprocess import resize

    out = resize(_banded_frame(), (224, 224), "center-crop")
    assert (out == [0, 255, 0]).all()


def test_letterbox_fits_the_frame_and_pads_with_black() -> None:
    from resnet_edge.preprocess import resize

    out = resize(_banded_frame(), (224, 224), "letterbox")
    content = np.flatnonzero(out.any(axis=(1, 2)))
    assert (content[0], content[-1]) == (49, 174)  # 1920x1080 fitted into 224 is 224x126, centred
    assert not out[:49].any() and not out[175:].any()
    assert out[112, 2].tolist() == [255, 0, 0] and out[112, 221].tolist() == [0, 0, 255]


def test_unknown_policy_is_a_clear_error() -> None:
    from resnet_edge.errors import InvalidArgumentError
    from resnet_edge.preprocess import resize

    with pytest.raises(InvalidArgumentError, match="squash, center-crop, letterbox"):
        resize(np.zeros((8, 16, 3), np.uint8), (4, 4), "stretch")


@pytest.mark.parametrize("policy", ["squash", "center-crop", "letterbox"])
def test_bgr_and_views_give_the_same_pixels_as_rgb(policy) -> None:
    from resnet_edge.preprocess import fit_image

    rgb = _camera_frame(270, 480)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    expected = fit_image(rgb, (64, 64), policy)
    np.testing.assert_array_equal(fit_image(bgr, (64, 64), policy, color="bgr"), expected)
    np.testing.assert_array_equal(fit_image(rgb[..., ::-1], (64, 64), policy, color="bgr"), expected)
    np.testing.assert_array_equal(fit_image(rgb[::1, ::1], (64, 64), policy), expected)
    gray = fit_image(rgb[..., 1], (64, 64), policy)
    assert gray.shape == (64, 64, 3) and (gray[..., 0] == gray[..., 2]).all()


# JPEG decoding at reduced scale -------------------------------------------------------------------------------

def _decoded_sizes(monkeypatch) -> list[tuple[int, int]]:
    from PIL import JpegImagePlugin

    sizes: list[tuple[int, int]] = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = original(self, mode, size)
        sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    return sizes


@pytest.mark.parametrize(("policy", "expected"), [("squash", (500, 375)), ("center-crop", (500, 375)),
                                                   ("letterbox", (500, 375))])
def test_large_jpegs_decode_at_reduced_scale(tmp_path, monkeypatch, policy, expected) -> None:
    from PIL import Image

    from resnet_edge.preprocess import fit_image, load_image

    path = tmp_path / "photo.jpg"
    Image.fromarray(_camera_frame(3000, 4000)).save(path, quality=90)
    sizes = _decoded_sizes(monkeypatch)
    reduced = load_image(path, (224, 224), policy)
    assert sizes == [expected] and reduced.shape == (224, 224, 3)
    full = fit_image(load_image(path), (224, 224), policy)
    assert _psnr(reduced, full) >= 34.0


def test_reduced_decoding_keeps_at_least_one_pixel_per_model_pixel(tmp_path, monkeypatch) -> None:
    from PIL import Image

    from resnet_edge.preprocess import load_image

    path = tmp_path / "wide.jpg"
    Image.fromarray(_camera_frame(600, 2400)).save(path)
    sizes = _decoded_sizes(monkeypatch)
    load_image(path, (224, 224), "letterbox")  # fits the long side: 2400 -> 224 allows 1/8
    load_image(path, (224, 224), "center-crop")  # crops the short side: 600 -> 224 allows only 1/2
    assert sizes == [(300, 75), (1200, 300)]


def test_exif_rotated_jpegs_decode_upright_at_reduced_scale(tmp_path) -> None:
    from PIL import Image

    from resnet_edge.preprocess import load_image

    image = Image.fromarray(_camera_frame(1200, 1600))
    exif = image.getexif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    assert load_image(path).shape == (1600, 1200, 3)
    assert load_image(path, (400, 300), "center-crop").shape == (400, 300, 3)


# Absurd and hostile images: one-line DataErrors, nothing allocated from what a header claims ----------------------

def _nan_frame() -> np.ndarray:
    frame = np.full((8, 8, 3), 100.0, np.float32)
    frame[3, 3, 1] = np.nan
    return frame


@pytest.mark.parametrize(("frame", "message"), [
    (_nan_frame(), "NaN or infinite pixel values"),
    (np.full((8, 8, 3), np.inf, np.float64), "NaN or infinite pixel values"),
    (np.zeros((0, 0, 3), np.uint8), "image has no pixels"),
    (np.zeros((0, 5), np.uint8), "image has no pixels"),
    (np.broadcast_to(np.uint8(0), (12_000, 12_000, 3)), "image too large: 12000x12000 pixels"),  # a view: no memory
    (np.array([[{"a": 1}]], dtype=object), "unsupported image dtype object"),
    (np.zeros((8, 8, 3), bool), "unsupported image dtype bool"),
    (np.zeros((8, 8, 3), np.complex64), "unsupported image dtype complex64"),
    (np.full((8, 8), "x"), "unsupported image dtype <U1"),
    (np.zeros((8, 8, 7), np.uint8), "1, 3 or 4 channels"),
    (np.zeros(5, np.uint8), "1, 3 or 4 channels"),
])
def test_hostile_frames_are_one_line_data_errors(frame: np.ndarray, message: str) -> None:
    from resnet_edge.preprocess import fit_image

    with pytest.raises(DataError, match=message) as info:
        fit_image(frame, (32, 32))
    assert "\n" not in str(info.value)


def test_extreme_but_real_frames_still_fit() -> None:
    from resnet_edge.preprocess import fit_image

    for shape in [(1, 1), (1, 5000, 3), (5000, 1, 3)]:
        for policy in ("squash", "center-crop", "letterbox"):
            assert fit_image(np.full(shape, 9, np.uint8), (32, 32), policy).shape == (32, 32, 3)
    assert fit_image(np.full((4, 4, 3), 1e30, np.float32), (8, 8)).max() == 255  # finite out-of-range: clipped


def _png_claiming(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 99)) + chunk(b"IEND", b"")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's, over 89 MP: ours refuses
@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p.write_bytes(_png_claiming(40_000, 40_000)), r"image too large: 1600000000 pixels \(limit 134217728\)"),
    (lambda p: p.write_bytes(_png_claiming(12_000, 12_000)), r"image too large: 12000x12000 pixels"),  # below Pillow's
    (lambda p: p.write_bytes(b""), "empty file, not an image"),
    (lambda p: p.write_text("hello, not a jpeg\n"), "cannot decode image"),
    (lambda p: p.mkdir(), "a folder, not an image file"),
    (lambda p: None, "no such image file"),
])
def test_hostile_image_files_are_one_line_data_errors(tmp_path, make, message: str) -> None:
    from resnet_edge.preprocess import load_image

    path = tmp_path / "x.jpg"
    make(path)
    with pytest.raises(DataError, match=message) as info:
        load_image(path, (32, 32))
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_a_one_pixel_png_is_an_image(tmp_path) -> None:
    from PIL import Image

    from resnet_edge.preprocess import load_image

    Image.new("RGB", (1, 1), (200, 10, 10)).save(tmp_path / "one.png")
    assert load_image(tmp_path / "one.png", (32, 32)).tolist()[5][5] == [200, 10, 10]


def test_absurd_resize_targets_and_nan_batches_are_refused() -> None:
    from resnet_edge.errors import InvalidArgumentError
    from resnet_edge.preprocess import resize

    for size in [(0, 0), (32, 0), (100_000, 100_000)]:
        with pytest.raises(InvalidArgumentError, match="each side must be from 1 to 16384"):
            resize(np.zeros((8, 8, 3), np.uint8), size)
    spec = InputSpec(8, 8, 3, "int8", Quantization(1.0, -128))
    with pytest.raises(DataError, match="NaN or infinite values"):
        cast_batch(np.full((1, 8, 8, 3), np.nan, np.float32), spec)
