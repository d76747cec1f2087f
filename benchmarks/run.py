"""`make bench`: parity and latency of every CPU format of ResNet-50 @224 (1000 classes) on real photos, of a
ResNet-50 c3-c5 backbone @640 and a ResNet-50 embedding @224, and of a digits ResNet-18.

Writes ``<out>/resnet50_224/benchmark.*``, ``<out>/resnet18_digits/benchmark.*`` and ``<out>/summary.json``
(ratios and the machine). Models and artifacts go to ``<out>/models`` and ``<out>/artifacts``; the trained
``<out>/resnet18_digits.keras`` is reused when present.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench_models import FULL, QUICK, Settings, digits_model, photos_resnet50, say
from camera import measure_camera, print_camera

from resnet_edge.atomic import atomic_path
from resnet_edge.benchmark import FormatRow, run_all
from resnet_edge.latency import interleave
from resnet_edge.optimize import decide
from resnet_edge.registry import FORMATS, REFERENCE, cpu_formats
from resnet_edge.report import format_table, machine_description, write_reports

RESNET50_FORMATS = tuple(cpu_formats())  # every format whose runtime runs on a CPU, from the registry's rows


def _p50(rows: list[FormatRow], name: str) -> float | None:
    return next((r.p50_ms for r in rows if r.format == name and r.p50_ms), None)


def ratios(rows: list[FormatRow]) -> dict[str, Any]:
    """Best CPU format vs Keras, and ONNX Runtime int8 vs fp32 (both as p50 speed-ups). The best format is
    chosen as ``optimize`` chooses (``decide``): formats within each other's noise are a tie, named in
    ``best_tied_with``."""
    keras = _p50(rows, REFERENCE)
    candidates = [r for r in rows if r.format != REFERENCE and r.status == "ok" and r.p50_ms]
    decision = decide(candidates)
    best = decision.chosen
    return {
        "p50_ms": {r.format: r.p50_ms for r in rows if r.p50_ms},
        "noise_ms": {r.format: r.noise_ms for r in rows if r.p50_ms},
        "noisy": [r.format for r in rows if r.noisy],
        "best_format": best.format if best else None,
        "best_tied_with": [r.format for r in decision.tied_with],
        "best_rule": decision.rule,
        "best_vs_keras": keras / best.p50_ms if best and keras else None,
        "int8_vs_fp32": int8_speedups(rows),
    }


def int8_speedups(rows: list[FormatRow]) -> dict[str, float]:
    """Each runtime's int8 format against its own fp32 format (p50 ratio), for the runtimes that have both."""
    by_format = {r.format: r.p50_ms for r in rows if r.status == "ok" and r.p50_ms}
    speedups = {}
    for name, row in FORMATS.items():
        fp32 = next((f for f, other in FORMATS.items() if other.backend == row.backend and other.precision == "fp32"),
                    None) if row.precision == "int8" else None
        if fp32 and by_format.get(name) and by_format.get(fp32):
            speedups[f"{name} vs {fp32}"] = by_format[fp32] / by_format[name]
    return speedups


def _print_ratios(title: str, summary: dict[str, Any]) -> None:
    print(f"\n{title}")
    for name, p50 in summary["p50_ms"].items():
        noisy = "  noisy" if name in summary["noisy"] else ""
        print(f"  {name:<22} p50 {p50:8.2f} ms ±{summary['noise_ms'][name]:.2g}{noisy}")
    if summary["best_vs_keras"]:
        tie = (f" (tied within noise with {', '.join(summary['best_tied_with'])}; chosen by {summary['best_rule']})"
               if summary["best_tied_with"] else "")
        print(f"  best CPU format ({summary['best_format']}) vs Keras: {summary['best_vs_keras']:.2f}x faster{tie}")
    for pair, speedup in summary["int8_vs_fp32"].items():
        print(f"  {pair}: {speedup:.2f}x faster")


def _publish(rows: list[FormatRow], folder: Path, title: str, machine: dict, command: str) -> dict[str, str]:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(format_table(rows))
    return {kind: str(path) for kind, path in write_reports(rows, folder, title, machine, command).items()}


def int8_parity(rows: list[FormatRow]) -> dict[str, Any]:
    """The figures that say whether an int8 row can be trusted: what was compared, how close, how often it agrees."""
    keys = ("passed", "compared", "cosine", "max_rel", "top1_agreement", "decisive", "decisive_top1",
            "top5_agreement", "top5_overlap", "calibration_images", "samples")
    return {r.format: {k: r.parity.get(k) for k in keys} for r in rows if r.precision == "int8" and r.parity}


def resnet50(out: Path, settings: Settings, machine: dict, command: str) -> dict[str, Any]:
    """(a) ResNet-50 @224 with a 1000-class softmax head, trained briefly on the calibration photos: export the four
    CPU formats, check each against the Keras model on crops of real photos outside the calibration set, and time
    batch 1."""

    model_path = photos_resnet50(out, settings)
    rows = run_all(model_path, out / "artifacts" / "resnet50_224", formats=RESNET50_FORMATS, data="photos",
                   batch_size=1, min_time_s=settings.min_time_s, warmup=settings.warmup, calib_count=settings.calib_count,
                   parity_count=settings.photo_parity_count, progress=say, variants=True)
    summary = ratios(rows)
    summary["export_s"] = {r.format: r.export_s for r in rows if r.export_s}
    summary["statuses"] = {r.format: r.status for r in rows}
    summary["int8_parity"] = int8_parity(rows)
    title = ("ResNet-50 @224, 1000 classes (trained briefly on photo crops), batch 1; parity on "
             f"{settings.photo_parity_count} photo crops outside the calibration set")
    summary["reports"] = _publish(rows, out / "resnet50_224", title, machine, command)
    _print_ratios(title, summary)
    for name, figures in summary["int8_parity"].items():
        decisive = ("no decisive image" if figures["decisive_top1"] is None
                    else f"{figures['decisive_top1']:.2%} of {figures['decisive']} decisive")
        print(f"  {name:<12} {figures['compared']}: cos {figures['cosine']:.6f}, top-1 agree "
              f"{figures['top1_agreement']:.2%} ({decisive}), top-5 overlap {figures['top5_overlap']:.2%}, "
              f"passed {figures['passed']}")
    print("  export time: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in summary["export_s"].items()))
    summary["int8_softmax_in_graph"] = softmax_in_graph(model_path, out, settings)
    summary["predictor_overhead"] = predictor_overhead(rows, settings)
    summary["camera"] = camera(rows, out, settings)
    return summary


def camera(rows: list[FormatRow], out: Path, settings: Settings) -> dict[str, Any]:
    """Camera-scale inputs (1080p frames, a 1080p clip, 12-megapixel photos) through the int8 artifacts that pass."""
    title = "Camera-scale inputs, ResNet-50 @224 int8, batch 1"
    print(f"\n{title}")
    results = {}
    for row in rows:
        if row.precision == "int8" and row.status == "ok" and "(" not in row.format:  # variants aside
            say(f"camera-scale inputs through {row.format}")
            results[row.format] = measure_camera(Path(row.path), out / "camera", settings.min_time_s, settings.warmup)
            print_camera(row.format, results[row.format])
    return results


def softmax_in_graph(model_path: Path, out: Path, settings: Settings) -> dict[str, Any]:
    """The same tflite-int8 export with the softmax kept in the integer graph (``--int8-softmax``): what the
    logits-out default avoids, measured on the same photos."""
    from resnet_edge.calibration import CalibrationSet
    from resnet_edge.exporter import export, load_source
    from resnet_edge.parity import verify_artifact

    calibration = CalibrationSet.from_source("photos", (224, 224), settings.calib_count)
    path = out / "artifacts" / "resnet50_224" / "resnet50_224_random_int8_softmax.tflite"
    result = export(model_path, "tflite-int8", path, calibration=calibration, verify=False, int8_softmax=True)
    report = verify_artifact(load_source(model_path)[0], result.path, calibration.holdout,
                             count=settings.photo_parity_count, label="tflite-int8 --int8-softmax")
    print(f"  {report.line()}")
    return {"passed": report.passed, "cosine": report.cosine, "top1_agreement": report.top1_agreement,
            "compared": report.compared, "failures": report.failures}


def predictor_overhead(rows: list[FormatRow], settings: Settings, size: int = 224) -> dict[str, Any]:
    """The Predictor's answer for one uint8 HWC frame (predict, embed or features, by the model's task) vs the
    backend's own call on an input already in its dtype, timed together in interleaved rounds
    (``resnet_edge.latency.interleave``), so drift on a shared machine hits both alike."""
    import numpy as np

    from resnet_edge.predictor import load
    from resnet_edge.preprocess import cast_batch

    frame = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    results = {}
    for row in rows:
        if row.format == REFERENCE or row.status != "ok" or "(" in row.format:  # every passing format, variants aside
            continue
        with load(row.path, device="cpu") as predictor:
            batch = cast_batch(frame[None], predictor.input_spec)
            answer = {"classifier": lambda p=predictor: p.predict(frame, top_k=5),
                      "embedding": lambda p=predictor: p.embed(frame),
                      "features": lambda p=predictor: p.features(frame)}[predictor.task]
            timings = interleave({"raw": lambda p=predictor, b=batch: p.backend.run(b), "predict": answer},
                                 min_time_s=settings.min_time_s, warmup=settings.warmup)
        for timing in timings.values():
            if timing.error is not None:
                raise timing.error
        raw_p50, e2e_p50 = timings["raw"].p50_ms, timings["predict"].p50_ms
        results[row.format] = {"raw_ms": raw_p50, "predict_ms": e2e_p50, "ratio": e2e_p50 / raw_p50,
                               "raw_noise_ms": timings["raw"].noise_ms, "predict_noise_ms": timings["predict"].noise_ms}
        print(f"  Predictor overhead {row.format:<14} raw {raw_p50:8.2f} ms  answer(frame) {e2e_p50:8.2f} ms  "
              f"ratio {e2e_p50 / raw_p50:.3f}")
    return results


def feature_extractors(out: Path, settings: Settings, machine: dict, command: str) -> dict[str, Any]:
    """(c) ResNet-50 as a feature extractor at backbone scale: a c3-c5 backbone at 640x640 and an L2-normalised
    embedding at 224x224 (random weights: their per-output cosine and, for the embedding, the nearest-neighbour
    recall on photo crops are what parity judges), every CPU format calibrated and verified on the built-in photos;
    the Predictor's overhead over the backend call, and embeddings per second for a folder of photos."""
    from resnet_edge.data import load_photos
    from resnet_edge.models.io import build_file

    results: dict[str, Any] = {}
    for name, size, kind in (("resnet50_backbone_640", 640, {"features": ("c3", "c4", "c5")}),
                             ("resnet50_embedding_224", 224, {"pooling": "avg", "normalize": True})):
        model_path = out / "models" / f"{name}.keras"
        if not model_path.exists():
            import keras

            keras.utils.set_random_seed(0)
            build_file("resnet50", model_path, input_size=(size, size), **kind)
        small = size > 224  # at 640 px every image costs 8x: fewer images calibrate and verify (stated in the title)
        rows = run_all(model_path, out / "artifacts" / name, formats=RESNET50_FORMATS, data="photos", batch_size=1,
                       min_time_s=settings.min_time_s, warmup=settings.warmup,
                       calib_count=min(settings.calib_count, 100 if small else 300),
                       parity_count=min(settings.photo_parity_count, 100 if small else 200), progress=say)
        summary = ratios(rows)
        summary["statuses"] = {r.format: r.status for r in rows}
        summary["parity"] = {r.format: {k: (r.parity or {}).get(k) for k in
                                        ("passed", "cosine", "worst_level", "recall_at_1", "recall_at_5", "levels")}
                             for r in rows if r.parity}
        title = (f"ResNet-50 {'c3-c5 backbone @640' if size == 640 else 'embedding @224 (avg, L2)'}, batch 1; "
                 f"calibrated on {100 if small else 300} photo crops, parity on {100 if small else 200} others")
        summary["reports"] = _publish(rows, out / name, title, machine, command)
        _print_ratios(title, summary)
        summary["predictor_overhead"] = predictor_overhead(rows, settings, size)
        if "embedding" in name:
            summary["embeddings_per_s"] = embeddings_per_second(rows, out, load_photos)
        results[name] = summary
    return results


def embeddings_per_second(rows: list[FormatRow], out: Path, load_photos) -> dict[str, float]:
    """``predict --out embeddings.npy`` over a folder of 96 photo JPEGs (640x480): decoding, resizing and the model,
    end to end, per passing format."""
    from PIL import Image

    from resnet_edge.results import predict_images

    folder = out / "photos_640x480"
    if not folder.exists():
        photos = load_photos((480, 640), crops=8)
        folder.mkdir(parents=True)
        for index, image in enumerate(photos.images[:96]):
            Image.fromarray(image).save(folder / f"{index:03d}.jpg", quality=90)
    rates = {}
    for row in rows:
        if row.format == REFERENCE or row.status != "ok" or "(" in row.format:
            continue
        started = time.perf_counter()
        result = predict_images(row.path, [folder], out=out / "embeddings" / f"{row.format}.npy")
        rates[row.format] = len(result.sources) / (time.perf_counter() - started)
        print(f"  embeddings per second, {row.format:<14} {rates[row.format]:7.1f} (96 JPEGs of 640x480, end to end)")
    return rates


def resnet18_digits(out: Path, settings: Settings, machine: dict, command: str, quick: bool) -> dict[str, Any]:
    """(b) Every CPU format of a trained digits ResNet-18 with parity on the hold-out images."""
    model_path = digits_model(out, settings, quick)
    rows = run_all(model_path, out / "artifacts" / "resnet18_digits", formats=None, data="digits", batch_size=1,
                   min_time_s=settings.min_time_s, warmup=settings.warmup, calib_count=settings.calib_count,
                   parity_count=settings.parity_count, progress=say)
    summary = ratios(rows)
    summary["model"] = str(model_path)
    summary["statuses"] = {r.format: r.status for r in rows}
    summary["int8_parity"] = int8_parity(rows)
    title = "ResNet-18 on digits @32, batch 1, parity on images outside the calibration set (seen in training)"
    summary["reports"] = _publish(rows, out / "resnet18_digits", title, machine, command)
    _print_ratios(title, summary)
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 0.5 s per format, 30 calibration images, no ResNet-50")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="results folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = QUICK if args.quick else FULL
    command = shlex.join(["python", "benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)])
    machine = machine_description()
    summary: dict[str, Any] = {"command": command, "quick": args.quick, "settings": asdict(settings),
                               "machine": machine, "resnet50_224": None}
    if not args.quick:
        summary["resnet50_224"] = resnet50(args.out, settings, machine, command)
        from quantizer import compare_quantizers  # benchmarks/quantizer.py: tflite-int8's two quantizers

        summary["tflite_int8_quantizers"] = compare_quantizers(args.out, settings)
        summary["feature_extractors"] = feature_extractors(args.out, settings, machine, command)
    summary["resnet18_digits"] = resnet18_digits(args.out, settings, machine, command, args.quick)
    with atomic_path(args.out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    say(f"wrote {args.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
