"""Classify a video file or camera stream with any Predictor, capture, preprocessing and inference overlapping.

OpenCV is imported only when a source is opened (``pip install 'resnet-edge[video]'``). Frames stay
BGR as OpenCV decodes them; the Predictor resizes and reorders channels from its own metadata.

Three stages run at once (OpenCV decoding and the runtimes release the GIL, so threads suffice): a
capture thread reads and time-stamps frames, a preprocessing thread turns them into input batches and
the calling thread runs the model. A file goes through blocking bounded queues, every frame in order;
a live source (camera, stream URL) goes through one-slot mailboxes that keep only the newest item, so
results never lag behind the camera, and the frames skipped that way are counted as dropped.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._lazy import lazy_import
from ._quiet import quiet
from .cpu import usable_cores
from .errors import DataError, InvalidArgumentError, first_line

if TYPE_CHECKING:
    from .predictor import Prediction, Predictor

FPS_SMOOTHING = 0.1
WARMUP_FRAMES = 5  # results left out of ``steady_fps``: model warm-up and pipeline fill
FILE_QUEUE_SIZE = 3  # frames (and batches) a file may run ahead of the model
JOIN_TIMEOUT_S = 5.0  # how long to wait for a stage to stop; a camera stuck in read() is left behind
_POLL_S = 0.05  # how often blocked stages look at the stop flag
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_NEGATIVE = re.compile(r"^-\d+$")
MAX_CAMERA_INDEX = 2**31 - 1  # OpenCV takes a C int


@dataclass(frozen=True)
class FrameResult:
    """One classified frame: its index in the stream (gaps are dropped frames), top-k prediction,
    smoothed FPS, model latency and capture-to-result latency."""

    index: int
    prediction: Prediction
    fps: float
    latency_ms: float
    capture_latency_ms: float = 0.0


@dataclass
class VideoSummary:
    """What a run over a stream did; ``interrupted`` is True when Ctrl-C (KeyboardInterrupt) ended it.

    ``steady_fps`` leaves out the first ``WARMUP_FRAMES`` results (``mean_fps`` when there are too few);
    ``dropped`` counts frames a live source skipped to stay current; ``latency_p50_ms`` is the median
    capture-to-result time; ``overlapped`` says whether capture and preprocessing ran beside the model.
    """

    frames: int = 0
    seconds: float = 0.0
    mean_fps: float = 0.0
    interrupted: bool = False
    label_counts: dict[str, int] = field(default_factory=dict)
    dropped: int = 0
    steady_fps: float = 0.0
    latency_p50_ms: float = 0.0
    overlapped: bool = False


def is_live(name: str) -> bool:
    """True for a camera index (``"0"``) or a stream URL (rtsp://, http://...), False for a file."""
    return _is_index(name) or (bool(_URL.match(name)) and not name.lower().startswith("file://"))


def _is_index(name: str) -> bool:
    """ASCII digits only: ``"٣".isdigit()`` is True too, and is no camera."""
    return name.isascii() and name.isdigit()


def cameras() -> tuple[int, ...] | None:
    """The camera indices this machine has (``/dev/videoN`` on Linux); None where that cannot be listed."""
    if not sys.platform.startswith("linux"):
        return None
    found = (p.name.removeprefix("video") for p in Path("/dev").glob("video*"))
    return tuple(sorted(int(n) for n in found if _is_index(n)))


def _no_camera(index: int) -> DataError:
    """A one-line error for a camera index that cannot be opened, naming the ones there are."""
    found = cameras()
    if found is not None and index in found:
        return DataError(f"camera {index} cannot be opened (in use by another program, or no permission "
                         f"to read /dev/video{index})")
    listed = "" if found is None else (f" (cameras: {', '.join(map(str, found))})" if found else " (it has none)")
    return DataError(f"no camera {index} on this machine{listed}")


class VideoSource:
    """An opened ``cv2.VideoCapture`` yielding BGR ``uint8`` HWC frames; close it (or use ``with``)."""

    def __init__(self, capture: Any, name: str, first_frame: np.ndarray) -> None:
        self._capture = capture
        self._pending: np.ndarray | None = first_frame
        self.name = name

    @property
    def live(self) -> bool:
        """True for a camera or stream URL (frames come in real time), False for a file."""
        return is_live(self.name)

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
    """Open a video file, a camera by index (``0`` or ``"0"``) or a stream URL, and check a first frame can be read."""
    cv2 = lazy_import("cv2", extra="video")
    name = str(source)
    target: str | int = name
    if isinstance(source, bool) or (not isinstance(source, int) and not _is_index(name)):
        if _NEGATIVE.match(name) and not Path(name).exists():
            raise DataError(f"no camera {name}: camera indices are 0, 1, 2, …")
        if not is_live(name) and not Path(name).is_file():
            what = "a folder, not a video file" if Path(name).is_dir() else "no such file"
            raise DataError(f"cannot open video source {name}: {what}")
    else:
        target = int(name)
        if target < 0:  # OpenCV reads -1 as "any camera" and has crashed on it
            raise DataError(f"no camera {target}: camera indices are 0, 1, 2, …")
        if target > MAX_CAMERA_INDEX:
            raise _no_camera(target)
    try:
        with quiet():
            capture = cv2.VideoCapture(target)
            ok = capture.isOpened()
            frame = capture.read()[1] if ok else None
    except cv2.error as exc:
        raise DataError(f"cannot open video source {name}: {first_line(exc, 200)}") from exc
    if not ok or frame is None:
        capture.release()
        if isinstance(target, int):
            raise _no_camera(target) if not ok else DataError(f"camera {target} gives no frame")
        reason = "no frame could be read" if ok else "OpenCV cannot open it"
        raise DataError(f"cannot open video source {name}: {reason}")
    if frame.size == 0:
        capture.release()
        raise DataError(f"cannot open video source {name}: its frames have no pixels")
    return VideoSource(capture, name, frame)


# pipeline -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Item:
    """A frame (or its input batch) on its way through the stages, with its index and capture time."""

    index: int
    captured: float
    data: np.ndarray


@dataclass(frozen=True)
class _Failure:
    """An exception raised in a stage, carried to the calling thread to be raised there."""

    error: BaseException


_END = object()  # end of stream
_STOPPED = object()  # what get() answers once the run is stopping


class _Channel:
    """Hands items from one stage to the next.

    ``latest=True``: a one-slot mailbox; a put overwrites an unread item (counted in ``dropped``).
    ``latest=False``: a blocking bounded queue; a put waits for room, nothing is lost.
    The end of the stream (or a failure) is queued behind the items, so the last frame is still seen.
    """

    def __init__(self, stop: threading.Event, latest: bool, capacity: int = FILE_QUEUE_SIZE) -> None:
        self._stop, self._latest = stop, latest
        self._capacity = 1 if latest else max(1, capacity)
        self._items: deque[_Item] = deque()
        self._final: object | None = None
        self._ready = threading.Condition()
        self.dropped = 0

    def put(self, item: _Item) -> bool:
        """Pass an item on; False when the run is stopping (the item is then discarded)."""
        with self._ready:
            while not self._latest and len(self._items) >= self._capacity and not self._stop.is_set():
                self._ready.wait(_POLL_S)
            if self._stop.is_set():
                return False
            if len(self._items) >= self._capacity:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._ready.notify_all()
            return True

    def finish(self, final: object) -> None:
        """Queue the end of the stream (``_END``) or a ``_Failure`` behind the items already in."""
        with self._ready:
            if self._final is None:
                self._final = final
            self._ready.notify_all()

    def get(self) -> _Item | object:
        """The next item, else ``_END``/a ``_Failure`` once finished, or ``_STOPPED`` when the run stops."""
        with self._ready:
            while not self._items and self._final is None and not self._stop.is_set():
                self._ready.wait(_POLL_S)
            if self._stop.is_set():
                return _STOPPED
            if self._items:
                item = self._items.popleft()
                self._ready.notify_all()
                return item
            return self._final

    def wake(self) -> None:
        with self._ready:
            self._ready.notify_all()


def _capture(video: VideoSource, out: _Channel, stop: threading.Event) -> None:
    """Read and time-stamp frames until the stream ends or the run stops; closes the source."""
    final: object = _END
    try:
        index = 0
        while not stop.is_set():
            frame = video.read()
            if frame is None:
                break
            if not out.put(_Item(index, time.perf_counter(), frame)):
                break
            index += 1
    except BaseException as exc:  # carried to the calling thread
        final = _Failure(exc)
    finally:
        out.finish(final)
        video.close()


def _preprocess(predictor: Predictor, inbox: _Channel, out: _Channel) -> None:
    """Turn each frame into an input batch of one; passes the end of the stream (or a failure) on."""
    try:
        while (item := inbox.get()) is not _STOPPED:
            if not isinstance(item, _Item):
                out.finish(item)
                return
            if not out.put(_Item(item.index, item.captured, predictor.prepare(item.data, color="bgr"))):
                return
    except BaseException as exc:  # carried to the calling thread
        out.finish(_Failure(exc))


def _prepared_inline(video: VideoSource, predictor: Predictor) -> Iterator[_Item]:
    """The serial path: read, time-stamp and prepare each frame in the calling thread."""
    index = 0
    while (frame := video.read()) is not None:
        captured = time.perf_counter()
        yield _Item(index, captured, predictor.prepare(frame, color="bgr"))
        index += 1


def _prepared_by_stages(batches: _Channel) -> Iterator[_Item]:
    """The pipelined path: input batches from the preprocessing stage; a stage's error is raised here."""
    while True:
        item = batches.get()
        if isinstance(item, _Failure):
            raise item.error
        if not isinstance(item, _Item):
            return
        yield item


def spare_core(predictor: Predictor) -> bool:
    """Whether capture and preprocessing can run beside the model without taking a core from it."""
    if predictor.device != "cpu":
        return True
    threads = predictor.backend.threads
    return threads is not None and threads < usable_cores()


def _steady_fps(times: array, fallback: float) -> float:
    """Results per second from result number WARMUP_FRAMES to the last one."""
    if len(times) < WARMUP_FRAMES + 2 or times[-1] <= times[WARMUP_FRAMES]:
        return fallback
    return (len(times) - 1 - WARMUP_FRAMES) / (times[-1] - times[WARMUP_FRAMES])


def run_video(
    predictor: Predictor,
    source: str | int | os.PathLike[str] | VideoSource,
    top_k: int = 1,
    max_frames: int | None = None,
    on_frame: Callable[[FrameResult], None] | None = None,
    live: bool | None = None,
    overlap: bool | None = None,
) -> VideoSummary:
    """Classify a stream until it ends, ``max_frames`` results are made or Ctrl-C is pressed.

    ``live`` (None: a camera or URL is live, a file is not) drops stale frames so each result is for
    the newest frame ready when the model started; a file never drops a frame and keeps their order.
    ``on_frame`` sees each result as it is made (to print, draw or stop: raising KeyboardInterrupt
    there ends the run cleanly). An error in the capture or preprocessing stage is raised here. The
    source is released when the run ends, also one passed in opened.
    ``overlap`` runs capture and preprocessing in their own threads beside the model. None: always for a
    live source (it must keep reading to drop stale frames), and for a file only when the model leaves a
    core free (a GPU model, or ``threads`` below the usable cores). When the model's threads take every
    core, work beside it preempts them and each layer waits for its slowest thread: on 2 cores a
    ResNet-50 ran 8 % slower overlapped than serial (``benchmarks/camera.py``).
    ``FrameResult.fps`` is a moving average of result-to-result time that drops the first (warm-up)
    result once a second arrives, averages the next ten and then weighs recent results by 0.1.
    """
    if max_frames is not None and max_frames < 0:
        raise InvalidArgumentError("max frames must be zero or more")
    video = source if isinstance(source, VideoSource) else open_source(source)
    latest = video.live if live is None else live
    overlapped = (latest or spare_core(predictor)) if overlap is None else overlap
    stop = threading.Event()
    frames, batches = _Channel(stop, latest), _Channel(stop, latest)
    stages = [
        threading.Thread(target=_capture, args=(video, frames, stop), name="video-capture", daemon=True),
        threading.Thread(target=_preprocess, args=(predictor, frames, batches), name="video-prepare", daemon=True),
    ] if overlapped else []
    summary = VideoSummary()
    counts: Counter[str] = Counter()
    done_at, delays = array("d"), array("d")
    frame_time: float | None = None
    start = last = time.perf_counter()
    try:
        if max_frames == 0:
            return summary
        for stage in stages:
            stage.start()
        prepared = _prepared_by_stages(batches) if overlapped else _prepared_inline(video, predictor)
        for item in prepared:
            began = time.perf_counter()
            prediction = predictor.classify(item.data, top_k, names=[f"{video.name}#{item.index}"])[0]
            now = time.perf_counter()
            elapsed, last = now - last, now
            summary.frames += 1
            weight = 1.0 if summary.frames <= 2 else max(FPS_SMOOTHING, 1.0 / (summary.frames - 1))
            frame_time = elapsed if frame_time is None else (1 - weight) * frame_time + weight * elapsed
            counts[prediction.labels[0]] += 1
            done_at.append(now)
            delays.append((now - item.captured) * 1000.0)
            if on_frame is not None:
                on_frame(FrameResult(item.index, prediction, 1.0 / max(frame_time, 1e-9),
                                     (now - began) * 1000.0, delays[-1]))
            if max_frames is not None and summary.frames >= max_frames:
                break
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        _stop(stages, stop, (frames, batches), video)
        summary.seconds = time.perf_counter() - start
        summary.mean_fps = summary.frames / summary.seconds if summary.seconds > 0 and summary.frames else 0.0
        summary.steady_fps = _steady_fps(done_at, summary.mean_fps)
        summary.latency_p50_ms = float(np.median(delays)) if len(delays) else 0.0
        summary.dropped = frames.dropped + batches.dropped
        summary.overlapped = overlapped
        summary.label_counts = dict(counts.most_common())
    return summary


def _stop(stages: list[threading.Thread], stop: threading.Event, channels: tuple[_Channel, ...],
          video: VideoSource) -> None:
    """Stop and join the stages; the capture stage closes the source (here if none ran).

    A capture stage still blocked in a camera read after ``JOIN_TIMEOUT_S`` is left as a daemon thread:
    it closes the source when the read returns, and cannot keep the interpreter from exiting.
    """
    stop.set()
    for channel in channels:
        channel.wake()
    for stage in stages:
        if stage.ident is not None:
            stage.join(JOIN_TIMEOUT_S)
    if not stages or stages[0].ident is None:
        video.close()


__all__ = ["WARMUP_FRAMES", "FrameResult", "VideoSource", "VideoSummary", "is_live", "open_source", "run_video"]


def run_video_file(
    artifact: str | os.PathLike[str], source: str | int | os.PathLike[str], *, device: str = "auto",
    backend: str | None = None, threads: int | None = None, top_k: int = 1, max_frames: int | None = None,
    live: bool | None = None, on_frame: Callable[[FrameResult], None] | None = None,
    opened: Callable[[Predictor], None] | None = None,
) -> VideoSummary:
    """``resnet-edge predict --source``: load an artifact and classify a stream with it (see ``run_video``)."""
    from .predictor import load

    with load(artifact, device=device, backend=backend, threads=threads) as predictor:
        if opened is not None:
            opened(predictor)
        return run_video(predictor, source, top_k=top_k, max_frames=max_frames, on_frame=on_frame, live=live)
