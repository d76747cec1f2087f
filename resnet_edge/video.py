"""Classify a video file or camera stream frame by frame with any Predictor.

OpenCV is imported only when a source is opened (``pip install 'resnet-edge[video]'``). Frames stay
BGR as OpenCV decodes them; the Predictor resizes and reorders channels from its own metadata.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._lazy import lazy_import
from ._quiet import quiet
from .errors import DataError, InvalidArgumentError

if TYPE_CHECKING:
    from .runtime.base import Prediction, Predictor

FPS_SMOOTHING = 0.1


@dataclass(frozen=True)
class FrameResult:
    """One classified frame: its index in the stream, top-k prediction, smoothed FPS and model latency."""

    index: int
    prediction: Prediction
    fps: float
    latency_ms: float


@dataclass
class VideoSummary:
    """What a run over a stream did; ``interrupted`` is True when Ctrl-C (KeyboardInterrupt) ended it."""

    frames: int = 0
    seconds: float = 0.0
    mean_fps: float = 0.0
    interrupted: bool = False
    label_counts: dict[str, int] = field(default_factory=dict)


class VideoSource:
    """An opened ``cv2.VideoCapture`` yielding BGR ``uint8`` HWC frames; close it (or use ``with``)."""

    def __init__(self, capture: Any, name: str, first_frame: np.ndarray) -> None:
        self._capture = capture
        self._pending: np.ndarray | None = first_frame
        self.name = name

    @property
    def fps(self) -> float:
        """Frame rate the container or camera reports (0.0 when unknown)."""
        if self._capture is None:
            return 0.0
        return float(self._capture.get(lazy_import("cv2", extra="video").CAP_PROP_FPS))

    @property
    def frame_count(self) -> int | None:
        """Frames the container reports, or None for cameras and streams that do not say."""
        if self._capture is None:
            return None
        count = int(self._capture.get(lazy_import("cv2", extra="video").CAP_PROP_FRAME_COUNT))
        return count if count > 0 else None

    def read(self) -> np.ndarray | None:
        """The next BGR frame, or None at the end of the stream."""
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        if self._capture is None:
            return None
        ok, frame = self._capture.read()
        return frame if ok and frame is not None else None

    def __iter__(self) -> Iterator[np.ndarray]:
        while (frame := self.read()) is not None:
            yield frame

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
        self._pending = None

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"VideoSource({self.name!r})"


def open_source(source: str | int | os.PathLike[str]) -> VideoSource:
    """Open a video file, or a camera by index (``0`` or ``"0"``), and check a first frame can be read."""
    cv2 = lazy_import("cv2", extra="video")
    name = str(source)
    if isinstance(source, int) or name.isdigit():
        target: str | int = int(name)
    else:
        if not Path(name).is_file():
            raise DataError(f"cannot open video source {name}: no such file")
        target = name
    with quiet():
        capture = cv2.VideoCapture(target)
        ok = capture.isOpened()
        frame = capture.read()[1] if ok else None
    if not ok or frame is None:
        capture.release()
        reason = "no frame could be read" if ok else "OpenCV cannot open it"
        raise DataError(f"cannot open video source {name}: {reason}")
    return VideoSource(capture, name, frame)


def run_video(
    predictor: Predictor,
    source: str | int | os.PathLike[str] | VideoSource,
    top_k: int = 1,
    max_frames: int | None = None,
    on_frame: Callable[[FrameResult], None] | None = None,
) -> VideoSummary:
    """Classify every frame until the stream ends, ``max_frames`` is reached or Ctrl-C is pressed.

    ``on_frame`` sees each result as it is made (to print, draw or stop: raising KeyboardInterrupt
    there ends the run cleanly). The source is released when the run ends, also one passed in opened.
    ``FrameResult.fps`` is a moving average of frame-to-frame time that drops the first (warm-up)
    frame once a second arrives, averages the next ten and then weighs recent frames by 0.1.
    """
    if max_frames is not None and max_frames < 0:
        raise InvalidArgumentError("max frames must be zero or more")
    video = source if isinstance(source, VideoSource) else open_source(source)
    summary = VideoSummary()
    counts: Counter[str] = Counter()
    frame_time: float | None = None
    start = last = time.perf_counter()
    try:
        while max_frames is None or summary.frames < max_frames:
            frame = video.read()
            if frame is None:
                break
            began = time.perf_counter()
            prediction = predictor.predict(frame, top_k=top_k, batch_size=1, color="bgr", strict=True).predictions[0]
            now = time.perf_counter()
            elapsed, last = now - last, now
            summary.frames += 1
            weight = 1.0 if summary.frames <= 2 else max(FPS_SMOOTHING, 1.0 / (summary.frames - 1))
            frame_time = elapsed if frame_time is None else (1 - weight) * frame_time + weight * elapsed
            counts[prediction.labels[0]] += 1
            if on_frame is not None:
                on_frame(FrameResult(summary.frames - 1, prediction, 1.0 / max(frame_time, 1e-9),
                                     (now - began) * 1000.0))
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        video.close()
        summary.seconds = time.perf_counter() - start
        summary.mean_fps = summary.frames / summary.seconds if summary.seconds > 0 and summary.frames else 0.0
        summary.label_counts = dict(counts.most_common())
    return summary


__all__ = ["FrameResult", "VideoSource", "VideoSummary", "open_source", "run_video"]
