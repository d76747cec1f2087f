"""One representative-data source for every int8 path (TFLite, ONNX Runtime and, via Q/DQ ONNX, TensorRT)."""

from .dataset import DEFAULT_COUNT, CalibrationSet

__all__ = ["DEFAULT_COUNT", "CalibrationSet"]
