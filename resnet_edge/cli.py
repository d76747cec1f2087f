"""``resnet-edge``: build, train, export, predict, parity and benchmark from the shell.

Each command only parses, calls the public API and prints; heavy libraries are imported inside the
commands so ``resnet-edge --help`` starts without TensorFlow.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from .errors import DataError, InvalidArgumentError, ResnetEdgeError
from .metadata import RESIZE_DESCRIPTIONS, RESIZE_POLICIES, check_policy
from .registry import BACKENDS, DEVICE_HELP, FORMATS, Option, known_suffixes

app = typer.Typer(
    name="resnet-edge",
    help="Keras ResNet to a fast, verified model on an edge device (ONNX, TFLite, TensorRT).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Tables keep their columns when piped to a file or CI log (rich would assume 80 columns there).
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON summary only.")]
RESIZE_HELP = (f"How frames of another shape reach the input size ({', '.join(RESIZE_POLICIES)}); "
               "recorded in the model and followed by every artifact.")
ResizeOption = Annotated[str, typer.Option(help=RESIZE_HELP)]
DEVICE_TEXT = "auto (the first that works), " + ", ".join(f"{name} ({text})" for name, text in DEVICE_HELP.items()) + "."
DeviceOption = Annotated[str, typer.Option(help=DEVICE_TEXT)]
BackendOption = Annotated[str | None, typer.Option(help=f"Run with this backend instead of the one the suffix names "
                                                        f"({', '.join(BACKENDS)}; e.g. an .onnx with openvino).")]
RAY_HELP = ("Run on Ray (pip install 'resnet-edge[scale]'): a local Ray on 127.0.0.1 when no ADDRESS is given "
            "(or $RAY_ADDRESS when set), else the cluster at ADDRESS (auto, HOST:6379 or ray://HOST:10001).")
RayOption = Annotated[str | None, typer.Option("--ray", metavar="[ADDRESS]", help=RAY_HELP)]
OPTIONAL_VALUES = {"--ray": "local"}  # options whose value may be left out


def parse_size(text: str) -> tuple[int, int]:
    """``224`` or ``224x160`` (height x width)."""
    try:
        parts = [int(p) for p in text.lower().replace(",", "x").split("x")]
    except ValueError:
        raise InvalidArgumentError(f"input size must be N or HxW, got {text!r}") from None
    if len(parts) == 1:
        return parts[0], parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise InvalidArgumentError(f"input size must be N or HxW, got {text!r}")


def say(message: str) -> None:
    err.print(message, style="dim", markup=False)


def warn(message: object) -> None:
    sys.stderr.write(f"warning: {' '.join(str(message).split())}\n")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


# build / train / info -----------------------------------------------------------------------

@app.command()
def build(
    name: Annotated[str, typer.Argument(help="resnet18, resnet34, resnet50, resnet101 or resnet152.")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Model file to write (.keras or .h5).")] = Path("model.keras"),
    input_size: Annotated[str, typer.Option(help="Input side N or HxW (at least 32).")] = "224",
    classes: Annotated[int, typer.Option(help="Number of output classes.")] = 1000,
    head: Annotated[str, typer.Option(help="paper (GAP + softmax) or seed (GAP, Dropout, Dense 1024, Dropout, Dense).")] = "paper",
    preprocessing: Annotated[str, typer.Option(help="scale (x/255), caffe (keras.applications ResNet weights), torch, tf or none.")] = "scale",
    weights: Annotated[Path | None, typer.Option(help="Local .h5 / .weights.h5 weights, loaded by layer name.")] = None,
    labels: Annotated[Path | None, typer.Option(help="Text file with one class label per line.")] = None,
    resize: ResizeOption = "squash",
    as_json: JsonFlag = False,
) -> None:
    """Write a ResNet model file from a name and an input shape."""
    from .models import build_resnet
    from .models.io import describe, save_model

    height, width = parse_size(input_size)
    check_policy(resize)
    label_list = _read_labels(labels) if labels else None
    model = build_resnet(name, (height, width, 3), num_classes=classes, head=head,
                         preprocessing=preprocessing, weights=weights)
    save_model(model, out_path, describe(model, label_list, resize=resize))
    summary = {"path": str(out_path), "model": name, "input_shape": [height, width, 3],
               "parameters": int(model.count_params()), "resize": resize}
    print_json(summary) if as_json else out.print(f"wrote {out_path} ({name}, {model.count_params():,} parameters)")


def _read_labels(path: Path) -> list[str]:
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except OSError as exc:
        raise InvalidArgumentError(f"{path}: cannot read labels ({exc.strerror})") from exc
    return [line for line in lines if line]


@app.command()
def train(
    model: Annotated[str, typer.Option("--model", "-m", help="Architecture name, or a .keras file to fine-tune.")] = "resnet18",
    data: Annotated[str, typer.Option(help="'digits' or an image folder with one subfolder per class.")] = "digits",
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Model file to write.")] = Path("model.keras"),
    input_size: Annotated[str, typer.Option(help="Input side N or HxW (new models).")] = "32",
    epochs: Annotated[int, typer.Option(min=1)] = 5,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    lr: Annotated[float, typer.Option(help="Initial learning rate (cosine-decayed).")] = 1e-3,
    val_split: Annotated[float, typer.Option(help="Fraction held out for validation.")] = 0.2,
    head: Annotated[str, typer.Option(help="paper or seed (new models).")] = "paper",
    weights: Annotated[Path | None, typer.Option(help="Initial weights (.h5/.weights.h5), head skipped if it differs.")] = None,
    freeze_backbone: Annotated[bool, typer.Option(help="Train only the head (fine-tuning).")] = False,
    flip: Annotated[bool, typer.Option(help="Random horizontal flips.")] = False,
    resize: Annotated[str | None, typer.Option(help=RESIZE_HELP + " Default: the model file's own, else squash.")] = None,
    seed: int = 0,
    as_json: JsonFlag = False,
) -> None:
    """Train from scratch or fine-tune on an image folder or the built-in digits; writes the model atomically."""
    from .data import load_dataset
    from .models import build_resnet
    from .models.io import describe, load_model, save_model
    from .models.resnet import load_weights
    from .train import freeze_backbone as freeze
    from .train import train as fit

    policy = check_policy(resize) if resize is not None else None
    if Path(model).suffix in (".keras", ".h5"):
        keras_model, metadata = load_model(model)
        size = tuple(int(v) for v in keras_model.input_shape[1:3])
        policy = policy or metadata.resize
    else:
        size = parse_size(input_size)
        keras_model = None
    policy = policy or "squash"
    dataset = load_dataset(data, size, policy)
    dataset.check_trainable()
    if keras_model is None:
        keras_model = build_resnet(model, (*size, 3), num_classes=len(dataset.class_names), head=head)
    if weights is not None:
        load_weights(keras_model, weights, skip_mismatch=True)
    if freeze_backbone:
        freeze(keras_model)
    if not as_json:
        say(f"training {keras_model.name} on {dataset.source}: {len(dataset)} images, "
            f"{len(dataset.class_names)} classes, {size[0]}x{size[1]} ({policy})")
    result = fit(keras_model, dataset, epochs=epochs, batch_size=batch_size, learning_rate=lr,
                 val_fraction=val_split, flip=flip, seed=seed, verbose=0 if as_json else 1, resize=policy)
    save_model(keras_model, out_path, describe(keras_model, dataset.class_names, resize=policy))
    summary = {"path": str(out_path), "model": keras_model.name, "val_accuracy": result.val_accuracy,
               "train_accuracy": result.train_accuracy, "epochs": result.epochs, "resize": policy,
               "seconds": round(result.seconds, 1), "train_images": result.train_images, "val_images": result.val_images}
    if as_json:
        print_json(summary)
    else:
        out.print(f"validation accuracy {result.val_accuracy:.2%} after {epochs} epochs "
                  f"({result.seconds:.0f} s); wrote {out_path}")


@app.command()
def info(
    path: Annotated[Path, typer.Argument(help="A model or exported artifact.")],
    as_json: JsonFlag = False,
) -> None:
    """Show an artifact's depth, parameters, FLOPs, input, labels and preprocessing."""
    from .artifact import read_metadata

    metadata = read_metadata(path)
    summary: dict[str, Any] = {"path": str(path), "size_bytes": path.stat().st_size}
    if path.suffix in (".keras", ".h5"):
        from .models.io import load_model
        from .models.resnet import SPECS, count_macs

        model, metadata = load_model(path)
        spec = SPECS.get(model.name)
        summary.update(parameters=int(model.count_params()), macs=count_macs(model),
                       depth=None if spec is None else int(name_depth(model.name)),
                       block="bottleneck" if spec and spec.bottleneck else "basic" if spec else None)
    if metadata is not None:
        summary["metadata"] = json.loads(metadata.to_json())
    if as_json:
        print_json(summary)
        return
    table = Table(show_header=False, box=None)
    rows = [("file", f"{path} ({summary['size_bytes'] / 1e6:.1f} MB)")]
    if "parameters" in summary:
        rows += [("model", f"{model.name} ({summary['block']} blocks)" if summary["block"] else model.name),
                 ("parameters", f"{summary['parameters']:,}"),
                 ("FLOPs", f"{summary['macs'] / 1e9:.2f} G multiply-adds per image")]
    if metadata is not None:
        labels = ", ".join(metadata.labels[:10]) + (" …" if len(metadata.labels) > 10 else "")
        rows += [("format", f"{metadata.format} ({metadata.precision})"),
                 ("input", f"{metadata.layout} {'x'.join(map(str, metadata.input_shape))} {metadata.input_dtype} "
                           f"{metadata.color_order} " + (f"{metadata.input_range[0]:g}-{metadata.input_range[1]:g}"
                                                         if metadata.preprocessing != "none" else
                                                         "in whatever range the network was trained on")),
                 ("resize", f"{metadata.resize} ({RESIZE_DESCRIPTIONS[metadata.resize]})"),
                 ("preprocessing", f"{metadata.preprocessing} (inside the model)" if metadata.preprocessing != "none"
                  else "none: the input goes to the network as it is (a keras.applications model expects its "
                       "preprocess_input: export with --preprocessing caffe|torch|tf)"),
                 ("labels", f"{metadata.num_classes}: {labels}" if metadata.labels else "none")]
        outputs = {"softmax": "probabilities (softmax inside)",
                   "linear": "logits (predict() applies the softmax in float)"}.get(metadata.output_activation or "")
        if outputs:
            rows.append(("output", outputs))
        if metadata.extra.get("float_layers"):
            rows.append(("kept float", ", ".join(metadata.extra["float_layers"])))
        if metadata.input_quantization:
            q = metadata.input_quantization
            rows.append(("input quantization", f"scale {q.scale:g}, zero point {q.zero_point}"))
        if metadata.source_sha256:
            rows.append(("source sha256", metadata.source_sha256[:16] + "…"))
        rows.append(("tools", ", ".join(f"{k} {v}" for k, v in sorted(metadata.tools.items()))))
    else:
        rows.append(("metadata", "none embedded"))
    for key, value in rows:
        table.add_row(f"[bold]{key}[/bold]", value)
    out.print(table)


def name_depth(name: str) -> int:
    return int(name.removeprefix("resnet"))


# export -------------------------------------------------------------------------------------

def _format_options() -> list[inspect.Parameter]:
    """One CLI option per export option in the format rows, its help naming the formats that take it."""
    uses: dict[str, list[tuple[str, Option]]] = {}
    for fmt in FORMATS.values():
        for option in fmt.options.values():
            uses.setdefault(option.name, []).append((fmt.name, option))
    parameters = []
    for name, pairs in uses.items():
        by_help: dict[str, list[str]] = {}
        for fmt_name, option in pairs:
            by_help.setdefault(option.help, []).append(fmt_name)
        text = " ".join(f"{', '.join(names)}: {help_text}" for help_text, names in by_help.items())
        option = pairs[0][1]
        kind = {tuple: str, bool: bool, Path: Path}.get(option.kind, option.kind)
        if kind is bool:
            info = typer.Option(option.flag, help=text, metavar="")
        else:
            info = typer.Option(help=text, metavar="|".join(map(str, option.choices)) if option.choices else None)
        parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                            annotation=Annotated[kind | None, info]))
    return parameters


def with_format_options(command):
    """Give ``command`` the format rows' options as flags; it receives them as ``format_options``."""
    signature = inspect.signature(command, eval_str=True)
    base = [p for p in signature.parameters.values() if p.name != "format_options"]
    extra = _format_options()
    names = {p.name for p in extra}

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        given = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
        return command(**kwargs, format_options=given)

    wrapper.__signature__ = signature.replace(parameters=base + extra)
    wrapper.__annotations__ = {p.name: p.annotation for p in base + extra}
    return wrapper


@app.command()
@with_format_options
def export(
    model: Annotated[Path, typer.Argument(help="Keras model (.keras/.h5).")],
    formats: Annotated[str, typer.Option("--format", "-f", help=f"{', '.join(FORMATS)} (comma-separated for several).")],
    out_path: Annotated[str | None, typer.Option("--out", "-o", help="Output file (one format) or folder (several, "
                                                 "or a path ending in / or without a suffix).")] = None,
    calib_data: Annotated[str | None, typer.Option(help="Calibration images: digits, an image folder or an .npy file.")] = None,
    calib_count: Annotated[int, typer.Option(help="Calibration samples (stratified over classes).")] = 300,
    verify_data: Annotated[str | None, typer.Option(help="Images for the parity check (default: the calibration hold-out; see the README's verification rule).")] = None,
    verify: Annotated[bool, typer.Option(help="Check the artifact against the Keras model before succeeding.")] = True,
    max_drop: Annotated[float | None, typer.Option(help="int8: accuracy budget in percentage points; layers losing the most are kept float until it is met.")] = None,
    max_float_layers: Annotated[int, typer.Option(min=1, help="With --max-drop: most layers kept in float.")] = 12,
    keep_best: Annotated[bool, typer.Option(help="With --max-drop: write the best artifact even when the budget is not met (exit code stays 2).")] = False,
    calib_report: Annotated[bool, typer.Option(help="int8: also calibrate on half the set and show how agreement and ranges change.")] = False,
    preprocessing: Annotated[str | None, typer.Option(help="For a model with no preprocessing inside (keras.applications): caffe, torch, tf or scale, put in front so the artifact takes RGB 0-255.")] = None,
    as_json: JsonFlag = False,
    format_options: dict[str, Any] | None = None,
) -> None:
    """Export a Keras model; the artifact is written atomically, carries its metadata and is verified."""
    from .export import export_formats
    from .fallback import AccuracyBudget

    if max_drop is None and (keep_best or max_float_layers != 12):
        raise InvalidArgumentError("--keep-best and --max-float-layers apply only with --max-drop")
    budget = None if max_drop is None else AccuracyBudget(max_drop, max_float_layers, keep_best)

    def show(result) -> None:
        if as_json:
            return
        out.print(f"[green]✓[/green] {result.format}: {result.path} ({result.size_bytes / 1e6:.1f} MB, "
                  f"{result.seconds:.1f} s)")
        for line in result.calibration_report.lines() if result.calibration_report else ():
            out.print(f"  {line}")

    results = export_formats(model, formats.split(","), out_path, calib_data=calib_data, calib_count=calib_count,
                             verify_data=verify_data, verify=verify, budget=budget, calib_report=calib_report,
                             preprocessing=preprocessing, progress=None if as_json else say, on_result=show,
                             **(format_options or {}))
    if as_json:
        summaries = [r.summary() for r in results]
        print_json(summaries[0] if len(summaries) == 1 else summaries)


# predict / parity ---------------------------------------------------------------------------

@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help=f"Any artifact: {', '.join(known_suffixes())}.")],
    inputs: Annotated[list[str] | None, typer.Argument(help="Images, folders or globs.")] = None,
    device: DeviceOption = "auto",
    backend: BackendOption = None,
    top_k: Annotated[int, typer.Option(min=1)] = 5,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    threads: Annotated[int | None, typer.Option(min=1, help="Runtime CPU threads.")] = None,
    strict: Annotated[bool, typer.Option(help="Fail on the first unreadable image instead of skipping it.")] = False,
    skip_missing: Annotated[bool, typer.Option(help="Skip paths that do not exist (and globs or folders with no "
                                                "image) instead of failing.")] = False,
    source: Annotated[str | None, typer.Option(help="Video file or camera index: per-frame labels and FPS.")] = None,
    max_frames: Annotated[int | None, typer.Option(min=1, help="With --source: stop after N frames.")] = None,
    live: Annotated[bool | None, typer.Option("--live/--no-live", metavar="", help="With --source: drop stale frames to stay "
                                              "current (default: cameras and URLs yes, files no).")] = None,
    as_json: JsonFlag = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV rows (source,rank,label,index,score).")] = False,
    ray: RayOption = None,
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="With --ray: folder of Parquet shards "
                                                 "(path, labels, indices, scores, error; default predictions/); "
                                                 "a rerun resumes it.")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="With --ray: model actors (default: one per GPU, "
                                                "else one per CPU of the cluster).")] = None,
    shard_size: Annotated[int, typer.Option(min=1, help="With --ray: images per Parquet shard (the unit of resume).")] = 1024,
) -> None:
    """Label images (or a video stream) with any exported model; on Ray with --ray (inputs may be .parquet/.csv path lists)."""
    from rich.progress import Progress

    from .runtime import load
    from .runtime.base import expand_input

    if not inputs and source is None:
        raise InvalidArgumentError("give images, folders or globs to label, or --source VIDEO|CAMERA")
    if as_json and as_csv:
        raise InvalidArgumentError("--json and --csv cannot be combined")
    if ray is None and (out_dir is not None or workers is not None or shard_size != 1024):
        raise InvalidArgumentError("--out, --workers and --shard-size apply only with --ray")
    if ray is not None:
        given = [flag for flag, used in (("--source", source is not None), ("--csv", as_csv), ("--strict", strict),
                                         ("--backend", backend is not None), ("--threads", threads is not None))
                 if used]
        if given:
            raise InvalidArgumentError(f"{', '.join(given)} cannot be combined with --ray "
                                       "(each Ray worker runs one thread and writes Parquet)")
        _predict_on_ray(model, inputs or [], ray, out_dir or Path("predictions"), device, top_k, batch_size,
                        workers, shard_size, as_json)
        return
    with load(model, device=device, backend=backend, threads=threads) as predictor:
        if not (as_json or as_csv):
            say(f"{model.name}: {predictor.backend.name} on {predictor.device}")
        if source is not None:
            _predict_video(predictor, source, top_k, max_frames, as_json, live)
            return
        items = [path for item in inputs or [] for _, path in expand_input(item, skip_missing)]
        if not items:
            raise InvalidArgumentError(f"no images found in {' '.join(inputs or [])}")
        predictions, skipped = [], []
        with Progress(console=err, transient=True, disable=len(items) <= batch_size) as progress:
            task = progress.add_task("predicting", total=len(items))
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                run = predictor.predict(chunk, top_k=top_k, batch_size=batch_size, strict=strict,
                                        skip_missing=skip_missing)
                predictions += run.predictions
                skipped += run.skipped
                progress.advance(task, len(chunk))
    _print_predictions(predictions, skipped, as_json, as_csv)
    if not predictions:
        raise DataError(f"none of the {len(items)} input(s) could be read (first: {skipped[0]})")


def _predict_on_ray(model: Path, inputs: list[str], address: str, out_dir: Path, device: str, top_k: int,
                    batch_size: int, workers: int | None, shard_size: int, as_json: bool) -> None:
    from .scale.score import score

    summary = score(model, inputs, out_dir, top_k=top_k, address=address, workers=workers, device=device,
                    batch_size=batch_size, shard_size=shard_size, progress=None if as_json else say)
    if as_json:
        print_json(summary.to_dict() | {"parts": len(summary.parts)})
        return
    resumed = f", {summary.shards_skipped} already done" if summary.shards_skipped else ""
    out.print(f"scored {summary.scored} images ({summary.unreadable} unreadable) into {summary.shards} shards in "
              f"{out_dir}{resumed}; {summary.images_per_s:.1f} images/s on {summary.workers} worker(s), {summary.device}")
    if summary.first_unreadable:
        warn(f"{summary.unreadable} unreadable image(s), first: {summary.first_unreadable}")


def _print_predictions(predictions, skipped: list[str], as_json: bool, as_csv: bool) -> None:
    if as_json:
        print_json({"predictions": [p.__dict__ for p in predictions], "skipped": skipped})
        return
    if as_csv:
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(["source", "rank", "label", "index", "score"])
        for p in predictions:
            for rank, (label, index, score) in enumerate(zip(p.labels, p.indices, p.scores, strict=True), 1):
                writer.writerow([p.source, rank, label, index, f"{score:.6f}"])
    else:
        table = Table()
        table.add_column("input", overflow="fold")
        table.add_column("top-k (label probability)")
        for p in predictions:
            table.add_row(p.source, "  ".join(f"[bold]{label}[/bold] {score:.3f}" if rank == 0 else f"{label} {score:.3f}"
                                             for rank, (label, score) in enumerate(zip(p.labels, p.scores, strict=True))))
        out.print(table)
    if skipped:
        warn(f"skipped {len(skipped)} unreadable input(s), first: {skipped[0]}")


def _predict_video(predictor, source: str, top_k: int, max_frames: int | None, as_json: bool,
                   live: bool | None = None) -> None:
    from .video import run_video

    def show(frame) -> None:
        if not as_json:
            best = frame.prediction
            labels = ", ".join(f"{label} ({score:.3f})" for label, score in zip(best.labels, best.scores, strict=True))
            out.print(f"frame {frame.index}: {labels}  {frame.fps:.1f} FPS  {frame.capture_latency_ms:.1f} ms")

    summary = run_video(predictor, source, top_k=top_k, max_frames=max_frames, on_frame=show, live=live)
    if as_json:
        print_json(dataclasses.asdict(summary))
    else:
        ending = "interrupted" if summary.interrupted else "done"
        out.print(f"{ending}: {summary.frames} frames in {summary.seconds:.1f} s ({summary.mean_fps:.1f} FPS, "
                  f"steady {summary.steady_fps:.1f} FPS), {summary.dropped} dropped, "
                  f"capture-to-result p50 {summary.latency_p50_ms:.1f} ms, "
                  + ("capture beside the model" if summary.overlapped else
                     "capture between model calls (the model's threads take every core; --threads N frees one)"))


@app.command()
def parity(
    paths: Annotated[list[Path], typer.Argument(help="MODEL.keras then ARTIFACT... (only artifacts with --load-outputs).")],
    data: Annotated[str, typer.Option(help="digits, an image folder or an .npy file.")] = "digits",
    n: Annotated[int, typer.Option("--n", min=1, help="Images to compare on (stratified sample).")] = 500,
    device: DeviceOption = "auto",
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    save_outputs: Annotated[Path | None, typer.Option(help="Save the reference outputs and images (.npz) for another machine.")] = None,
    load_outputs: Annotated[Path | None, typer.Option(help="Compare against reference outputs saved with --save-outputs.")] = None,
    ray: RayOption = None,
    workers: Annotated[int | None, typer.Option(min=1, help="With --ray: comparing actors (default: one per GPU, "
                                                "else one per CPU of the cluster).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Compare artifacts with the float model on real images; exit 1 when any is outside its tolerance.

    With --ray, every image of the --data folder is compared on Ray (no --n sample) and the figures are
    reduced exactly: the same report as in-process on the same images.
    """
    from .parity import check_artifacts

    if ray is None and workers is not None:
        raise InvalidArgumentError("--workers applies only with --ray")
    if ray is not None:
        _parity_on_ray(paths, data, ray, workers, device, batch_size, save_outputs, load_outputs, as_json)
        return
    reference, candidates = (None, paths) if load_outputs is not None else (paths[0], paths[1:])
    reports = check_artifacts(reference, candidates, data, count=n, device=device, batch_size=batch_size,
                              save_outputs=save_outputs, load_outputs=load_outputs, progress=None if as_json else say)
    if as_json:
        print_json([r.to_dict() for r in reports])
    elif reports:
        _print_parity(reports)
    if not all(reports):
        raise typer.Exit(1)


def _parity_on_ray(paths: list[Path], data: str, address: str, workers: int | None, device: str, batch_size: int,
                   save_outputs: Path | None, load_outputs: Path | None, as_json: bool) -> None:
    from .scale.parity import parity_on_ray

    if save_outputs is not None or load_outputs is not None:
        raise InvalidArgumentError("--save-outputs and --load-outputs cannot be combined with --ray")
    if len(paths) < 2:
        raise InvalidArgumentError("give the Keras model and at least one artifact to compare")
    if paths[0].suffix not in (".keras", ".h5"):
        raise InvalidArgumentError(f"{paths[0]}: the reference must be a Keras model (.keras/.h5)")
    reports, unreadable = parity_on_ray(paths[0], paths[1:], data, address=address, workers=workers, device=device,
                                        batch_size=batch_size, progress=None if as_json else say)
    if as_json:
        print_json([r.to_dict() for r in reports])
    else:
        _print_parity(reports)
    if unreadable:
        warn(f"left out {len(unreadable)} unreadable image(s), first: {unreadable[0]}")
    if not all(reports):
        raise typer.Exit(1)


def _print_parity(reports) -> None:
    table = Table("artifact", "precision", "calib", "status", "compared", "max|err|", "mean|err|", "cosine", "top-1",
                  "top-1 decisive", "top-5", "accuracy (Δ)")
    for r in reports:
        accuracy = "–" if r.candidate_accuracy is None else f"{r.candidate_accuracy:.2%} ({r.accuracy_delta:+.2%})"
        decisive = "–" if r.decisive_top1 is None else f"{r.decisive_top1:.2%} of {r.decisive}"
        table.add_row(
            r.name, r.precision + (f" (ran {r.ran})" if r.ran else ""), str(r.calibration_images or "–"), "[green]pass[/green]" if r else "[red]FAIL[/red]",
            r.compared, f"{r.max_abs:.3g}", f"{r.mean_abs:.3g}", f"{r.cosine:.6f}",
            "–" if r.top1_agreement is None else f"{r.top1_agreement:.2%}", decisive,
            "–" if r.top5_agreement is None else f"{r.top5_agreement:.2%}", accuracy,
        )
    out.print(table)
    for data in dict.fromkeys(r.data for r in reports if r.data):
        out.print(f"verified on {data}")
    for r in reports:
        if not r:
            out.print(f"[red]{r.name}[/red]: " + "; ".join(r.failures), markup=True)
            if r.worst_layers:
                out.print("  layers losing most: " + ", ".join(f"{name} ({error:.3g})" for name, error in r.worst_layers))


# benchmark ----------------------------------------------------------------------------------

@app.command()
def benchmark(
    path: Annotated[Path, typer.Argument(help="An artifact, or a Keras model with --all.")],
    all_formats: Annotated[bool, typer.Option("--all", help="Export every format this machine runs; one table.")] = False,
    formats: Annotated[str | None, typer.Option(help="With --all: comma-separated formats (default: all).")] = None,
    data: Annotated[str, typer.Option(help="With --all: calibration/parity images (digits, folder, .npy).")] = "digits",
    device: DeviceOption = "auto",
    backend: BackendOption = None,
    batch_size: Annotated[str, typer.Option(help="Batch sizes, comma-separated (e.g. 1,8).")] = "1",
    threads: Annotated[int | None, typer.Option(min=1, help="Runtime threads (default: every usable core).")] = None,
    warmup: Annotated[int, typer.Option(min=0)] = 10,
    min_time_s: Annotated[float, typer.Option(min=0.0, help="Measure at least this long per batch size.")] = 5.0,
    end_to_end: Annotated[bool, typer.Option(help="Time predict() from uint8 frames instead of the raw call.")] = False,
    frame: Annotated[str | None, typer.Option(help="Also time predict() on camera frames of this size: 720p, 1080p, 4k or WxH.")] = None,
    n: Annotated[int, typer.Option("--n", min=0, help="With --all: parity images (0 skips parity).")] = 500,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="With --all: folder for artifacts and reports.")] = Path("benchmark"),
    as_json: JsonFlag = False,
) -> None:
    """Latency (mean/std/p50/p90/p99), throughput and memory of an artifact, or of every format with --all."""
    from .benchmark import rows_to_dict, run_all
    from .latency import benchmark_artifact, parse_frame
    from .report import format_table, machine_description, write_reports

    try:
        sizes = [int(v) for v in batch_size.split(",") if v.strip()]
    except ValueError:
        raise InvalidArgumentError(f"--batch-size must be comma-separated integers, got {batch_size!r}") from None
    if not sizes or min(sizes) < 1:
        raise InvalidArgumentError("batch sizes must be at least 1")
    frame_size = parse_frame(frame) if frame is not None else None
    if not all_formats:
        if formats is not None:
            raise InvalidArgumentError("--formats applies only with --all")
        results = benchmark_artifact(path, device=device, batch_sizes=sizes, threads=threads, warmup=warmup,
                                     min_time_s=min_time_s, end_to_end=end_to_end, frame=frame_size, backend=backend)
        if as_json:
            print_json([r.to_dict() for r in results])
            return
        table = Table("batch", "input", "load s", "first ms", "mean ms", "std ms", "p50 ms", "p90 ms", "p99 ms",
                      "images/s", "RSS MiB")
        for r in results:
            table.add_row(str(r.batch_size), r.input, f"{r.load_s:.2f}", f"{r.first_inference_ms:.1f}",
                          f"{r.mean_ms:.2f}", f"{r.std_ms:.2f}", f"{r.p50_ms:.2f}", f"{r.p90_ms:.2f}",
                          f"{r.p99_ms:.2f}", f"{r.throughput:.1f}", f"{r.rss_peak_mib:.0f}")
        machine = machine_description()
        out.print(f"{path.name} on {results[0].backend}/{results[0].device}, "
                  f"{machine['cpu']} ({machine['usable_cores']} usable cores)")
        out.print(table)
        for raw, framed in zip(results[::2], results[1::2], strict=True) if frame_size else ():
            out.print(f"batch {raw.batch_size}: a {framed.input} costs {framed.p50_ms - raw.p50_ms:+.2f} ms "
                      f"({framed.p50_ms / raw.p50_ms:.2f}x) over the raw call (p50)")
        for r in results:
            if r.warning:
                warn(r.warning)
        return
    if path.suffix not in (".keras", ".h5"):
        raise InvalidArgumentError(f"{path}: --all needs the Keras model (.keras/.h5) to export from")
    if len(sizes) != 1:
        raise InvalidArgumentError("--all measures one batch size at a time")
    if backend is not None:
        raise InvalidArgumentError("--backend applies to one artifact, not --all (each format has its own backend)")
    if frame_size is not None:
        raise InvalidArgumentError("--frame applies to one artifact, not --all")
    chosen = None if formats is None else [f.strip() for f in formats.split(",") if f.strip()]
    rows = run_all(path, out_dir, formats=chosen, data=data, device=device, batch_size=sizes[0],
                   min_time_s=min_time_s, warmup=warmup, parity_count=n, threads=threads,
                   progress=None if as_json else say)
    command = "resnet-edge " + " ".join(sys.argv[1:]) if sys.argv[1:] else None
    if not as_json:
        out.print(format_table(rows))
    written = write_reports(rows, out_dir, f"{path.name}: formats on this machine", machine_description(), command)
    if as_json:
        print_json({"rows": rows_to_dict(rows), "reports": {k: str(v) for k, v in written.items()}})
    else:
        out.print(f"reports: {', '.join(str(p) for p in written.values())}")


@app.command()
def optimize(
    model: Annotated[Path, typer.Argument(help="Keras model (.keras/.h5).")],
    max_drop: Annotated[float, typer.Option(help="Accuracy budget in percentage points below the float model "
                                            "(top-1 agreement when the data's labels are not the model's).")] = 1.0,
    formats: Annotated[str | None, typer.Option(help="Comma-separated formats to try (default: every format).")] = None,
    data: Annotated[str, typer.Option(help="Calibration and parity images: digits, an image folder or an .npy file.")] = "digits",
    device: DeviceOption = "auto",
    batch_size: Annotated[int, typer.Option(min=1)] = 1,
    threads: Annotated[int | None, typer.Option(min=1, help="Runtime threads (default: every usable core).")] = None,
    min_time_s: Annotated[float, typer.Option(min=0.0, help="Measure each candidate at least this long.")] = 3.0,
    n: Annotated[int, typer.Option("--n", min=1, help="Parity images.")] = 500,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for the candidates, the chosen artifact and the receipt.")] = Path("optimized"),
    as_json: JsonFlag = False,
) -> None:
    """Export every format this machine runs, verify each, keep the fastest within --max-drop; the table is the receipt."""
    from .optimize import optimize as run_optimize
    from .optimize import summary_lines
    from .report import format_table

    chosen = None if formats is None else [f.strip() for f in formats.split(",") if f.strip()]
    command = "resnet-edge " + " ".join(sys.argv[1:]) if sys.argv[1:] else None
    result = run_optimize(model, out_dir, max_drop=max_drop, formats=chosen, data=data, device=device,
                          batch_size=batch_size, threads=threads, min_time_s=min_time_s, parity_count=n,
                          progress=None if as_json else say, command=command)
    if as_json:
        print_json(result.to_dict())
        return
    out.print(format_table(result.rows))
    for line in summary_lines(result):
        out.print(line)


@app.command()
def serve(
    model: Annotated[Path, typer.Argument(help=f"Any artifact: {', '.join(known_suffixes())}.")],
    host: Annotated[str, typer.Option(help="Address to listen on. Anything but loopback exposes the model to the "
                                           "network with no authentication.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    replicas: Annotated[int, typer.Option(min=1, help="Model replicas; the cluster's CPUs are shared among them.")] = 1,
    max_batch: Annotated[int, typer.Option(min=1, help="Most requests one model call takes.")] = 16,
    batch_wait_ms: Annotated[float, typer.Option(min=0.0, help="How long a batch waits to fill.")] = 5.0,
    top_k: Annotated[int, typer.Option(min=1, help="Labels per answer (a request may ask ?top_k=N).")] = 5,
    device: DeviceOption = "auto",
    max_body_mb: Annotated[float, typer.Option(min=0.001, help="Largest request body; bigger ones get 413.")] = 10.0,
    ray: RayOption = None,
) -> None:
    """Serve a model over HTTP on Ray Serve: POST /predict (image bytes) gives top-k JSON, GET /health; Ctrl-C stops."""
    from .scale.serve import run_server

    def ready(url: str) -> None:
        say(f"serving {model.name} at {url} (max batch {max_batch}, wait {batch_wait_ms:g} ms, {replicas} replica(s)); "
            "Ctrl-C stops")
        say(f"  curl --data-binary @image.jpg {url}/predict")

    def message(text: str) -> None:
        if text.startswith("warning: "):
            warn(text.removeprefix("warning: "))
        else:
            say(text)

    run_server(model, host=host, port=port, replicas=replicas, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
               top_k=top_k, device=device, max_body_bytes=int(max_body_mb * 2**20), address=ray,
               on_ready=ready, on_message=message)
    say("stopped")


def fail(message: str, code: int) -> None:
    sys.stderr.write(f"error: {' '.join(message.split())}\n")
    sys.exit(code)


def fill_optional_values(argv: list[str]) -> list[str]:
    """``--ray`` with no value (last, or before another option) becomes ``--ray=local``."""
    filled = []
    for position, token in enumerate(argv):
        following = argv[position + 1] if position + 1 < len(argv) else None
        if token in OPTIONAL_VALUES and (following is None or following.startswith("-")):
            token = f"{token}={OPTIONAL_VALUES[token]}"
        filled.append(token)
    return filled


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors on stderr, exit code 2 (130 on Ctrl-C)."""
    warnings.showwarning = lambda message, *args, **kwargs: warn(message)
    command = typer.main.get_command(app)
    try:
        args = fill_optional_values(sys.argv[1:] if argv is None else list(argv))
        code = command.main(args=args, prog_name="resnet-edge", standalone_mode=False)
    except ResnetEdgeError as exc:
        fail(str(exc), 2)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except OSError as exc:
        fail(f"{exc.filename or 'file system'}: {exc.strerror or exc}", 2)
    except Exception as exc:
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # the CLI library's usage errors
            fail(exc.format_message(), exc.exit_code)
        raise
    if code == 130:  # the CLI library turns Ctrl-C into exit code 130
        sys.stderr.write("interrupted\n")
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
