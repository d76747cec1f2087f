"""write_reports(): every file holds the same table; the chart is a real PNG; the machine is described; a noisy
row says so in every output, and FPS comes from the p50."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from resnet_edge.benchmark import FormatRow, rows_to_dict
from resnet_edge.report import (
    CSV_FIELDS,
    _bar_chart,
    format_table,
    machine_description,
    markdown_table,
    write_reports,
)

TRT_SKIPPED = "skipped: needs an NVIDIA GPU with TensorRT"  # what the trt row says here (its row's needs)


def _row(name: str, p50: float | None, size: float | None, status: str = "ok", noise: float = 0.02) -> FormatRow:
    latency = None if p50 is None else {"mean_ms": p50 * 1.1, "p90_ms": p50 * 1.2, "p99_ms": p50 * 1.5,
                                        "std_ms": 0.1, "spread": noise / p50, "rounds": 10, "runs": 50,
                                        "first_inference_ms": 9.0, "rss_peak_mib": 300.0}
    return FormatRow(name, status, size_mb=size, top1_agreement=None if p50 is None else 0.995,
                     accuracy=None if p50 is None else 0.9612, p50_ms=p50, fps=None if p50 is None else 1000 / p50,
                     precision="fp32", latency=latency, noise_ms=None if p50 is None else noise,
                     noisy=p50 is not None and noise > 0.15 * p50)


@pytest.fixture(scope="module")
def rows() -> list[FormatRow]:
    table = [_row("keras", 12.5, 45.1), _row("onnx", 5.0, 44.8), _row("tflite-int8", 2.5, 11.4, noise=1.07),
             _row("onnx-int8", 4.0, 11.6, "exported but failed parity: top-1 agreement 97.00% < 99%"),
             _row("tflite", None, None, "failed: RuntimeError: boom"), _row("trt", None, None, TRT_SKIPPED)]
    for row in table:
        row.speedup = None if row.p50_ms is None else 12.5 / row.p50_ms
    return table


@pytest.fixture(scope="module")
def written(rows: list[FormatRow], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    machine = {"cpu": "Test CPU", "logical_cores": 2, "versions": {"onnxruntime": "1.0"}}
    return write_reports(rows, tmp_path_factory.mktemp("report"), "tiny benchmark", machine,
                         command="python benchmarks/run.py --quick")


def test_all_files_written_without_leftovers(written: dict[str, Path]) -> None:
    assert set(written) == {"json", "csv", "md", "png"}
    folder = written["json"].parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"benchmark.{k}" for k in written)


def test_json_holds_the_same_rows(written: dict[str, Path], rows: list[FormatRow]) -> None:
    document = json.loads(written["json"].read_text())
    assert document["title"] == "tiny benchmark"
    assert document["command"] == "python benchmarks/run.py --quick"
    assert document["machine"]["cpu"] == "Test CPU"
    assert document["rows"] == rows_to_dict(rows)


def test_csv_header_and_rows(written: dict[str, Path], rows: list[FormatRow]) -> None:
    with open(written["csv"], newline="") as handle:
        table = list(csv.reader(handle))
    assert tuple(table[0]) == CSV_FIELDS
    assert len(table) == 1 + len(rows)
    by_name = {line[0]: dict(zip(CSV_FIELDS, line, strict=True)) for line in table[1:]}
    assert float(by_name["onnx"]["p50_ms"]) == 5.0
    assert float(by_name["onnx"]["speedup"]) == pytest.approx(2.5)
    assert float(by_name["keras"]["p99_ms"]) == pytest.approx(18.75)
    assert by_name["tflite"]["p50_ms"] == "" and by_name["tflite"]["status"].startswith("failed")
    assert by_name["tflite-int8"]["noisy"] == "True" and float(by_name["tflite-int8"]["noise_ms"]) == 1.07
    assert by_name["onnx"]["noisy"] == "False" and float(by_name["onnx"]["spread"]) == pytest.approx(0.004)
    assert float(by_name["onnx"]["fps"]) == pytest.approx(1000 / float(by_name["onnx"]["p50_ms"]))


def test_markdown_has_one_row_per_format_with_numbers(written: dict[str, Path], rows: list[FormatRow]) -> None:
    text = written["md"].read_text()
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert table[0].startswith("| Format | Status | Size MB")
    assert len(table) == 2 + len(rows)
    onnx = next(line for line in table if line.startswith("| onnx |"))
    assert "5.00" in onnx and "2.50×" in onnx and "99.50%" in onnx and "96.12%" in onnx and "44.80" in onnx
    assert any(line.startswith("| tflite | failed: RuntimeError: boom |") for line in table)
    assert "Test CPU" in text and "python benchmarks/run.py --quick" in text and "benchmark.png" in text


def test_markdown_marks_the_noisy_row_and_says_fps_is_from_p50(written: dict[str, Path]) -> None:
    text = written["md"].read_text()
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert "| p50 ms | Noise ms | FPS (p50) |" in table[0]
    assert [line.split(" | ")[0] for line in table if "noisy" in line] == ["| tflite-int8"]
    assert "| 2.50 | ±1.1 noisy | 400.0 |" in next(line for line in table if line.startswith("| tflite-int8 |"))
    assert "| 5.00 | ±0.02 | 200.0 |" in next(line for line in table if line.startswith("| onnx |"))
    assert "FPS is batch size × 1000 / p50" in text and "**noisy**" in text


def test_png_is_a_real_chart(written: dict[str, Path]) -> None:
    data = written["png"].read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    with Image.open(written["png"]) as image:
        image.verify()
    with Image.open(written["png"]) as image:
        width, height = image.size
    assert width == 1100 and height >= 300


def test_rows_can_be_plain_dicts(rows: list[FormatRow]) -> None:
    assert markdown_table(rows_to_dict(rows)) == markdown_table(rows)


def test_format_table_for_the_terminal(rows: list[FormatRow]) -> None:
    from rich.console import Console

    table = format_table(rows)
    assert table.row_count == len(rows)
    assert [c.header for c in table.columns][:3] == ["Format", "Status", "Size MB"]
    console = Console(width=200, record=True, color_system=None)
    console.print(table)
    lines = console.export_text().splitlines()
    assert [line.split()[1] for line in lines if "noisy" in line and "│" in line] == ["tflite-int8"]
    assert any("FPS (p50)" in line for line in lines) and "FPS is batch size × 1000 / p50" in " ".join(lines)


def test_the_chart_hatches_and_labels_a_noisy_bar(rows: list[FormatRow]) -> None:
    from matplotlib.figure import Figure

    axes = Figure().subplots()
    _bar_chart(axes, rows_to_dict(rows), "p50_ms", "p50", noise="noise_ms")
    hatched = [bar.get_hatch() for bar in axes.patches]
    assert hatched[2] == "///" and hatched.count("///") == 1  # tflite-int8 only
    labels = [text.get_text() for text in axes.texts]
    assert labels[2] == "2.5 ±1.1 noisy" and labels[1] == "5 ±0.02"
    errorbars = next(c for c in axes.containers if type(c).__name__ == "ErrorbarContainer")
    assert len(errorbars.lines[2][0].get_segments()) == len(rows)  # ± noise drawn on every bar


def test_machine_description() -> None:
    machine = machine_description()
    assert machine["cpu"] and machine["logical_cores"] >= 1 and machine["ram_gib"] > 0
    assert machine["python"].count(".") == 2
    assert "onnxruntime" in machine["versions"]
    json.dumps(machine)


def test_report_module_imports_no_matplotlib() -> None:
    code = "import sys, resnet_edge.report; print('matplotlib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
