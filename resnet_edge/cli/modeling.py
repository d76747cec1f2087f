"""Commands on a Keras model: build, train, info."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..metadata import RESIZE_DESCRIPTIONS
from .common import RESIZE_HELP, JsonFlag, ResizeOption, app, out, parse_size, print_json, say


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
    from ..models.io import build_file

    summary = build_file(name, out_path, input_size=parse_size(input_size), classes=classes, head=head,
                         preprocessing=preprocessing, weights=weights, labels=labels, resize=resize)
    if as_json:
        print_json(summary)
    else:
        out.print(f"wrote {out_path} ({name}, {summary['parameters']:,} parameters)")


@app.command()
def train(
    model: Annotated[str, typer.Option("--model", "-m", help="Architecture name, or a .keras file to fine-tune.")] = "resnet18",
    data: Annotated[str, typer.Option(help="'digits', 'photos' or an image folder with one subfolder per class.")] = "digits",
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
    from ..train import train_file

    summary = train_file(model, data, out_path, input_size=parse_size(input_size), epochs=epochs,
                         batch_size=batch_size, learning_rate=lr, val_split=val_split, head=head, weights=weights,
                         freeze=freeze_backbone, flip=flip, resize=resize, seed=seed, verbose=0 if as_json else 1,
                         progress=None if as_json else say)
    if as_json:
        print_json(summary)
    else:
        out.print(f"validation accuracy {summary['val_accuracy']:.2%} after {summary['epochs']} epochs "
                  f"({summary['seconds']:.0f} s); wrote {out_path}")


@app.command()
def info(
    path: Annotated[Path, typer.Argument(help="A model or exported artifact.")],
    as_json: JsonFlag = False,
) -> None:
    """Show an artifact's depth, parameters, FLOPs, input, labels and preprocessing."""
    from ..info import describe_file

    summary = describe_file(path)
    if as_json:
        print_json(summary)
        return
    table = Table(show_header=False, box=None)
    for key, value in _rows(summary):
        table.add_row(f"[bold]{key}[/bold]", value)
    out.print(table)


def _rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    from ..metadata import ModelMetadata

    rows = [("file", f"{summary['path']} ({summary['size_bytes'] / 1e6:.1f} MB)")]
    if "parameters" in summary:
        rows += [("model", f"{summary['model']} ({summary['block']} blocks)" if summary["block"] else summary["model"]),
                 ("parameters", f"{summary['parameters']:,}"),
                 ("FLOPs", f"{summary['macs'] / 1e9:.2f} G multiply-adds per image")]
    if "metadata" not in summary:
        return [*rows, ("metadata", "none embedded")]
    import json

    metadata = ModelMetadata.from_json(json.dumps(summary["metadata"]))
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
    return rows
