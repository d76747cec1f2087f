"""Commands that make artifacts: export (one library call per request), and formats (the registry's table)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import InvalidArgumentError
from ..registry import FORMATS
from .common import JsonFlag, app, out, print_json, say, with_format_options


@app.command()
@with_format_options
def export(
    model: Annotated[Path, typer.Argument(help="Keras model (.keras/.h5).")],
    formats: Annotated[str, typer.Option("--format", "-f", help=f"{', '.join(FORMATS)} (comma-separated for several).")],
    out_path: Annotated[str | None, typer.Option("--out", "-o", help="Output file (one format) or folder (several, "
                                                 "or a path ending in / or without a suffix).")] = None,
    calib_data: Annotated[str | None, typer.Option(help="Calibration images: photos, digits, an image folder or an .npy file.")] = None,
    calib_count: Annotated[int, typer.Option(help="Calibration samples (stratified over classes; a small folder keeps 20% back to verify on).")] = 300,
    verify_data: Annotated[str | None, typer.Option(help="Images for the parity check (default: the calibration hold-out; see the README's verification rule).")] = None,
    verify: Annotated[bool, typer.Option(help="Check the artifact against the Keras model before succeeding.")] = True,
    max_drop: Annotated[float | None, typer.Option(help="int8: accuracy budget in percentage points; layers losing the most are kept float until it is met.")] = None,
    max_float_layers: Annotated[int, typer.Option(min=1, help="With --max-drop: most layers kept in float.")] = 12,
    keep_best: Annotated[bool, typer.Option(help="With --max-drop: write the best artifact even when the budget is not met (exit code stays 2).")] = False,
    calib_report: Annotated[bool, typer.Option(help="int8: also calibrate on half the set and show how agreement and ranges change.")] = False,
    preprocessing: Annotated[str | None, typer.Option(help="For a model with no preprocessing inside (keras.applications): caffe, torch, tf or scale, put in front so the artifact takes RGB 0-255.")] = None,
    task: Annotated[str | None, typer.Option(help="What the model is for, when its outputs do not say: classifier, "
                                             "features or embedding (default: a softmax or labels make a "
                                             "classifier, several or spatial outputs features, else an embedding).")] = None,
    labels: Annotated[Path | None, typer.Option(help="Text file with one class label per line, for a model without "
                                                "its own (keras.applications): as many as the model has outputs; "
                                                "stored in the artifact.")] = None,
    as_json: JsonFlag = False,
    format_options: dict[str, Any] | None = None,
) -> None:
    """Export a Keras model; the artifact is written atomically, carries its metadata and is verified."""
    from ..exporter import export_formats
    from ..fallback import AccuracyBudget

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
                             preprocessing=preprocessing, labels=labels, task=task, progress=None if as_json else say,
                             on_result=show,
                             **(format_options or {}))
    if as_json:
        summaries = [r.summary() for r in results]
        print_json(summaries[0] if len(summaries) == 1 else summaries)


@app.command()
def formats(
    runs_here: Annotated[bool, typer.Option("--runs-here", help="Only the formats this machine can run.")] = False,
    cpu: Annotated[bool, typer.Option("--cpu", help="Only the formats whose runtime runs on a CPU.")] = False,
    names: Annotated[bool, typer.Option("--names", help="Print the names only, comma-separated (for scripts).")] = False,
    as_json: JsonFlag = False,
) -> None:
    """The export formats: suffix, precision, runtime, the pip extra each needs, options, and whether it runs here."""
    from ..benchmark import format_table

    rows = format_table(runs_here=runs_here, cpu=cpu)
    if names:
        out.print(",".join(row["format"] for row in rows))
    elif as_json:
        print_json(rows)
    else:
        table = Table("format", "suffix", "precision", "runtime", "export needs", "runs with", "here", "options")
        for row in rows:
            table.add_row(row["format"], row["suffix"], row["precision"], row["runtime"], escape(f"[{row['export_extra']}]"),
                          escape(f"[{row['run_extra']}]"), row["here"], ", ".join(row["options"]) or "–")
        out.print(table)
        out.print("extras: pip install 'resnet-edge[EXTRA,...]'", markup=False)
        for install, names in _grouped(rows).items():
            out.print(f"exporting {', '.join(names)} also needs: {install}", markup=False)


def _grouped(rows) -> dict[str, list[str]]:
    notes: dict[str, list[str]] = {}
    for row in rows:
        if row["install"]:
            notes.setdefault(row["install"], []).append(row["format"])
    return notes
