"""The one implementation of image decoding, resizing, channel order and input casting.

Scaling (``/255``, caffe means) lives inside the model, so the host side only produces RGB
``uint8`` pixels of the model's size and casts or quantizes them to the input tensor's dtype.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DataError, InvalidArgumentError
from .metadata import Quantization

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
COLOR_ORDERS = ("rgb", "bgr")
RESAMPLE = Image.Resampling.BILINEAR


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


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file to an RGB ``uint8`` HWC array (gray, palette, RGBA and 16-bit converted)."""
    try:
        with Image.open(path) as image:
            image.load()
            return _pil_to_rgb(image)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such image file") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from exc


def to_rgb_uint8(image: np.ndarray | Image.Image, color: str = "rgb") -> np.ndarray:
    """Any HW, HWC (1, 3 or 4 channels) array or PIL image to RGB ``uint8`` HWC."""
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image)
    if color not in COLOR_ORDERS:
        raise InvalidArgumentError(f"color must be one of {', '.join(COLOR_ORDERS)}, not {color!r}")
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise DataError(f"an image must be HxW or HxWxC with 1, 3 or 4 channels, got shape {array.shape}")
    if array.dtype != np.uint8:
        if array.dtype in (np.uint16, np.uint32, np.int32):
            array = _wide_to_uint8(array)
        elif np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer):
            array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
        else:
            raise DataError(f"unsupported image dtype {array.dtype}")
    if array.shape[-1] == 1:
        return np.repeat(array, 3, axis=-1)
    array = array[..., :3]
    return array[..., ::-1] if color == "bgr" else array


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an RGB ``uint8`` HWC array to ``(height, width)``; a no-op when already there."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), RESAMPLE))


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
        return quantize(batch, spec.quantization, spec.dtype)
    return batch.astype(spec.dtype, copy=False)


def prepare_images(images: list[np.ndarray], spec: InputSpec) -> np.ndarray:
    """RGB ``uint8`` HWC images to one input batch: resized, stacked, cast."""
    if not images:
        raise DataError("no images to run")
    if len(images) == 1:
        batch = resize(images[0], spec.size)[None]
    else:
        batch = np.stack([resize(image, spec.size) for image in images])
    return cast_batch(batch, spec)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
