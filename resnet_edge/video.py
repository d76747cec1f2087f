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

import json
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
    smoothed FPS, model latency and capture-to-result latency.

    ``captured_at`` is when the frame was read (Unix time, seconds); ``video_time_s`` its position in a file
    (index / the file's FPS; None for a camera or stream, or when the file does not say its FPS); ``frame`` the
    BGR frame as decoded (to draw on; not in ``to_dict``).
    """

    index: int
    prediction: Prediction
    fps: float
    latency_ms: float
    capture_latency_ms: float = 0.0
    captured_at: float = 0.0
    video_time_s: float | None = None
    frame: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """One JSON Lines record: index, capture timestamp, capture-to-result latency and the top-k."""
        return {"index": self.index, "timestamp": round(self.captured_at, 6),
                "video_time_s": None if self.video_time_s is None else round(self.video_time_s, 6),
                "capture_to_result_ms": round(self.capture_latency_ms, 3), "model_ms": round(self.latency_ms, 3),
                "fps": round(self.fps, 2), "labels": list(self.prediction.labels),
                "indices": [int(i) for i in self.prediction.indices],
                "scores": [float(s) for s in self.prediction.scores]}


@dataclass
class VideoSummary:
    """What a run over a stream did; ``interrupted`` is True when Ctrl-C (KeyboardInterrupt) ended it.

    ``steady_fps`` leaves out the first ``WARMUP_FRAMES`` results (``mean_fps`` when there are too few);
    ``dropped`` counts frames a live source skipped to stay current; ``latency_p50_ms`` is the median
    capture-to-result time; ``overlapped`` says whether capture and preprocessing ran beside the model;
    ``saved_video`` is the annotated clip written (``save_video``), if any.
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
    saved_video: str | None = None


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


# annotated clip -----------------------------------------------------------------------------

CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
DEFAULT_WRITE_FPS = 30.0  # for a source that does not say its frame rate (some cameras and streams)
WRITE_QUEUE_SIZE = 4  # annotated frames waiting for the encoder


def video_codec(path: str | os.PathLike[str]) -> str:
    """The FourCC OpenCV writes ``path``'s container with; a one-line error for a suffix it cannot write."""
    suffix = Path(path).suffix.lower()
    if suffix not in CODECS:
        raise InvalidArgumentError(f"cannot write a video to {Path(path).name}: give a file ending in "
                                   f"{', '.join(CODECS)}")
    return CODECS[suffix]


def annotate(frame: np.ndarray, result: FrameResult) -> np.ndarray:
    """A copy of ``frame`` (BGR) with the top label and its score, and the FPS, written in its top-left corner:
    white on a dark outline, sized to the frame's height."""
    cv2 = lazy_import("cv2", extra="video")
    image = np.ascontiguousarray(frame).copy()
    scale = max(0.35, image.shape[0] / 720)
    thickness = max(1, round(scale * 2))
    prediction = result.prediction
    lines = (f"{prediction.labels[0]} {prediction.scores[0]:.2f}", f"{result.fps:.1f} FPS")
    for row, text in enumerate(lines, 1):
        origin = (max(2, round(10 * scale)), round(row * 30 * scale))
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return image


class AnnotatedWriter:
    """Writes classified frames, each annotated (``annotate``), to a video file that appears whole or not at all.

    The file is opened at the first frame (its size decides the clip's) as a temporary sibling
    (``atomic.atomic_path``) and moved into place by ``close(keep=True)``; ``close(keep=False)`` removes it.
    Drawing and encoding run in a thread beside the model (OpenCV releases the GIL), at most
    ``WRITE_QUEUE_SIZE`` frames behind; an encoder error is raised by the next ``write`` or by ``close``.
    """

    def __init__(self, path: str | os.PathLike[str], fps: float) -> None:
        self.path, self.fps, self.frames = Path(path), float(fps), 0
        self._codec = video_codec(self.path)
        self._stack: Any = None
        self._writer: Any = None
        self._queue: deque[FrameResult | None] = deque()
        self._ready = threading.Condition()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def _open(self, frame: np.ndarray) -> None:
        from contextlib import ExitStack

        from .atomic import atomic_path

        cv2 = lazy_import("cv2", extra="video")
        self._stack = ExitStack()
        tmp = self._stack.enter_context(atomic_path(self.path))
        height, width = frame.shape[:2]
        with quiet():
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*self._codec), self.fps, (width, height))
        if not writer.isOpened():
            self._discard()
            raise DataError(f"cannot write {self.path}: OpenCV has no {self._codec} encoder for {self.path.suffix}")
        self._writer = writer
        self._thread = threading.Thread(target=self._encode, name="video-writer", daemon=True)
        self._thread.start()

    def write(self, result: FrameResult) -> None:
        """Queue one classified frame (waits while ``WRITE_QUEUE_SIZE`` are already waiting)."""
        if result.frame is None:
            raise InvalidArgumentError("a FrameResult without its frame cannot be written")
        if self._writer is None:
            self._open(result.frame)
        with self._ready:
            while len(self._queue) >= WRITE_QUEUE_SIZE and self._error is None:
                self._ready.wait(_POLL_S)
            if self._error is not None:
                raise DataError(f"cannot write {self.path}: {first_line(self._error)}")
            self._queue.append(result)
            self._ready.notify_all()

    def _encode(self) -> None:
        try:
            while True:
                with self._ready:
                    while not self._queue:
                        self._ready.wait(_POLL_S)
                    result = self._queue.popleft()
                    self._ready.notify_all()
                if result is None:
                    return
                self._writer.write(annotate(result.frame, result))
                self.frames += 1
        except BaseException as exc:  # raised in the calling thread by write() or close()
            with self._ready:
                self._error = exc
                self._ready.notify_all()

    def close(self, keep: bool = True) -> Path | None:
        """Finish: with ``keep``, every queued frame is written and the clip moved into place (its path is
        returned; None when no frame came); otherwise the temporary file is removed."""
        if self._writer is None:
            return None
        with self._ready:
            if not keep:
                self._queue.clear()
            self._queue.append(None)
            self._ready.notify_all()
        if self._thread is not None:
            self._thread.join()
        self._writer.release()
        self._writer = None
        if not keep or self._error is not None:
            self._discard()
            if keep:
                raise DataError(f"cannot write {self.path}: {first_line(self._error)}")
            return None
        self._stack.close()
        return self.path

    def _discard(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.__exit__(DataError, DataError("discarded"), None)


class JsonLines:
    """Per-frame results as JSON Lines (``FrameResult.to_dict``), one line per frame written and flushed as it
    comes, so a run killed half-way leaves whole lines; ``"-"`` writes to stdout. Use as ``on_frame``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self.lines = 0
        if self.path == "-":
            self._handle, self._owned = sys.stdout, False
            return
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._handle, self._owned = open(self.path, "w", encoding="utf-8"), True  # noqa: SIM115
        except OSError as exc:
            raise DataError(f"cannot write {self.path}: {exc.strerror or first_line(exc)}") from None

    def __call__(self, result: FrameResult) -> None:
        self._handle.write(json.dumps(result.to_dict()) + "\n")
        self._handle.flush()
        self.lines += 1

    def close(self) -> None:
        if self._owned and not self._handle.closed:
            self._handle.close()

    def __enter__(self) -> JsonLines:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# pipeline -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Item:
    """A frame (or its input batch, with the frame it came from) on its way through the stages, with its index
    and capture time."""

    index: int
    captured: float
    data: np.ndarray
    frame: np.ndarray | None = None


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
            prepared = predictor.prepare(item.data, color="bgr")
            if not out.put(_Item(item.index, item.captured, prepared, item.data)):
                return
    except BaseException as exc:  # carried to the calling thread
        out.finish(_Failure(exc))


def _prepared_inline(video: VideoSource, predictor: Predictor) -> Iterator[_Item]:
    """The serial path: read, time-stamp and prepare each frame in the calling thread."""
    index = 0
    while (frame := video.read()) is not None:
        captured = time.perf_counter()
        yield _Item(index, captured, predictor.prepare(frame, color="bgr"), frame)
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
    save_video: str | os.PathLike[str] | None = None,
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
    ``save_video`` (``.mp4``, ``.avi``, …) writes every classified frame with its top label, score and FPS drawn
    on it, at the source's frame rate, into a temporary file moved into place when the run ends (also after
    Ctrl-C; removed if the run fails): see ``AnnotatedWriter``.
    """
    if max_frames is not None and max_frames < 0:
        raise InvalidArgumentError("max frames must be zero or more")
    if save_video is not None:
        video_codec(save_video)
    video = source if isinstance(source, VideoSource) else open_source(source)
    source_fps = video.fps
    writer = None if save_video is None else AnnotatedWriter(save_video, source_fps if source_fps > 0 else
                                                             DEFAULT_WRITE_FPS)
    position_fps = source_fps if source_fps > 0 and not video.live else None
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
            result = FrameResult(item.index, prediction, 1.0 / max(frame_time, 1e-9), (now - began) * 1000.0,
                                 delays[-1], time.time() - (now - item.captured),
                                 None if position_fps is None else item.index / position_fps, item.frame)
            if writer is not None:
                writer.write(result)
            if on_frame is not None:
                on_frame(result)
            if max_frames is not None and summary.frames >= max_frames:
                break
    except KeyboardInterrupt:
        summary.interrupted = True
    except BaseException:
        if writer is not None:
            writer.close(keep=False)
        raise
    finally:
        _stop(stages, stop, (frames, batches), video)
        summary.seconds = time.perf_counter() - start
        summary.mean_fps = summary.frames / summary.seconds if summary.seconds > 0 and summary.frames else 0.0
        summary.steady_fps = _steady_fps(done_at, summary.mean_fps)
        summary.latency_p50_ms = float(np.median(delays)) if len(delays) else 0.0
        summary.dropped = frames.dropped + batches.dropped
        summary.overlapped = overlapped
        summary.label_counts = dict(counts.most_common())
    if writer is not None:
        saved = writer.close(keep=True)
        summary.saved_video = None if saved is None else str(saved)
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


__all__ = ["WARMUP_FRAMES", "AnnotatedWriter", "FrameResult", "JsonLines", "VideoSource", "VideoSummary", "annotate",
           "is_live", "open_source", "run_video", "run_video_file", "video_codec"]


def run_video_file(
    artifact: str | os.PathLike[str], source: str | int | os.PathLike[str], *, device: str = "auto",
    backend: str | None = None, threads: int | None = None, top_k: int = 1, max_frames: int | None = None,
    live: bool | None = None, on_frame: Callable[[FrameResult], None] | None = None,
    opened: Callable[[Predictor], None] | None = None, save_video: str | os.PathLike[str] | None = None,
) -> VideoSummary:
    """``resnet-edge predict --source``: load an artifact and classify a stream with it (see ``run_video``)."""
    from .predictor import load

    if save_video is not None:
        video_codec(save_video)  # a suffix OpenCV cannot write is refused before the model loads

    with load(artifact, device=device, backend=backend, threads=threads) as predictor:
        if opened is not None:
            opened(predictor)
        return run_video(predictor, source, top_k=top_k, max_frames=max_frames, on_frame=on_frame, live=live,
                         save_video=save_video)
