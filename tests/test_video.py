"""Video and camera loop: a short MJPG clip through a tiny Keras ResNet, and the camera app example."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("tensorflow")

import resnet_edge  # noqa: E402
from resnet_edge.errors import DataError  # noqa: E402
from resnet_edge.video import FrameResult, VideoSource, open_source, run_video  # noqa: E402

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
    for result in results:
        assert len(result.prediction.labels) == 3
        assert result.prediction.labels[0] in predictor.labels
        assert result.fps > 0 and result.latency_ms > 0


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
