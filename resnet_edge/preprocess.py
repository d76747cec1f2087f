"""The one implementation of image decoding, resizing, channel order and input casting.

Scaling (``/255``, caffe means) lives inside the model, so the host side only produces RGB
``uint8`` pixels of the model's size and casts or quantizes them to the input tensor's dtype.
Training, calibration, parity and the Predictor all fit images with :func:`fit_image`, so the
accuracy measured at export is the accuracy at run time.
"""

from __future__ import annotations

import io
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ._lazy import lazy_import
from .errors import DataError, InvalidArgumentError, first_line
from .metadata import MAX_SIDE, Quantization, check_policy

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
COLOR_ORDERS = ("rgb", "bgr")
LETTERBOX_FILL = 0
AREA_FROM = 1.5  # below this shrink ratio bilinear already reads every source pixel, and costs far less
EXIF_ORIENTATION = 0x0112
# Pixels an image or frame may have: a 108 MP phone photo passes; a few bytes of PNG declaring 40000x40000
# (a 4.8 GB decode) or a frame of that size do not. Checked from the header, before anything is decoded.
MAX_IMAGE_PIXELS = 2**27


@dataclass(frozen=True)
class InputSpec:
    """What a runtime's input tensor takes: NHWC size, dtype and (for integer inputs) quantization."""

    height: int
    width: int
    channels: int = 3
    dtype: str = "float32"
    quantization: Quantization | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width


def _wide_to_uint8(array: np.ndarray) -> np.ndarray:
    """16-bit (or wider) pixels to 8 bits: full 0-65535 range when used, else values already 0-255."""
    top = 65535.0 if array.max(initial=0) > 255 else 255.0
    return np.clip(np.rint(array.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    image = ImageOps.exif_transpose(image) or image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = Image.fromarray(_wide_to_uint8(np.asarray(image)))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def shrink_factor(source: tuple[int, int], size: tuple[int, int], policy: str) -> float:
    """How many source pixels become one model pixel under ``policy`` (a letterbox fits the longer side)."""
    ratio_h, ratio_w = source[0] / size[0], source[1] / size[1]
    return max(ratio_h, ratio_w) if policy == "letterbox" else min(ratio_h, ratio_w)


def _decode_request(image: Image.Image, size: tuple[int, int], policy: str) -> tuple[int, int]:
    """The smallest (width, height) a JPEG may be decoded at that still keeps every model pixel."""
    width, height = image.size
    transposed = image.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
    shown = (width, height) if transposed else (height, width)
    factor = max(1.0, shrink_factor(shown, size, policy))
    return max(1, math.ceil(width / factor)), max(1, math.ceil(height / factor))


def _decode(
    source: str | os.PathLike[str] | io.BytesIO, name: str, size: tuple[int, int] | None, policy: str,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Decode a path or file object: the one code path of :func:`load_image` and :func:`decode_image`."""
    try:
        with Image.open(source) as image:
            width, height = image.size
            if width < 1 or height < 1:
                raise DataError(f"{name}: image has no pixels ({width}x{height})")
            if max_pixels is not None and width * height > max_pixels:
                raise DataError(f"{name}: image too large: {width}x{height} pixels (limit {max_pixels})")
            if size is not None and image.format == "JPEG":
                image.draft(None, _decode_request(image, size, check_policy(policy)))
            image.load()
            rgb = _pil_to_rgb(image)
    except FileNotFoundError as exc:
        raise DataError(f"{name}: no such image file") from exc
    except Image.DecompressionBombError as exc:
        if max_pixels is None:
            raise DataError(f"{name}: cannot decode image ({type(exc).__name__}: {exc})") from exc
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        raise DataError(f"{name}: image too large: {claimed.group(1) if claimed else 'too many'} pixels "
                        f"(limit {max_pixels})") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, MemoryError) as exc:
        reason = str(exc).replace(f" {source!r}", "") if isinstance(source, io.BytesIO) else exc
        raise DataError(f"{name}: cannot decode image ({type(exc).__name__}: {first_line(reason, 200)})") from exc
    return rgb if size is None else fit_image(rgb, size, policy)


def load_image(
    path: str | os.PathLike[str], size: tuple[int, int] | None = None, policy: str = "squash",
    max_pixels: int | None = MAX_IMAGE_PIXELS,
) -> np.ndarray:
    """Decode an image file to RGB ``uint8`` HWC (gray, palette, RGBA and 16-bit converted).

    With ``size``, the image is fitted to it under ``policy``, and a JPEG is decoded at the reduced
    scale (DCT scaling, 1/2 to 1/8) that still has at least one source pixel per model pixel.
    ``max_pixels`` refuses, from the header and before decoding, a file claiming more pixels (a
    decompression bomb); None leaves only Pillow's own limit. A folder or an empty file is a DataError too.
    """
    name = str(path)
    if os.path.isdir(path):
        raise DataError(f"{name}: a folder, not an image file")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise DataError(f"{name}: empty file, not an image")
    return _decode(path, name, size, policy, max_pixels)


def decode_image(
    data: bytes, size: tuple[int, int] | None = None, policy: str = "squash", name: str = "image",
    max_pixels: int | None = None,
) -> np.ndarray:
    """Encoded image bytes (an upload, a message) to RGB ``uint8`` HWC, exactly as :func:`load_image` decodes a file.

    ``max_pixels`` refuses an image whose header claims more pixels before any is decoded: a few
    bytes of PNG can declare 30000x30000, so untrusted input needs a bound.
    """
    if not data:
        raise DataError(f"{name}: empty image data")
    return _decode(io.BytesIO(data), name, size, policy, max_pixels)


def check_pixels(array: np.ndarray, name: str | None = None) -> np.ndarray:
    """An HW/HWC array that can be an image: integer or finite float pixels, at least 1x1 and at most
    ``MAX_IMAGE_PIXELS``; anything else (object, string, bool or complex arrays, NaN, 0x0) is a one-line DataError."""
    where = f"{name}: " if name else ""
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise DataError(f"{where}an image must be HxW or HxWxC with 1, 3 or 4 channels, got shape {array.shape}")
    height, width = array.shape[:2]
    if height < 1 or width < 1:
        raise DataError(f"{where}image has no pixels (shape {array.shape})")
    if height * width > MAX_IMAGE_PIXELS:
        raise DataError(f"{where}image too large: {width}x{height} pixels (limit {MAX_IMAGE_PIXELS})")
    if array.dtype.kind not in "uif":
        raise DataError(f"{where}unsupported image dtype {array.dtype} (pixels must be integers or floats)")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise DataError(f"{where}image has NaN or infinite pixel values")
    return array


def _as_uint8(image: np.ndarray | Image.Image) -> np.ndarray:
    """Any HW or HWC (1, 3 or 4 channels) array to ``uint8`` HWC, channel order untouched."""
    array = check_pixels(np.asarray(image))
    if array.dtype == np.uint8:
        return array
    if array.dtype in (np.uint16, np.uint32, np.int32):
        return _wide_to_uint8(array)
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def _to_rgb(array: np.ndarray, color: str) -> np.ndarray:
    if array.shape[-1] == 1:
        return np.repeat(array, 3, axis=-1)
    array = array[..., :3]
    return array[..., ::-1] if color == "bgr" else array


def _check_color(color: str) -> None:
    if color not in COLOR_ORDERS:
        raise InvalidArgumentError(f"color must be one of {', '.join(COLOR_ORDERS)}, not {color!r}")


def to_rgb_uint8(image: np.ndarray | Image.Image, color: str = "rgb") -> np.ndarray:
    """Any HW, HWC (1, 3 or 4 channels) array or PIL image to RGB ``uint8`` HWC, at its own size."""
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image)
    _check_color(color)
    return _to_rgb(_as_uint8(image), color)


def _scale(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Antialiased resize of a ``uint8`` HWC array: exact 2x box halvings (SIMD, multi-threaded in OpenCV)
    while both sides are at least twice the target, then per axis a box (area) filter where the rest
    shrinks by ``AREA_FROM`` or more and bilinear where it shrinks less or enlarges."""
    if image.shape[:2] == (height, width):
        return image
    cv2 = lazy_import("cv2", extra="video")
    channels = image.shape[2]
    array = image[..., 0] if channels == 1 else image
    while array.shape[0] >= 2 * height and array.shape[1] >= 2 * width:
        array = cv2.resize(array, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    boxed_h, boxed_w = array.shape[0] >= AREA_FROM * height, array.shape[1] >= AREA_FROM * width
    if boxed_h == boxed_w:
        method = cv2.INTER_AREA if boxed_h else cv2.INTER_LINEAR
        array = cv2.resize(array, (width, height), interpolation=method)
    elif boxed_w:  # two 1-D passes: the generic area filter costs as much as everything before it
        array = cv2.resize(array, (width, array.shape[0]), interpolation=cv2.INTER_AREA)
        array = cv2.resize(array, (width, height), interpolation=cv2.INTER_LINEAR)
    else:
        array = cv2.resize(array, (array.shape[1], height), interpolation=cv2.INTER_AREA)
        array = cv2.resize(array, (width, height), interpolation=cv2.INTER_LINEAR)
    return array[..., None] if array.ndim == 2 else array


def resize(image: np.ndarray, size: tuple[int, int], policy: str = "squash") -> np.ndarray:
    """A ``uint8`` HWC array to ``(height, width)`` under a resize policy; a no-op when already there.

    ``squash`` stretches the whole frame; ``center-crop`` keeps the largest centred region of the
    target's aspect ratio; ``letterbox`` fits the whole frame and pads the rest with black.
    """
    height, width = size
    source_h, source_w = image.shape[:2]
    if (source_h, source_w) == (height, width):
        return image
    if min(height, width) < 1 or max(height, width) > MAX_SIDE:
        raise InvalidArgumentError(f"cannot resize to {height}x{width}: each side must be from 1 to {MAX_SIDE}")
    if min(source_h, source_w) < 1:
        raise DataError(f"image has no pixels (shape {image.shape})")
    check_policy(policy)
    if policy == "center-crop":
        crop_h = min(source_h, max(1, round(source_w * height / width)))
        crop_w = min(source_w, max(1, round(source_h * width / height)))
        crop_h -= (source_h - crop_h) % 2 if crop_h > 1 else 0  # an even margin keeps the centre exact,
        crop_w -= (source_w - crop_w) % 2 if crop_w > 1 else 0  # also on a frame decoded at reduced scale
        top, left = (source_h - crop_h) // 2, (source_w - crop_w) // 2
        return _scale(image[top : top + crop_h, left : left + crop_w], height, width)
    if policy == "letterbox":
        factor = shrink_factor((source_h, source_w), size, policy)
        fit_h = min(height, max(1, round(source_h / factor)))
        fit_w = min(width, max(1, round(source_w / factor)))
        canvas = np.full((height, width, image.shape[2]), LETTERBOX_FILL, np.uint8)
        top, left = (height - fit_h) // 2, (width - fit_w) // 2
        canvas[top : top + fit_h, left : left + fit_w] = _scale(image, fit_h, fit_w)
        return canvas
    return _scale(image, height, width)


def fit_image(
    image: np.ndarray | Image.Image, size: tuple[int, int], policy: str = "squash", color: str = "rgb",
) -> np.ndarray:
    """Any image (array of any dtype, RGB or BGR, or PIL) to the model's RGB ``uint8`` pixels.

    Channels are reordered after the resize, so a 1080p BGR camera frame is never copied at full size.
    """
    if isinstance(image, Image.Image):
        return resize(_pil_to_rgb(image), size, policy)
    _check_color(color)
    return _to_rgb(resize(_as_uint8(image), size, policy), color)


def quantize(values: np.ndarray, quantization: Quantization, dtype: str) -> np.ndarray:
    """Real values to integer codes of ``dtype``; integer arithmetic only when scale is 1."""
    info = np.iinfo(dtype)
    if quantization.scale == 1.0 and values.dtype == np.uint8:
        if quantization.zero_point == -128 and dtype == "int8":
            return (values ^ np.uint8(0x80)).view(np.int8)  # p - 128 in one pass: the common camera case
        shifted = values.astype(np.int16) + np.int16(quantization.zero_point)
        return np.clip(shifted, info.min, info.max).astype(dtype)
    if quantization.scale == 1.0 and np.issubdtype(values.dtype, np.integer):
        shifted = values.astype(np.int64) + quantization.zero_point
        return np.clip(shifted, info.min, info.max).astype(dtype)
    codes = np.rint(values / np.float32(quantization.scale)) + quantization.zero_point
    return np.clip(codes, info.min, info.max).astype(dtype)


def dequantize(codes: np.ndarray, quantization: Quantization | None) -> np.ndarray:
    if quantization is None:
        return codes.astype(np.float32, copy=False)
    return (codes.astype(np.float32) - np.float32(quantization.zero_point)) * np.float32(quantization.scale)


def cast_batch(batch: np.ndarray, spec: InputSpec) -> np.ndarray:
    """An NHWC batch of pixels 0-255 to the input tensor's dtype (float cast or quantization)."""
    if spec.dtype in ("int8", "uint8"):
        if spec.quantization is None:
            raise InvalidArgumentError("integer model input without quantization parameters")
        if batch.dtype.kind == "f" and not np.isfinite(batch).all():
            raise DataError("the input batch has NaN or infinite values: they have no integer code")
        return quantize(batch, spec.quantization, spec.dtype)
    return batch.astype(spec.dtype, copy=False)


def prepare_images(
    images: list[np.ndarray], spec: InputSpec, policy: str = "squash", color: str = "rgb",
) -> np.ndarray:
    """Images (any size, dtype, RGB or BGR) to one input batch: fitted, stacked, cast."""
    if not images:
        raise DataError("no images to run")
    return cast_batch(np.stack([fit_image(image, spec.size, policy, color) for image in images]), spec)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
