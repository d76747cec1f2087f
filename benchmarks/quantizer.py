"""tflite-int8's two quantizers head to head: LiteRT Quantizer (``--quantizer litert``) against TensorFlow's MLIR
quantizer (``--quantizer mlir``), on the ResNet-50 @224 that `make bench` trains on the built-in photos.

For each quantizer, in this order of importance:

1. **parity** against the Keras model on the same photo crops outside the calibration set (logit cosine, top-1
   agreement on decisive crops, the project's parity verdict), and how far the two int8 files are from each other;
2. **speed**: p50 under XNNPACK at batch 1, both files timed together in interleaved rounds
   (``latency.measure_together``), so load on the shared machine hits both alike;
3. **export cost**: each ``export()`` in a fresh process of its own (wall time, phases, peak RSS: the process's
   own high-water mark, ``VmHWM``), and for LiteRT Quantizer also its quantization step alone in a process without TensorFlow.

The decision rule (``decide_quantizer``) names the better one; ties go to LiteRT Quantizer, which needs no
TensorFlow-private entry point. Writes ``<out>/quantizer/quantizer.json`` and ``.md``; artifacts go to
``<out>/artifacts/quantizer``. ``python benchmarks/quantizer.py --out benchmarks/results`` runs it alone (it trains
the ResNet-50 as `make bench` does when ``<out>/models`` does not have it yet); ``--quick`` is a smoke run on the
digits ResNet-18.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_models import FULL, QUICK, digits_model, photos_resnet50, say

FORMAT = "tflite-int8"
QUANTIZERS = ("litert", "mlir")  # the first wins ties: it needs no TensorFlow-private entry point
NAMES = {"litert": "LiteRT Quantizer (litert-quantizer)", "mlir": "TensorFlow MLIR quantizer (mlir_quantize)"}
COSINE_TIE = 1e-3  # passing routes whose logit cosines are this close are equally faithful
DECISIVE_TIE = 0.01  # ... and whose top-1 agreement on decisive crops is within one percentage point
COST_TIE = 0.10  # export time or peak memory within 10 % of each other is a tie
SPEED_ROUNDS_FACTOR = 3  # the two files are timed 3x as long as make bench times each format: they are close


def _peak_rss_mib() -> float:
    """This process's peak resident memory: ``VmHWM``, the high-water mark of its own address space.

    Not ``getrusage``'s ``ru_maxrss``: that keeps the maximum across ``exec``, so a process started from a parent
    holding TensorFlow and a model (forked, then exec'd) reports the parent's size (measured: 1,298 MiB for a
    step whose own peak was 364 MiB, as ``/usr/bin/time -v`` also said).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- the measured processes -------------------------------------------------------------------------------------


def _child_export(args: argparse.Namespace) -> dict[str, Any]:
    """One ``export()`` as a user runs it (model from its file, no verification), phase by phase."""
    started = time.perf_counter()
    from resnet_edge._lazy import import_keras
    from resnet_edge.calibration import CalibrationSet
    from resnet_edge.exporter import export

    import_keras()
    imports_s = time.perf_counter() - started
    rss_after_import = _peak_rss_mib()
    calibration = CalibrationSet.from_source(args.data, tuple(args.size), args.calib_count)
    messages: list[tuple[float, str]] = []
    begun = time.perf_counter()
    export(args.model, FORMAT, args.artifact, calibration=calibration, verify=False, quantizer=args.quantizer,
           progress=lambda message: messages.append((time.perf_counter(), message)))
    ended = time.perf_counter()
    phases = {}
    marks = [*messages, (ended, "end")]
    for (at, message), (next_at, _) in itertools.pairwise(marks):
        phases[message] = round(next_at - at, 2)
    report = {"quantizer": args.quantizer, "imports_s": round(imports_s, 2), "export_s": round(ended - begun, 2),
              "phases_s": phases, "rss_after_tf_import_mib": round(rss_after_import),
              "peak_rss_mib": round(_peak_rss_mib())}
    if args.float_out:  # the float .tflite LiteRT Quantizer started from (kept by the export), for the next step
        from resnet_edge.backends.tflite.convert import float_tflite
        from resnet_edge.exporter import load_source
        from resnet_edge.models.resnet import logits_model

        Path(args.float_out).write_bytes(float_tflite(logits_model(load_source(Path(args.model))[0])))
    return report


def _child_quantize(args: argparse.Namespace) -> dict[str, Any]:
    """LiteRT Quantizer's step alone, from the float ``.tflite``: what a machine without TensorFlow can run."""
    started = time.perf_counter()
    from resnet_edge.backends.tflite.convert import litert_quantize
    from resnet_edge.calibration import CalibrationSet

    imports_s = time.perf_counter() - started
    calibration = CalibrationSet.from_source(args.data, tuple(args.size), args.calib_count)
    float_model = Path(args.float_model).read_bytes()
    begun = time.perf_counter()
    Path(args.artifact).write_bytes(litert_quantize(float_model, calibration))
    seconds = time.perf_counter() - begun
    return {"imports_s": round(imports_s, 2), "quantize_s": round(seconds, 2), "peak_rss_mib": round(_peak_rss_mib()),
            "tensorflow_imported": "tensorflow" in sys.modules}


def _run_child(kind: str, report: Path, **options: Any) -> dict[str, Any]:
    """Run this file as a fresh process (``--child kind``) and return its report, with the process's wall time."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--report", str(report)]
    for name, value in options.items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        command += [flag, *map(str, value)] if isinstance(value, (list, tuple)) else [flag, str(value)]
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if finished.returncode != 0:
        tail = (finished.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{kind} ({options.get('quantizer', '')}) failed: {tail}")
    result = json.loads(report.read_text())
    result["process_wall_s"] = round(wall, 2)
    return result


# --- the comparison ---------------------------------------------------------------------------------------------


def _parity_figures(report: Any) -> dict[str, Any]:
    return {"passed": report.passed, "compared": report.compared, "cosine": report.cosine,
            "max_rel": report.max_rel, "top1_agreement": report.top1_agreement, "decisive": report.decisive,
            "decisive_top1": report.decisive_top1, "top5_overlap": report.top5_overlap, "samples": report.samples,
            "failures": report.failures, "line": report.line()}


def _graph(path: Path) -> dict[str, Any]:
    """The file's op sequence and I/O types: whether the two routes write the same graph."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    ops = [op["op_name"] for op in interpreter._get_ops_details()]
    io = [(d["name"], np.dtype(d["dtype"]).name, [float(d["quantization"][0]), int(d["quantization"][1])])
          for d in (*interpreter.get_input_details(), *interpreter.get_output_details())]
    return {"ops": len(ops), "op_sequence": ops, "io": io, "bytes": path.stat().st_size}


def _between(paths: dict[str, Path], images: Any) -> dict[str, Any]:
    """How far the two int8 files are from each other on the parity images."""
    import numpy as np

    from resnet_edge.parity import run_outputs
    from resnet_edge.predictor import load

    outputs = []
    for quantizer in QUANTIZERS:
        with load(paths[quantizer], device="cpu") as predictor:
            outputs.append(run_outputs(predictor, images)[0])
    a, b = outputs
    return {"identical_rows": float(np.all(a == b, axis=1).mean()), "max_abs_diff": float(np.abs(a - b).max()),
            "top1_agreement": float((a.argmax(1) == b.argmax(1)).mean())}


def _timings(paths: dict[str, Path], settings: Any) -> dict[str, Any]:
    from resnet_edge.cpu import usable_cores
    from resnet_edge.latency import measure_together
    from resnet_edge.predictor import load

    predictors = {q: load(paths[q], device="cpu", threads=usable_cores()) for q in QUANTIZERS}
    try:
        results = measure_together(predictors, batch_size=1, warmup=settings.warmup,
                                   min_time_s=settings.min_time_s * SPEED_ROUNDS_FACTOR)
    finally:
        for predictor in predictors.values():
            predictor.close()
    timed = {}
    for quantizer, result in results.items():
        if isinstance(result, Exception):
            raise result
        timed[quantizer] = {"p50_ms": result.p50_ms, "noise_ms": result.noise_ms, "p90_ms": result.p90_ms,
                            "runs": result.runs, "rounds": result.rounds, "noisy": result.noisy}
    return timed


def _close(a: float, b: float, tolerance: float) -> bool:
    return abs(a - b) <= tolerance * min(a, b)


def decide_quantizer(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Which quantizer is better, by parity first, then speed, then export cost; ties go to LiteRT Quantizer.

    Parity: a route that fails parity loses; two passing routes are as faithful when their top-1 agreement on
    decisive crops is within ``DECISIVE_TIE`` and their logit cosine within ``COSINE_TIE``, else the higher top-1
    (then cosine) wins. Speed: a p50 difference counts only outside the two files' noise (``optimize.tied``, the
    rule ``optimize`` chooses by). Export cost: the export process's peak RSS, then the ``export()`` call's time,
    each counting only when more than ``COST_TIE`` apart.
    """
    from types import SimpleNamespace

    from resnet_edge.optimize import tied

    litert, mlir = results["litert"], results["mlir"]
    steps = []

    def verdict(winner: str, why: str) -> dict[str, Any]:
        steps.append(why)
        return {"chosen": winner, "decided_by": why, "steps": steps, "rule": decide_quantizer.__doc__.split("\n\n")[1]
                .replace("\n    ", " ").strip()}

    passed = {q: results[q]["parity"]["passed"] for q in QUANTIZERS}
    if passed["litert"] != passed["mlir"]:
        return verdict("litert" if passed["litert"] else "mlir", "parity: only one passes")
    a, b = litert["parity"], mlir["parity"]
    top1 = (a["decisive_top1"] or 0.0, b["decisive_top1"] or 0.0)
    if abs(top1[0] - top1[1]) > DECISIVE_TIE:
        return verdict("litert" if top1[0] > top1[1] else "mlir", "parity: top-1 on decisive crops")
    if abs(a["cosine"] - b["cosine"]) > COSINE_TIE:
        return verdict("litert" if a["cosine"] > b["cosine"] else "mlir", "parity: logit cosine")
    steps.append("parity: as good (both pass; decisive top-1 and cosine within the tie bands)")

    speed = {q: SimpleNamespace(p50_ms=results[q]["latency"]["p50_ms"], noise_ms=results[q]["latency"]["noise_ms"])
             for q in QUANTIZERS}
    if not tied(speed["litert"], speed["mlir"]):
        faster = min(QUANTIZERS, key=lambda q: speed[q].p50_ms)
        return verdict(faster, "speed: p50 outside each other's noise")
    steps.append("speed: within each other's noise")

    for key, label in (("peak_rss_mib", "peak memory"), ("export_s", "export time")):
        costs = (litert["export"][key], mlir["export"][key])
        if not _close(*costs, COST_TIE):
            return verdict("litert" if costs[0] < costs[1] else "mlir", f"export cost: {label}")
        steps.append(f"export cost: {label} within {COST_TIE:.0%}")
    return verdict("litert", "a tie everywhere: the route without TensorFlow-private calls")


def compare_quantizers(out: Path, settings: Any, model_path: Path | None = None, data: str = "photos") -> dict:
    """The head-to-head of tflite-int8's quantizers on ``model_path`` (default: `make bench`'s ResNet-50 @224,
    trained on the photos when not there yet); results in ``<out>/quantizer/quantizer.json`` and ``.md``."""
    from resnet_edge.atomic import atomic_path
    from resnet_edge.calibration import CalibrationSet
    from resnet_edge.exporter import load_source
    from resnet_edge.parity import verify_artifact
    from resnet_edge.registry import FORMATS
    from resnet_edge.report import machine_description

    out = Path(out)
    model_path = Path(model_path) if model_path else photos_resnet50(out, settings)
    folder = out / "artifacts" / "quantizer"
    folder.mkdir(parents=True, exist_ok=True)
    model = load_source(model_path)[0]
    size = tuple(int(v) for v in model.input_shape[1:3])
    common = {"model": model_path, "data": data, "size": size, "calib_count": settings.calib_count}

    results: dict[str, dict[str, Any]] = {q: {"name": NAMES[q]} for q in QUANTIZERS}
    paths = {q: folder / f"{model_path.stem}_{q}.tflite" for q in QUANTIZERS}
    float_path = folder / f"{model_path.stem}_logits_fp32.tflite"
    for quantizer in QUANTIZERS:  # one after the other: never two exports sharing the 2 cores
        say(f"exporting {FORMAT} --quantizer {quantizer} in a fresh process")
        results[quantizer]["export"] = _run_child(
            "export", folder / f"export_{quantizer}.json", quantizer=quantizer, artifact=paths[quantizer],
            float_out=float_path if quantizer == "litert" else None, **common)
    say("LiteRT Quantizer's step alone, from the float .tflite, in a process without TensorFlow")
    results["litert"]["quantize_without_tensorflow"] = _run_child(
        "quantize", folder / "quantize_litert.json", float_model=float_path,
        artifact=folder / f"{model_path.stem}_litert_no_tf.tflite", **{k: common[k] for k in ("data", "size",
                                                                                             "calib_count")})

    calibration = CalibrationSet.from_source(data, size, settings.calib_count)
    count = settings.photo_parity_count if data == "photos" else settings.parity_count
    holdout = calibration.holdout
    for quantizer in QUANTIZERS:
        say(f"parity of --quantizer {quantizer} on {min(count, len(holdout))} held-out images")
        report = verify_artifact(model, paths[quantizer], holdout, count=count, label=f"{FORMAT} ({quantizer})")
        results[quantizer]["parity"] = _parity_figures(report)
        results[quantizer]["graph"] = _graph(paths[quantizer])
    say("timing both files together (XNNPACK, batch 1, interleaved)")
    for quantizer, timing in _timings(paths, settings).items():
        results[quantizer]["latency"] = timing
    graphs = [results[q]["graph"] for q in QUANTIZERS]
    between = {**_between(paths, holdout.sample(count).images),
               "same_op_sequence": graphs[0]["op_sequence"] == graphs[1]["op_sequence"],
               "same_io_types": [io[1] for io in graphs[0]["io"]] == [io[1] for io in graphs[1]["io"]]}
    decision = decide_quantizer(results)
    default = FORMATS[FORMAT].options["quantizer"].default
    decision["registry_default"] = default
    decision["agrees_with_registry"] = decision["chosen"] == default
    summary = {"model": str(model_path), "data": data, "calibration_images": len(calibration),
               "parity_images": min(count, len(holdout)), "machine": machine_description(),
               "results": results, "between": between, "decision": decision}
    target = out / "quantizer"
    target.mkdir(parents=True, exist_ok=True)
    for quantizer in QUANTIZERS:
        results[quantizer]["graph"].pop("op_sequence")
    with atomic_path(target / "quantizer.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    markdown = to_markdown(summary)
    with atomic_path(target / "quantizer.md") as tmp:
        tmp.write_text(markdown)
    print(markdown)
    if not decision["agrees_with_registry"]:
        say(f"warning: the measurements choose --quantizer {decision['chosen']}, the registry's default is {default}")
    return summary


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.2%}"


def to_markdown(summary: dict[str, Any]) -> str:
    """The comparison table, the two files against each other and the decision."""
    machine = summary["machine"]
    cpu = machine.get("cpu") if isinstance(machine, dict) else machine
    lines = [f"# tflite-int8: LiteRT Quantizer vs TensorFlow's MLIR quantizer ({Path(summary['model']).name})", "",
             f"Machine: {cpu}. Calibrated on {summary['calibration_images']} images of {summary['data']}, parity on "
             f"{summary['parity_images']} others; p50 at batch 1 under XNNPACK, both files timed together.", "",
             "| quantizer | parity | cosine (logits) | top-1 agree | top-1 on decisive | top-5 overlap | p50 ms | "
             "file MB | export process s | export() s | peak RSS MiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for result in summary["results"].values():
        parity, latency, export = result["parity"], result["latency"], result["export"]
        decisive = ("" if parity["decisive_top1"] is None
                    else f"{parity['decisive_top1']:.2%} of {parity['decisive']}")
        lines.append(
            f"| {result['name']} | {'ok' if parity['passed'] else '**fails**'} | {parity['cosine']:.6f} | "
            f"{_pct(parity['top1_agreement'])} | {decisive} | {_pct(parity['top5_overlap'])} | "
            f"{latency['p50_ms']:.2f} ± {latency['noise_ms']:.2f} | {result['graph']['bytes'] / 1e6:.2f} | "
            f"{export['process_wall_s']:.1f} | {export['export_s']:.1f} | {export['peak_rss_mib']:,} |")
    lines.append("")
    for quantizer, result in summary["results"].items():
        phases = ", ".join(f"{message.split(' on ')[0]} {seconds:.1f} s"
                           for message, seconds in result["export"]["phases_s"].items())
        lines.append(f"- {quantizer} export phases: {phases}")
    alone = summary["results"]["litert"].get("quantize_without_tensorflow")
    if alone:
        lines.append(f"- LiteRT Quantizer's step alone from the float .tflite, TensorFlow "
                     f"{'imported' if alone['tensorflow_imported'] else 'never imported'}: "
                     f"{alone['quantize_s']:.1f} s, process {alone['process_wall_s']:.1f} s, "
                     f"peak RSS {alone['peak_rss_mib']:,} MiB")
    between = summary["between"]
    lines += [f"- The two files: same op sequence {between['same_op_sequence']}, same I/O types "
              f"{between['same_io_types']}; identical output rows {between['identical_rows']:.2%}, top-1 agreement "
              f"with each other {between['top1_agreement']:.2%}, max |diff| {between['max_abs_diff']:.3g}", ""]
    decision = summary["decision"]
    lines += [f"**Decision: `--quantizer {decision['chosen']}`** ({decision['decided_by']}; "
              f"registry default: {decision['registry_default']}).", "",
              "Steps: " + "; ".join(decision["steps"]) + ".", "", f"Rule: {decision['rule']}", ""]
    return "\n".join(lines)


# --- command line -----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="results folder")
    parser.add_argument("--quick", action="store_true", help="smoke run on the digits ResNet-18 @32")
    # a measured process (this file run by compare_quantizers):
    parser.add_argument("--child", choices=("export", "quantize"), help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--quantizer", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--artifact", help=argparse.SUPPRESS)
    parser.add_argument("--float-out", help=argparse.SUPPRESS)
    parser.add_argument("--float-model", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--calib-count", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        report = (_child_export if args.child == "export" else _child_quantize)(args)
        args.report.write_text(json.dumps(report))
        return 0

    if args.quick:
        compare_quantizers(args.out, QUICK, model_path=digits_model(args.out, QUICK, quick=True), data="digits")
    else:
        compare_quantizers(args.out, FULL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
