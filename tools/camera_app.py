"""A minimal embedded camera app: classify each frame of a camera or video file and print it.

    python tools/camera_app.py model.tflite --source 0          # first camera, Ctrl-C to stop
    python tools/camera_app.py model.onnx --source clip.mp4 --device cpu --top-k 3

It uses only the public API: ``resnet_edge.load`` opens any artifact (.keras, .onnx, .tflite,
.engine) with the preprocessing stored in it, and ``run_video`` feeds it BGR frames from OpenCV,
capturing, preprocessing and running the model at once; a camera skips stale frames to stay current.
"""

from __future__ import annotations

import argparse
import sys

import resnet_edge
from resnet_edge.errors import ResnetEdgeError
from resnet_edge.video import FrameResult, run_video


def show(result: FrameResult) -> None:
    """Print one line per frame; a real app would draw on the frame or act on the label here."""
    best = ", ".join(f"{label} ({score:.2f})" for label, score in
                     zip(result.prediction.labels, result.prediction.scores, strict=True))
    print(f"frame {result.index}: {best} fps {result.fps:.1f} latency {result.capture_latency_ms:.0f} ms", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="model artifact: .keras, .onnx, .tflite or .engine")
    parser.add_argument("--source", default="0", help="camera index (0) or video file (video.mp4)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, trt or jetson")
    parser.add_argument("--top-k", type=int, default=1, help="labels to show per frame")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    parser.add_argument("--live", action=argparse.BooleanOptionalAction, default=None,
                        help="drop stale frames to stay current (default: cameras and URLs yes, files no)")
    args = parser.parse_args(argv)

    try:
        with resnet_edge.load(args.model, device=args.device) as predictor:
            print(f"running {predictor} on {args.source}", file=sys.stderr)
            summary = run_video(predictor, args.source, top_k=args.top_k,
                                max_frames=args.max_frames, on_frame=show, live=args.live)
    except ResnetEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    common = ", ".join(f"{label} x{n}" for label, n in list(summary.label_counts.items())[:3])
    print(f"{summary.frames} frames in {summary.seconds:.1f} s ({summary.steady_fps:.1f} fps steady, "
          f"{summary.dropped} dropped, p50 latency {summary.latency_p50_ms:.0f} ms)"
          f"{' - interrupted' if summary.interrupted else ''}; most common: {common or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
