"""Commands on a Keras model: build, train, info."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..metadata import RESIZE_DESCRIPTIONS
from .common import RESIZE_HELP, JsonFlag, ResizeOption, app, out, parse_size, print_json, say, split_list


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
    features: Annotated[str | None, typer.Option(help="A backbone instead of a classifier: its outputs, c1-c5, "
                                                 "comma-separated in the order wanted (e.g. c3,c4,c5).")] = None,
    pooling: Annotated[str | None, typer.Option(help="An embedding model instead of a classifier: avg or max "
                                                "pooling of c5 (Keras' include_top=False, pooling=...).")] = None,
    normalize: Annotated[bool, typer.Option(help="With --pooling: L2-normalise the embedding.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Write a ResNet model file: a classifier, a backbone (--features) or an embedding model (--pooling)."""
    from ..models.io import build_file

    summary = build_file(name, out_path, input_size=parse_size(input_size), classes=classes, head=head,
                         preprocessing=preprocessing, weights=weights, labels=labels, resize=resize,
                         features=split_list(features), pooling=pooling, normalize=normalize)
    if as_json:
        print_json(summary)
    else:
        shapes = ", ".join(f"{o['name']} {'x'.join(map(str, o['shape']))}" for o in summary["outputs"])
        out.print(f"wrote {out_path} ({name} {summary['task']}: {shapes}; {summary['parameters']:,} parameters)")


@app.command()
def train(
    model: Annotated[str, typer.Option("--model", "-m", help="Architecture name, or a .keras file to fine-tune.")] = "resnet18",
    data: Annotated[str, typer.Option(help="'digits', 'photos' or an image folder with one subfolder per class.")] = "digits",
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Model file to write.")] = Path("model.keras"),
    input_size: Annotated[str, typer.Option(help="Input side N or HxW (new models).")] = "32",
    epochs: Annotated[int, typer.Option(min=1)] = 5,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    lr: Annotated[float, typer.Option(help="Initial learning rate (decayed by --schedule).")] = 1e-3,
    schedule: Annotated[str, typer.Option(help="Learning rate over the epochs: cosine (to zero), step (/10 at half "
                                          "and at three quarters) or constant.")] = "cosine",
    patience: Annotated[int | None, typer.Option(min=1, help="Stop after N epochs without a better validation "
                                                 "epoch (default: run every epoch; the best is kept anyway).")] = None,
    val_split: Annotated[float, typer.Option(help="Fraction held out for validation.")] = 0.2,
    head: Annotated[str, typer.Option(help="paper or seed (new models).")] = "paper",
    weights: Annotated[Path | None, typer.Option(help="Initial weights (.h5/.weights.h5), head skipped if it differs.")] = None,
    freeze_backbone: Annotated[bool, typer.Option(help="Train only the head (fine-tuning).")] = False,
    unfreeze_at: Annotated[int | None, typer.Option(help="With --freeze-backbone: train the head alone for the first "
                                                    "N epochs, then the whole network (BatchNormalization frozen) "
                                                    "at a tenth of --lr.")] = None,
    flip: Annotated[bool, typer.Option(help="Random horizontal flips.")] = False,
    resize: Annotated[str | None, typer.Option(help=RESIZE_HELP + " Default: the model file's own, else squash.")] = None,
    seed: int = 0,
    as_json: JsonFlag = False,
) -> None:
    """Train from scratch or fine-tune on an image folder or the built-in digits; writes the best epoch's model
    atomically."""
    from ..train import train_file

    summary = train_file(model, data, out_path, input_size=parse_size(input_size), epochs=epochs,
                         batch_size=batch_size, learning_rate=lr, val_split=val_split, head=head, weights=weights,
                         freeze=freeze_backbone, flip=flip, resize=resize, seed=seed, verbose=0 if as_json else 1,
                         schedule=schedule, patience=patience, unfreeze_at=unfreeze_at,
                         progress=None if as_json else say)
    if as_json:
        print_json(summary)
    else:
        out.print(_train_line(summary, out_path), markup=False)


def _train_line(summary: dict[str, Any], out_path: Path) -> str:
    """``best validation accuracy 78.12% at epoch 1 of 4; the last epoch had 25.00%, the best was written (9 s);
    wrote m.keras``"""
    line = (f"best validation accuracy {summary['best_val_accuracy']:.2%} at epoch {summary['best_epoch']} "
            f"of {summary['epochs_run']}")
    if summary["stopped_early"]:
        line += f", stopped early ({summary['epochs']} planned; none better in the last {summary['patience']})"
    if summary["final_val_accuracy"] < summary["best_val_accuracy"]:
        line += f"; the last epoch had {summary['final_val_accuracy']:.2%}, the best was written"
    return line + f" ({summary['seconds']:.0f} s); wrote {out_path}"


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
                 ("FLOPs", f"{summary['macs'] / 1e9:.2f} G multiply-adds per image" if summary["macs"] is not None
                  else "unknown (the input size is not fixed)")]
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
    task = metadata.kind + (" (L2-normalised)" if metadata.normalized else "")
    rows.insert(2 if "parameters" not in (r[0] for r in rows) else 5, ("task", task))
    if metadata.outputs and metadata.kind != "classifier":
        rows.append(("outputs", ", ".join(f"{o.name} {'x'.join(map(str, o.shape))}" + (f" (stride {o.stride})"
                                                                                    if o.stride else "")
                                          for o in metadata.outputs)))
    if metadata.extra.get("float_layers"):
        rows.append(("kept float", ", ".join(metadata.extra["float_layers"])))
    if metadata.input_quantization:
        q = metadata.input_quantization
        rows.append(("input quantization", f"scale {q.scale:g}, zero point {q.zero_point}"))
    if metadata.source_sha256:
        rows.append(("source sha256", metadata.source_sha256[:16] + "…"))
    rows.append(("tools", ", ".join(f"{k} {v}" for k, v in sorted(metadata.tools.items()))))
    return rows
