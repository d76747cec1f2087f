"""Video and camera loop: the pipelined run with fake sources and models, a short MJPG clip through a
tiny Keras ResNet, the CLI and the camera app example."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("tensorflow")

import resnet_edge  # noqa: E402
from resnet_edge import video as video_module  # noqa: E402
from resnet_edge.errors import DataError, InvalidArgumentError  # noqa: E402
from resnet_edge.predictor import Prediction  # noqa: E402
from resnet_edge.video import WARMUP_FRAMES, FrameResult, VideoSource, open_source, run_video  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FRAMES, HEIGHT, WIDTH = 20, 40, 48


def colorful_frame(index: int) -> np.ndarray:
    """A BGR frame whose channels differ strongly, so swapping them changes the model's input."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    blue = (x * 255 // WIDTH + index * 12) % 256
    green = (y * 255 // HEIGHT) % 256
    red = np.full_like(x, (index * 37) % 256)
    return np.stack([blue, green, red], axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("video")


@pytest.fixture(scope="module")
def clip(workdir: Path) -> Path:
    path = workdir / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for i in range(FRAMES):
        writer.write(colorful_frame(i))
    writer.release()
    return path


@pytest.fixture(scope="module")
def model_path(workdir: Path) -> Path:
    from resnet_edge.models import build_resnet
    from resnet_edge.models.io import save_model

    model = build_resnet("resnet18", (32, 32, 3), num_classes=10)
    return save_model(model, workdir / "tiny.keras")


@pytest.fixture(scope="module")
def predictor(model_path: Path):
    with resnet_edge.load(model_path, device="cpu") as p:
        yield p


def decoded_frames(path: Path) -> list[np.ndarray]:
    with open_source(str(path)) as video:
        return list(video)


def test_every_frame_gets_a_prediction(predictor, clip: Path) -> None:
    results: list[FrameResult] = []
    summary = run_video(predictor, str(clip), top_k=3, on_frame=results.append)
    assert summary.frames == FRAMES == len(results) == len(decoded_frames(clip))
    assert [r.index for r in results] == list(range(FRAMES))
    assert not summary.interrupted
    assert sum(summary.label_counts.values()) == FRAMES
    assert summary.mean_fps > 0 and summary.seconds > 0
    assert summary.dropped == 0 and summary.steady_fps > 0 and summary.latency_p50_ms > 0
    for result in results:
        assert len(result.prediction.labels) == 3
        assert result.prediction.labels[0] in predictor.labels
        assert result.fps > 0 and result.latency_ms > 0
        assert result.capture_latency_ms >= result.latency_ms


def test_max_frames_stops_early(predictor, clip: Path) -> None:
    seen: list[int] = []
    summary = run_video(predictor, clip, max_frames=5, on_frame=lambda r: seen.append(r.index))
    assert summary.frames == 5 and seen == [0, 1, 2, 3, 4]
    assert not summary.interrupted


def test_frames_are_treated_as_bgr(predictor, clip: Path) -> None:
    results: list[FrameResult] = []
    run_video(predictor, clip, top_k=10, max_frames=4, on_frame=results.append)
    for result, bgr in zip(results, decoded_frames(clip), strict=False):
        as_rgb = predictor.predict(np.ascontiguousarray(bgr[..., ::-1]), top_k=10, color="rgb").predictions[0]
        assert as_rgb.indices == result.prediction.indices
        np.testing.assert_allclose(as_rgb.scores, result.prediction.scores, rtol=1e-5, atol=1e-6)
    frame = decoded_frames(clip)[0]
    right, wrong = (predictor.predict(frame, top_k=10, color=c).predictions[0] for c in ("bgr", "rgb"))
    by_class = [dict(zip(p.indices, p.scores, strict=True)) for p in (right, wrong)]
    difference = max(abs(by_class[0][i] - by_class[1][i]) for i in range(10))
    assert difference > 1e-5, "channel order made no difference; the test proves nothing"


def test_keyboard_interrupt_from_callback_ends_cleanly(predictor, clip: Path) -> None:
    def stop_after_three(result: FrameResult) -> None:
        if result.index == 2:
            raise KeyboardInterrupt

    video = open_source(str(clip))
    summary = run_video(predictor, video, on_frame=stop_after_three)
    assert summary.interrupted and summary.frames == 3
    assert video.read() is None


def test_open_source_reports_frames(clip: Path) -> None:
    with open_source(clip) as video:
        assert isinstance(video, VideoSource)
        assert video.frame_count in (None, FRAMES)
        frame = video.read()
        assert frame is not None and frame.shape == (HEIGHT, WIDTH, 3) and frame.dtype == np.uint8


def test_missing_file_is_a_one_line_data_error(predictor, tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(DataError, match="cannot open video source") as info:
        run_video(predictor, str(missing))
    assert "\n" not in str(info.value) and str(missing) in str(info.value)


def test_unreadable_file_is_a_data_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.avi"
    bogus.write_text("not a video\n")
    with pytest.raises(DataError, match="cannot open video source"):
        open_source(str(bogus))


def test_camera_app_runs_end_to_end(model_path: Path, clip: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "camera_app.py"), str(model_path), "--source", str(clip),
         "--device", "cpu", "--top-k", "2"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("frame ")]
    assert len(lines) == FRAMES
    assert lines[0].startswith("frame 0: ") and " fps " in lines[0]
    assert f"{FRAMES} frames in" in done.stdout.splitlines()[-1]


def test_cli_predict_source_reports_pipeline_figures(model_path: Path, clip: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "resnet_edge.cli", "predict", str(model_path), "--source", str(clip), "--device", "cpu",
         "--max-frames", "8", "--no-live", "--json"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["frames"] == 8 and summary["dropped"] == 0 and not summary["interrupted"]
    assert summary["steady_fps"] > 0 and summary["latency_p50_ms"] > 0


# the pipeline with fake sources and models: fast and deterministic ---------------------------

def numbered(index: int) -> np.ndarray:
    """A tiny BGR frame that carries its own index in its first two channels."""
    frame = np.zeros((6, 8, 3), np.uint8)
    frame[..., 0], frame[..., 1] = index % 256, index // 256
    return frame


def frame_number(pixels: np.ndarray) -> int:
    first = pixels.reshape(-1, 3)[0]
    return int(first[0]) + 256 * int(first[1])


class FakeCapture:
    """Stands in for ``cv2.VideoCapture``: frames 1..count-1 (frame 0 is the source's first frame).

    Each read takes ``delay`` seconds; ``fail_at`` raises on that frame; ``block_at`` waits on
    ``unblock`` before returning that frame, like a camera that stopped sending.
    """

    def __init__(self, count: int, delay: float = 0.0, fail_at: int | None = None, block_at: int | None = None):
        self.count, self.delay, self.fail_at, self.block_at = count, delay, fail_at, block_at
        self.next, self.released, self.unblock = 1, False, threading.Event()

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.delay:
            time.sleep(self.delay)
        if self.next == self.block_at:
            self.unblock.wait(10)
        if self.next == self.fail_at:
            raise RuntimeError(f"camera unplugged at frame {self.next}")
        if self.next >= self.count:
            return False, None
        self.next += 1
        return True, numbered(self.next - 1)

    def get(self, prop: int) -> float:
        return 0.0

    def release(self) -> None:
        self.released = True


def fake_source(count: int, name: str = "clip.avi", **kwargs) -> tuple[VideoSource, FakeCapture]:
    capture = FakeCapture(count, **kwargs)
    return VideoSource(capture, name, numbered(0)), capture


class FakePredictor:
    """``prepare``/``classify`` like a Predictor: the label is the frame's number, the model takes ``delay`` s.

    ``fail_from`` makes ``prepare`` raise from that frame on; ``lags`` records, per classified frame, how many
    newer frames the capture had read when the model started.
    """

    device = "cpu"
    backend = type("FakeBackend", (), {"threads": None})()

    def __init__(self, delay: float = 0.0, fail_from: int | None = None, capture: FakeCapture | None = None):
        self.delay, self.fail_from, self.capture = delay, fail_from, capture
        self.lags: list[int] = []

    def prepare(self, frame: np.ndarray, color: str = "rgb") -> np.ndarray:
        assert color == "bgr"
        if self.fail_from is not None and frame_number(frame) >= self.fail_from:
            raise DataError(f"bad frame {frame_number(frame)}")
        return frame[None].copy()

    def classify(self, batch: np.ndarray, top_k: int = 5, names=None) -> list[Prediction]:
        index = frame_number(batch)
        if self.capture is not None:
            self.lags.append(self.capture.next - 1 - index)
        if self.delay:
            time.sleep(self.delay)
        return [Prediction(names[0], [str(index)], [index], [1.0])]


@pytest.fixture
def no_leaked_threads():
    before = threading.active_count()
    yield
    stages = [t for t in threading.enumerate() if t.name.startswith("video-")]
    assert not stages and threading.active_count() == before


@pytest.mark.parametrize("name", ["clip.avi", "rtsp://camera/stream"])
def test_file_keeps_every_frame_in_order_when_the_model_is_slower(name: str, no_leaked_threads) -> None:
    video, capture = fake_source(40, name)
    results: list[FrameResult] = []
    summary = run_video(FakePredictor(delay=0.003), video, on_frame=results.append, live=False)
    assert [r.index for r in results] == list(range(40)) == [int(r.prediction.labels[0]) for r in results]
    assert summary.frames == 40 and summary.dropped == 0 and not summary.interrupted
    assert capture.released and video.read() is None
    assert all(r.capture_latency_ms >= r.latency_ms > 0 for r in results)
    assert 0 < summary.steady_fps < 1000 / 3 + 1 and summary.latency_p50_ms >= 3


@pytest.mark.parametrize("name", ["0", "rtsp://camera/stream", "clip.avi"])
def test_live_source_drops_stale_frames(name: str, no_leaked_threads) -> None:
    count = 300
    video, capture = fake_source(count, name, delay=0.001)
    model = FakePredictor(delay=0.01, capture=capture)
    results: list[FrameResult] = []
    summary = run_video(model, video, on_frame=results.append, live=True if name == "clip.avi" else None)
    indices = [r.index for r in results]
    assert indices == sorted(set(indices)) and indices == [int(r.prediction.labels[0]) for r in results]
    assert summary.dropped > 0 and summary.frames + summary.dropped == count
    assert max(b - a for a, b in pairwise(indices)) > 1
    assert indices[-1] == count - 1, "the last frame of the stream is always shown"
    assert sorted(model.lags)[len(model.lags) // 2] <= 3, "results should be for the newest frames"
    assert capture.released and not summary.interrupted


def test_live_is_auto_detected_from_the_name() -> None:
    for name, live in [("0", True), ("12", True), ("rtsp://10.0.0.2/live", True), ("http://cam/video.mjpg", True),
                       ("clip.mp4", False), ("/videos/0.mp4", False), ("file:///videos/a.mp4", False)]:
        assert fake_source(2, name)[0].live is live, name


def test_capture_latency_includes_queueing(no_leaked_threads) -> None:
    video, _ = fake_source(12)
    results: list[FrameResult] = []
    run_video(FakePredictor(delay=0.004), video, on_frame=results.append, overlap=True)
    assert all(r.capture_latency_ms >= r.latency_ms >= 4 for r in results)
    assert max(r.capture_latency_ms for r in results) > 8, "frames waiting in the queue show in the latency"


@pytest.mark.parametrize("name", ["clip.avi", "0"])
def test_keyboard_interrupt_from_on_frame_stops_every_stage(name: str, no_leaked_threads) -> None:
    video, capture = fake_source(10_000, name, delay=0.0005)

    def stop_at_three(result: FrameResult) -> None:
        if len(seen) == 3:
            raise KeyboardInterrupt
        seen.append(result.index)

    seen: list[int] = []
    summary = run_video(FakePredictor(delay=0.001), video, on_frame=stop_at_three)
    assert summary.interrupted and summary.frames == 4 and len(seen) == 3
    assert capture.released and capture.next < 10_000


@pytest.mark.parametrize("live", [False, True])
def test_preprocessing_error_reaches_the_caller(live: bool, no_leaked_threads) -> None:
    video, capture = fake_source(50)
    seen: list[int] = []
    with pytest.raises(DataError, match="bad frame" if live else "bad frame 7"):
        run_video(FakePredictor(fail_from=7), video, on_frame=lambda r: seen.append(r.index), live=live)
    assert capture.released
    if not live:
        assert seen == list(range(7))


def test_capture_error_reaches_the_caller(no_leaked_threads) -> None:
    video, capture = fake_source(50, fail_at=5)
    seen: list[int] = []
    with pytest.raises(RuntimeError, match="camera unplugged at frame 5"):
        run_video(FakePredictor(), video, on_frame=lambda r: seen.append(r.index))
    assert seen == list(range(5)) and capture.released


@pytest.mark.parametrize("live", [False, True])
def test_max_frames_with_fake_source(live: bool, no_leaked_threads) -> None:
    video, capture = fake_source(1000, delay=0.0005)
    seen: list[int] = []
    summary = run_video(FakePredictor(delay=0.001), video, max_frames=5, on_frame=lambda r: seen.append(r.index),
                        live=live)
    assert summary.frames == len(seen) == 5 and not summary.interrupted and capture.released
    if not live:
        assert seen == [0, 1, 2, 3, 4]


def test_zero_and_negative_max_frames(no_leaked_threads) -> None:
    video, capture = fake_source(10)
    summary = run_video(FakePredictor(), video, max_frames=0)
    assert summary.frames == 0 and capture.released and summary.steady_fps == summary.latency_p50_ms == 0
    with pytest.raises(InvalidArgumentError):
        run_video(FakePredictor(), fake_source(10)[0], max_frames=-1)


def test_short_stream_ends_cleanly_and_steady_fps_falls_back(no_leaked_threads) -> None:
    video, capture = fake_source(WARMUP_FRAMES)
    summary = run_video(FakePredictor(delay=0.001), video)
    assert summary.frames == WARMUP_FRAMES and not summary.interrupted and capture.released
    assert summary.steady_fps == summary.mean_fps > 0
    assert summary.label_counts == {str(i): 1 for i in range(WARMUP_FRAMES)}


def test_a_blocked_camera_cannot_hang_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(video_module, "JOIN_TIMEOUT_S", 0.1)
    video, capture = fake_source(100, "0", block_at=3)
    began = time.perf_counter()
    summary = run_video(FakePredictor(), video, max_frames=3, live=False, overlap=True)
    assert summary.frames == 3 and time.perf_counter() - began < 5
    stuck = [t for t in threading.enumerate() if t.name == "video-capture"]
    assert stuck and all(t.daemon for t in stuck), "the blocked reader is left behind as a daemon thread"
    capture.unblock.set()
    for thread in stuck:
        thread.join(5)
    assert capture.released and not any(t.is_alive() for t in stuck)


class _Threads:
    """A Predictor stand-in that says where its model runs and on how many threads."""

    def __init__(self, device: str, threads: int | None) -> None:
        self.device, self.backend = device, type("B", (), {"threads": threads})()


@pytest.mark.parametrize(("device", "threads", "cores", "expected"), [
    ("cpu", None, 2, False),  # the model takes every core: overlapping work would preempt it
    ("cpu", 2, 2, False),
    ("cpu", 1, 2, True),  # a core is left for capture and preprocessing
    ("cuda", None, 2, True),
])
def test_files_overlap_only_when_the_model_leaves_a_core(monkeypatch, device, threads, cores, expected) -> None:
    monkeypatch.setattr(video_module, "usable_cores", lambda: cores)
    assert video_module.spare_core(_Threads(device, threads)) is expected


@pytest.mark.parametrize("overlap", [False, True])
def test_serial_and_overlapped_file_runs_give_the_same_results(no_leaked_threads, overlap) -> None:
    video, _ = fake_source(20)
    results: list[FrameResult] = []
    started = threading.active_count()
    seen_threads = []
    summary = run_video(FakePredictor(), video, on_frame=lambda r: (results.append(r),
                        seen_threads.append(threading.active_count())), overlap=overlap)
    assert [r.index for r in results] == list(range(20)) and summary.dropped == 0
    assert summary.overlapped is overlap and (max(seen_threads) > started) is overlap


def test_a_live_source_always_overlaps(no_leaked_threads) -> None:
    video, _ = fake_source(10, "0")
    assert run_video(FakePredictor(), video).overlapped


@pytest.mark.parametrize(("source", "message"), [
    ("99", "no camera 99 on this machine"),
    (99, "no camera 99 on this machine"),
    ("-1", "no camera -1: camera indices are 0, 1, 2"),  # OpenCV reads -1 as any camera, and crashed on it
    (-1, "no camera -1: camera indices are 0, 1, 2"),
    ("99999999999999999999999", "no camera 99999999999999999999999 on this machine"),  # past a C int
    ("٣", "cannot open video source ٣: no such file"),  # a digit to str.isdigit, no camera index
])
def test_missing_cameras_are_one_line_data_errors(monkeypatch, source, message: str) -> None:
    monkeypatch.setattr(video_module, "cameras", lambda: ())
    with pytest.raises(DataError, match=message) as info:
        open_source(source)
    assert "\n" not in str(info.value)


def test_a_missing_camera_names_the_ones_there_are(monkeypatch) -> None:
    monkeypatch.setattr(video_module, "cameras", lambda: (0, 57))
    with pytest.raises(DataError, match=r"no camera 58 on this machine \(cameras: 0, 57\)"):
        open_source("58")
    with pytest.raises(DataError, match=r"camera 57 cannot be opened \(in use by another program"):
        open_source(57)  # listed, but OpenCV cannot open it here


def test_a_file_named_like_a_negative_index_is_still_a_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("-1").write_text("not a video\n")
    with pytest.raises(DataError, match="cannot open video source -1: "):
        open_source("-1")


# per-frame JSON Lines and the annotated clip ---------------------------------------------------------------------

JSONL_KEYS = {"index", "timestamp", "video_time_s", "capture_to_result_ms", "model_ms", "fps", "labels", "indices",
              "scores"}


def clip_frames(path: Path) -> tuple[int, float, tuple[int, int]]:
    """(frames decoded, FPS the container says, (height, width)) of a written clip."""
    capture = cv2.VideoCapture(str(path))
    try:
        assert capture.isOpened(), path
        fps = capture.get(cv2.CAP_PROP_FPS)
        shapes = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            shapes.append(frame.shape[:2])
        return len(shapes), fps, shapes[0] if shapes else (0, 0)
    finally:
        capture.release()


def test_cli_writes_json_lines_and_an_annotated_clip(model_path: Path, clip: Path, tmp_path: Path) -> None:
    lines_path, saved = tmp_path / "frames" / "clip.jsonl", tmp_path / "labelled.mp4"
    done = subprocess.run(
        [sys.executable, "-m", "resnet_edge.cli", "predict", str(model_path), "--source", str(clip), "--device", "cpu",
         "--top-k", "2", "--jsonl", str(lines_path), "--save-video", str(saved), "--json"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["frames"] == FRAMES and summary["saved_video"] == str(saved)
    records = [json.loads(line) for line in lines_path.read_text().splitlines()]
    assert [r["index"] for r in records] == list(range(FRAMES))
    for record in records:
        assert set(record) == JSONL_KEYS and len(record["labels"]) == len(record["scores"]) == 2
        assert record["capture_to_result_ms"] >= record["model_ms"] > 0
    assert records[1]["video_time_s"] == pytest.approx(0.1, abs=1e-6)  # frame 1 of a 10 FPS file
    assert records[0]["timestamp"] <= records[-1]["timestamp"] and records[0]["timestamp"] > 1.6e9
    assert clip_frames(saved) == (FRAMES, pytest.approx(10.0), (HEIGHT, WIDTH))  # every frame, the source's FPS
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary file left behind"


def test_cli_json_lines_on_stdout_hold_only_the_frames(model_path: Path, clip: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "resnet_edge.cli", "predict", str(model_path), "--source", str(clip), "--device", "cpu",
         "--max-frames", "5", "--jsonl", "-"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["index"] for r in records] == [0, 1, 2, 3, 4] and all(set(r) == JSONL_KEYS for r in records)
    assert "done: 5 frames" in done.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["x.png", "--jsonl", "-"], "--jsonl and --save-video apply only with --source"),
    (["--source", "clip.avi", "--jsonl", "-", "--json"], "--jsonl - and --json both print to stdout"),
    (["--source", "clip.avi", "--save-video", "out.gif"], "cannot write a video to out.gif: give a file ending in .mp4"),
])
def test_cli_video_output_errors_are_one_line_before_any_work(args: list[str], message: str) -> None:
    done = subprocess.run([sys.executable, "-m", "resnet_edge.cli", "predict", "/nonexistent/model.onnx", *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and message in lines[0], done.stderr


def test_json_lines_are_flushed_whole_as_frames_come(tmp_path: Path, no_leaked_threads) -> None:
    from resnet_edge.video import JsonLines

    path = tmp_path / "frames.jsonl"
    seen_on_disk: list[int] = []
    video, _ = fake_source(50, fail_at=6)
    with JsonLines(path) as lines, pytest.raises(RuntimeError, match="camera unplugged"):
        def write(result: FrameResult) -> None:
            lines(result)
            seen_on_disk.append(len(path.read_text().splitlines()))  # already on disk, before the run ends

        run_video(FakePredictor(), video, on_frame=write)
    assert seen_on_disk == [1, 2, 3, 4, 5, 6]
    records = [json.loads(line) for line in path.read_text().splitlines()]  # a failed run leaves whole lines
    assert [r["index"] for r in records] == list(range(6)) and records[0]["labels"] == ["0"]
    assert records[0]["video_time_s"] is None  # the fake file does not say its FPS


def test_saved_clip_appears_only_when_the_run_ends(tmp_path: Path, no_leaked_threads) -> None:
    target = tmp_path / "out.avi"
    seen: list[bool] = []
    video, _ = fake_source(12)
    summary = run_video(FakePredictor(), video, on_frame=lambda r: seen.append(target.exists()), save_video=target)
    assert seen == [False] * 12 and summary.saved_video == str(target)
    assert clip_frames(target)[0] == 12 and list(tmp_path.iterdir()) == [target]


def test_an_interrupted_run_keeps_its_clip_and_a_failed_run_leaves_none(tmp_path: Path, no_leaked_threads) -> None:
    def stop_at_four(result: FrameResult) -> None:
        if result.index == 3:
            raise KeyboardInterrupt

    kept = tmp_path / "kept.mp4"
    summary = run_video(FakePredictor(), fake_source(100)[0], on_frame=stop_at_four, save_video=kept)
    assert summary.interrupted and clip_frames(kept)[0] == 4
    failed = tmp_path / "failed.mp4"
    with pytest.raises(DataError, match="bad frame 5"):
        run_video(FakePredictor(fail_from=5), fake_source(100)[0], save_video=failed, live=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.mp4"], "a failed run leaves no clip and no temp file"


def test_annotate_draws_on_a_copy() -> None:
    from resnet_edge.video import annotate

    frame = np.zeros((120, 160, 3), np.uint8)
    result = FrameResult(0, Prediction("f", ["cat"], [1], [0.9]), 25.0, 4.0, 5.0, frame=frame)
    drawn = annotate(frame, result)
    assert drawn.shape == frame.shape and drawn[:40].any() and not frame.any()
