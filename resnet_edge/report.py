"""Benchmark tables written as JSON, CSV, Markdown and a PNG chart, plus a description of the machine.

Every output shows the same figures: the p50 (which ranks), its noise (the round-to-round spread) with the word
``noisy`` where the spread exceeds ``latency.NOISY_CV`` of the p50, and FPS from the p50.
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import platform
import shutil
import subprocess
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from ._lazy import lazy_import
from .atomic import atomic_path
from .benchmark import COLUMNS, FormatRow, rows_to_dict
from .cpu import usable_cores
from .errors import MissingDependencyError
from .latency import NOISY_CV
from .metadata import tool_versions
from .registry import BACKENDS, REFERENCE

Row = FormatRow | Mapping[str, Any]

TOOLS = ("resnet-edge", "numpy")  # and every runtime's own, from its row (BackendEntry.tools)
LATENCY_FIELDS = ("mean_ms", "p90_ms", "p99_ms", "std_ms", "spread", "rounds", "runs", "first_inference_ms",
                  "rss_peak_mib")
CSV_FIELDS = (*(key for _, key in COLUMNS), "noisy", "precision", "export_s", "batch_size", "threads",
              *LATENCY_FIELDS, "path")
NOISY = "noisy"
LEGEND = ("p50 is the median of every timed call, the formats timed together in interleaved rounds; noise is "
          "the round-to-round spread of the median (1.4826 × MAD of the per-round medians), marked **noisy** "
          f"above {NOISY_CV:.0%} of the p50; FPS is batch size × 1000 / p50.")


def _as_dicts(rows: Sequence[Row]) -> list[dict[str, Any]]:
    return [dict(r) if isinstance(r, Mapping) else rows_to_dict([r])[0] for r in rows]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> list[str]:
    """NVIDIA GPUs named by ``nvidia-smi``; empty where there is none (never raises)."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return []
    try:
        done = subprocess.run([tool, "--query-gpu=name,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


def machine_description() -> dict[str, Any]:
    """CPU, cores, memory, OS, Python and tool versions: what a latency figure means nothing without."""
    return {
        "cpu": _cpu_model(),
        "machine": platform.machine(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": usable_cores(),
        "ram_gib": round(psutil.virtual_memory().total / (1 << 30), 1),
        "gpus": _gpus(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": tool_versions(*TOOLS, *(t for row in BACKENDS.values() for t in row.tools)),
    }


def _cell(key: str, row: Mapping[str, Any]) -> str:
    """A table cell: ratios as percentages, times and sizes to a sensible precision, blanks as a dash; the
    noise as ``±x`` followed by ``noisy`` where the row is flagged."""
    value = row.get(key)
    if value is None:
        return "—"
    if key == "noise_ms":
        return f"±{value:.2g}" + (f" {NOISY}" if row.get("noisy") else "")
    if key in ("top1_agreement", "accuracy"):
        return f"{value:.2%}"
    if key == "speedup":
        return f"{value:.2f}×"
    if key == "fps":
        return f"{value:.1f}"
    if key in ("size_mb", "p50_ms"):
        return f"{value:.3g}" if value < 1 else f"{value:.2f}"
    return str(value)


def _fact(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_fact(v)}" for k, v in value.items()) or "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


def _csv_value(row: Mapping[str, Any], key: str) -> Any:
    if key in LATENCY_FIELDS:
        return (row.get("latency") or {}).get(key)
    return row.get(key)


def _write_json(path: Path, title: str, rows: list[dict[str, Any]], machine: Mapping[str, Any],
                command: str | None, extra: Mapping[str, Any] | None = None) -> None:
    document = {"title": title, "command": command, "machine": dict(machine), **(extra or {}), "rows": rows}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(document, indent=2, default=str) + "\n")


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_FIELDS)
        writer.writerows([_csv_value(row, key) for key in CSV_FIELDS] for row in rows)


def markdown_table(rows: Sequence[Row]) -> str:
    """The format table as GitHub Markdown, one row per format."""
    lines = ["| " + " | ".join(name for name, _ in COLUMNS) + " |",
             "|" + "|".join("---" if key in ("format", "status") else "---:" for _, key in COLUMNS) + "|"]
    for row in _as_dicts(rows):
        cells = (_cell(key, row).replace("|", "\\|") for _, key in COLUMNS)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _markdown(title: str, rows: list[dict[str, Any]], machine: Mapping[str, Any], command: str | None,
              chart: str | None, extra: Mapping[str, Any] | None = None) -> str:
    versions = machine.get("versions") or {}
    facts = [f"- **{key.replace('_', ' ')}**: {_fact(value)}" for key, value in machine.items() if key != "versions"]
    facts += [f"- **{name}** {version}" for name, version in versions.items()]
    batch = rows[0].get("batch_size", 1) if rows else 1
    threads = rows[0].get("threads") if rows else None
    setup = f"Batch size {batch}" + (f", {threads} thread(s) per runtime" if threads else "")
    first = str(rows[0].get("format")) if rows else REFERENCE
    baseline = ("the Keras p50 over the format's p50" if first == REFERENCE
                else f"the p50 of {first} (the first row) over each row's p50")
    parts = [f"# {title}", "", f"{setup}; speed-up is {baseline}. {LEGEND}", ""]
    parts += [f"- **{key.replace('_', ' ')}**: {_fact(value)}" for key, value in (extra or {}).items()]
    parts += ["", markdown_table(rows), ""] if extra else [markdown_table(rows), ""]
    if chart:
        parts += [f"![latency and size per format]({chart})", ""]
    parts += ["## Machine", "", *facts, ""]
    if command:
        parts += ["## Command", "", "```", command, "```", ""]
    return "\n".join(parts)


def _passed(status: str) -> bool:
    """``ok``, or tied with ``optimize``'s pick: a row that works, drawn and styled as such."""
    return status == "ok" or status.startswith("tied with")


def _bar_chart(axes: Any, rows: list[dict[str, Any]], key: str, label: str, noise: str | None = None) -> None:
    """Horizontal bars of ``key`` per format; a format without a value shows its status instead.

    With ``noise`` (the latency chart), each bar carries an error bar of that key's value, and a noisy row's
    bar is hatched and labelled ``noisy``.
    """
    names = [row["format"] for row in rows]
    values = [row.get(key) or 0.0 for row in rows]
    positions = list(range(len(rows)))
    colors = ["#2ca02c" if row.get("status") == "chosen" else "#4c72b0" if _passed(str(row.get("status", "")))
              else "#b0b0b0" for row in rows]  # optimize's pick green; formats that did not pass grey
    errors = [(row.get(noise) or 0.0) if noise else 0.0 for row in rows]
    bars = axes.barh(positions, values, color=colors, xerr=errors if noise else None, ecolor="#333333",
                     capsize=3)
    axes.set_yticks(positions, names)
    axes.invert_yaxis()
    axes.set_xlabel(label)
    top = max((v + e for v, e in zip(values, errors, strict=True)), default=0.0) or 1.0
    axes.set_xlim(0, top * 1.45)
    for bar, row, value, error in zip(bars, rows, values, errors, strict=True):
        if row.get(key) is None:
            note = f"missing: {row.get('status', '')}"[:60]
        else:
            note = f"{value:.3g}" + (f" ±{error:.2g}" if noise and error else "")
            if noise and row.get("noisy"):
                bar.set_hatch("///")
                bar.set_edgecolor("#d62728")
                note += f" {NOISY}"
        axes.text(bar.get_width() + error + top * 0.01, bar.get_y() + bar.get_height() / 2, note, va="center",
                  fontsize=7, color="#d62728" if noise and row.get("noisy") else "black")


def _write_png(path: Path, title: str, rows: list[dict[str, Any]]) -> None:
    lazy_import("matplotlib", extra="report")
    figure_module = importlib.import_module("matplotlib.figure")
    agg = importlib.import_module("matplotlib.backends.backend_agg")
    figure = figure_module.Figure(figsize=(11, 1.2 + 0.45 * max(len(rows), 1)), dpi=100, layout="constrained")
    agg.FigureCanvasAgg(figure)
    latency_axes, size_axes = figure.subplots(1, 2)
    _bar_chart(latency_axes, rows, "p50_ms", "p50 latency (ms, lower is better; ± noise, hatched = noisy)",
               noise="noise_ms")
    _bar_chart(size_axes, rows, "size_mb", "size (MB)")
    figure.suptitle(title)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


def write_reports(
    rows: Sequence[Row],
    out_dir: str | os.PathLike[str],
    title: str,
    machine: Mapping[str, Any],
    command: str | None = None,
    stem: str = "benchmark",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``<stem>.json/.csv/.md/.png`` into ``out_dir`` atomically; returns their paths by kind.

    ``extra`` facts (what ``optimize`` chose and why) head the JSON document and the Markdown page.
    """
    out_dir = Path(out_dir)
    table = _as_dicts(rows)
    paths = {kind: out_dir / f"{stem}.{kind}" for kind in ("json", "csv", "md", "png")}
    _write_json(paths["json"], title, table, machine, command, extra)
    _write_csv(paths["csv"], table)
    try:
        _write_png(paths["png"], title, table)
    except MissingDependencyError as exc:
        warnings.warn(f"no chart written: {exc}", stacklevel=2)
        paths.pop("png")
    with atomic_path(paths["md"]) as tmp:
        tmp.write_text(_markdown(title, table, machine, command, paths.get("png", Path()).name or None, extra))
    return paths


def format_table(rows: Sequence[Row]) -> Any:
    """The format table as a ``rich`` Table for the terminal; failed rows in red, skipped in dim, a noisy
    row's noise cell in yellow with the word ``noisy``; the caption says how to read p50, noise and FPS."""
    from rich.table import Table
    from rich.text import Text

    table = Table(caption=LEGEND.replace("**", ""))
    for name, key in COLUMNS:
        numeric = key not in ("format", "status")
        table.add_column(name, justify="right" if numeric else "left", no_wrap=key != "status",
                         overflow="fold")
    for row in _as_dicts(rows):
        status = str(row.get("status", ""))
        style = ("bold green" if status == "chosen" else None if _passed(status)
                 else "dim" if status.startswith(("skipped", "over budget")) else "red")
        cells = [Text(_cell(key, row), style="bold yellow") if key == "noise_ms" and row.get("noisy")
                 else _cell(key, row) for _, key in COLUMNS]
        table.add_row(*cells, style=style)
    return table


__all__ = ["CSV_FIELDS", "LEGEND", "format_table", "machine_description", "markdown_table", "write_reports"]


def benchmark_formats(model: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, command: str | None = None,
                      **options: Any) -> tuple[list[Any], dict[str, Path]]:
    """``resnet-edge benchmark --all``: the format table of ``benchmark.run_all`` (``options`` are its own), written
    as its receipt (JSON, CSV, Markdown, PNG) beside the artifacts."""
    from .benchmark import run_all

    rows = run_all(model, out_dir, **options)
    written = write_reports(rows, out_dir, f"{Path(model).name}: formats on this machine", machine_description(),
                            command)
    return rows, written


def benchmark_files(paths: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str], *,
                    command: str | None = None, **options: Any) -> tuple[list[Any], dict[str, Path]]:
    """``resnet-edge benchmark A B ...``: the artifacts timed together (``benchmark.benchmark_artifacts``;
    ``options`` are its own), one table written as its receipt (JSON, CSV, Markdown, PNG) into ``out_dir``."""
    from .benchmark import benchmark_artifacts

    rows = benchmark_artifacts(paths, **options)
    names = ", ".join(row.format for row in rows) if len(rows) <= 3 else f"{len(rows)} artifacts"
    written = write_reports(rows, out_dir, f"{names}: timed together on this machine", machine_description(),
                            command)
    return rows, written
