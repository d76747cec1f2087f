"""Benchmark tables written as JSON, CSV, Markdown and a PNG chart, plus a description of the machine."""

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
from .metadata import tool_versions

Row = FormatRow | Mapping[str, Any]

TOOLS = ("resnet-edge", "numpy", "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "onnxruntime-gpu",
         "ai-edge-litert", "tensorrt")
LATENCY_FIELDS = ("mean_ms", "p90_ms", "p99_ms", "std_ms", "runs", "first_inference_ms", "rss_peak_mib")
CSV_FIELDS = (*(key for _, key in COLUMNS), "precision", "export_s", "batch_size", "threads", *LATENCY_FIELDS,
              "path")


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
        "versions": tool_versions(*TOOLS),
    }


def _cell(key: str, value: Any) -> str:
    """A table cell: ratios as percentages, times and sizes to a sensible precision, blanks as a dash."""
    if value is None:
        return "—"
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
        cells = (_cell(key, row.get(key)).replace("|", "\\|") for _, key in COLUMNS)
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
    parts = [f"# {title}", "", f"{setup}; speed-up is the Keras p50 over the format's p50.", ""]
    parts += [f"- **{key.replace('_', ' ')}**: {_fact(value)}" for key, value in (extra or {}).items()]
    parts += ["", markdown_table(rows), ""] if extra else [markdown_table(rows), ""]
    if chart:
        parts += [f"![latency and size per format]({chart})", ""]
    parts += ["## Machine", "", *facts, ""]
    if command:
        parts += ["## Command", "", "```", command, "```", ""]
    return "\n".join(parts)


def _bar_chart(axes: Any, rows: list[dict[str, Any]], key: str, label: str) -> None:
    """Horizontal bars of ``key`` per format; a format without a value shows its status instead."""
    names = [row["format"] for row in rows]
    values = [row.get(key) or 0.0 for row in rows]
    positions = list(range(len(rows)))
    colors = ["#2ca02c" if row.get("status") == "chosen" else "#4c72b0" if row.get("status") == "ok" else "#b0b0b0"
              for row in rows]  # optimize's pick green; formats that did not pass grey
    bars = axes.barh(positions, values, color=colors)
    axes.set_yticks(positions, names)
    axes.invert_yaxis()
    axes.set_xlabel(label)
    top = max(values, default=0.0) or 1.0
    axes.set_xlim(0, top * 1.35)
    for bar, row, value in zip(bars, rows, values, strict=True):
        note = f"{value:.3g}" if row.get(key) is not None else f"missing: {row.get('status', '')}"[:60]
        axes.text(bar.get_width() + top * 0.01, bar.get_y() + bar.get_height() / 2, note, va="center", fontsize=7)


def _write_png(path: Path, title: str, rows: list[dict[str, Any]]) -> None:
    lazy_import("matplotlib", extra="report")
    figure_module = importlib.import_module("matplotlib.figure")
    agg = importlib.import_module("matplotlib.backends.backend_agg")
    figure = figure_module.Figure(figsize=(11, 1.2 + 0.45 * max(len(rows), 1)), dpi=100, layout="constrained")
    agg.FigureCanvasAgg(figure)
    latency_axes, size_axes = figure.subplots(1, 2)
    _bar_chart(latency_axes, rows, "p50_ms", "p50 latency (ms, lower is better)")
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
    """The format table as a ``rich`` Table for the terminal; failed rows in red, skipped in dim."""
    from rich.table import Table

    table = Table()
    for name, key in COLUMNS:
        numeric = key not in ("format", "status")
        table.add_column(name, justify="right" if numeric else "left", no_wrap=key != "status",
                         overflow="fold")
    for row in _as_dicts(rows):
        status = str(row.get("status", ""))
        style = ("bold green" if status == "chosen" else None if status == "ok"
                 else "dim" if status.startswith(("skipped", "over budget")) else "red")
        table.add_row(*(_cell(key, row.get(key)) for _, key in COLUMNS), style=style)
    return table


__all__ = ["CSV_FIELDS", "format_table", "machine_description", "markdown_table", "write_reports"]
