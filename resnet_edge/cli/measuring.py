"""Commands that measure: benchmark (artifacts timed together, or every format with --all) and optimize."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import InvalidArgumentError
from ..registry import KERAS_SUFFIXES
from .common import BackendOption, DeviceOption, JsonFlag, app, command_line, out, print_json, say, split_list, warn


@app.command()
def benchmark(
    paths: Annotated[list[Path], typer.Argument(metavar="ARTIFACTS", help="Artifacts (several are timed together, one table), or one "
                                                "Keras model with --all.")],
    all_formats: Annotated[bool, typer.Option("--all", help="Export every format this machine runs; one table.")] = False,
    formats: Annotated[str | None, typer.Option(help="With --all: comma-separated formats (default: all).")] = None,
    data: Annotated[str, typer.Option(help="With --all: calibration/parity images (photos, digits, folder, .npy).")] = "digits",
    device: DeviceOption = "auto",
    backend: BackendOption = None,
    batch_size: Annotated[str, typer.Option(help="Batch sizes, comma-separated (e.g. 1,8).")] = "1",
    threads: Annotated[int | None, typer.Option(min=1, help="Runtime threads (default: every usable core).")] = None,
    warmup: Annotated[int, typer.Option(min=0)] = 10,
    min_time_s: Annotated[float, typer.Option(min=0.0, help="Measure at least this long per batch size.")] = 5.0,
    end_to_end: Annotated[bool, typer.Option(help="Time predict() from uint8 frames instead of the raw call.")] = False,
    frame: Annotated[str | None, typer.Option(help="Also time predict() on camera frames of this size: 720p, 1080p, 4k or WxH.")] = None,
    n: Annotated[int, typer.Option("--n", min=0, help="With --all: parity images (0 skips parity).")] = 500,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="With --all or several artifacts: folder for the "
                                          "reports (and --all's artifacts).")] = Path("benchmark"),
    as_json: JsonFlag = False,
) -> None:
    """Latency (p50/p90/p99, noise), throughput and memory of an artifact; several artifacts, or every format with
    --all, timed together in interleaved rounds: one table, written as JSON, CSV, Markdown and PNG."""
    from ..latency import parse_frame

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
        if len(paths) == 1:
            _one_artifact(paths[0], device, sizes, threads, warmup, min_time_s, end_to_end, frame_size, backend,
                          as_json)
        else:
            _several_artifacts(paths, out_dir, device, sizes, threads, warmup, min_time_s, end_to_end, frame_size,
                               backend, as_json)
        return
    if len(paths) != 1:
        raise InvalidArgumentError("--all takes one Keras model; to time artifacts together, leave out --all")
    path = paths[0]
    if path.suffix.lower() not in KERAS_SUFFIXES:
        raise InvalidArgumentError(f"{path}: --all needs the Keras model (.keras/.h5) to export from")
    if len(sizes) != 1:
        raise InvalidArgumentError("--all measures one batch size at a time")
    if backend is not None:
        raise InvalidArgumentError("--backend applies to one artifact, not --all (each format has its own backend)")
    if frame_size is not None:
        raise InvalidArgumentError("--frame applies to one artifact, not --all")
    from ..benchmark import rows_to_dict
    from ..report import benchmark_formats, format_table

    rows, written = benchmark_formats(path, out_dir, command=command_line(), formats=split_list(formats), data=data,
                                      device=device, batch_size=sizes[0], min_time_s=min_time_s, warmup=warmup,
                                      parity_count=n, threads=threads, progress=None if as_json else say)
    if as_json:
        print_json({"rows": rows_to_dict(rows), "reports": {k: str(v) for k, v in written.items()}})
    else:
        out.print(format_table(rows))
        out.print(f"reports: {', '.join(str(p) for p in written.values())}")


def _several_artifacts(paths, out_dir, device, sizes, threads, warmup, min_time_s, end_to_end, frame_size, backend,
                       as_json) -> None:
    from ..benchmark import rows_to_dict
    from ..report import benchmark_files, format_table, machine_description

    if len(sizes) != 1:
        raise InvalidArgumentError("several artifacts are timed at one batch size at a time")
    rows, written = benchmark_files(paths, out_dir, command=command_line(), device=device, batch_size=sizes[0],
                                    threads=threads, warmup=warmup, min_time_s=min_time_s, end_to_end=end_to_end,
                                    frame=frame_size, backend=backend, progress=None if as_json else say)
    if as_json:
        print_json({"rows": rows_to_dict(rows), "reports": {k: str(v) for k, v in written.items()}})
        return
    machine = machine_description()
    out.print(f"{len(rows)} artifacts timed together, batch {sizes[0]}, {rows[0].threads} thread(s) each, on "
              f"{machine['cpu']} ({machine['usable_cores']} usable cores); speed-up is {rows[0].format}'s p50 "
              "over each row's")
    out.print(format_table(rows))
    out.print(f"reports: {', '.join(str(p) for p in written.values())}")


def _one_artifact(path, device, sizes, threads, warmup, min_time_s, end_to_end, frame_size, backend, as_json) -> None:
    from ..benchmark import benchmark_artifact
    from ..report import machine_description

    results = benchmark_artifact(path, device=device, batch_sizes=sizes, threads=threads, warmup=warmup,
                                 min_time_s=min_time_s, end_to_end=end_to_end, frame=frame_size, backend=backend)
    if as_json:
        print_json([r.to_dict() for r in results])
        return
    table = Table("batch", "input", "load s", "first ms", "p50 ms", "noise ms", "p90 ms", "p99 ms", "mean ms",
                  "images/s (p50)", "RSS MiB")
    for r in results:
        table.add_row(str(r.batch_size), r.input, f"{r.load_s:.2f}", f"{r.first_inference_ms:.1f}", f"{r.p50_ms:.2f}",
                      f"±{r.noise_ms:.2f}" + (" noisy" if r.noisy else ""), f"{r.p90_ms:.2f}", f"{r.p99_ms:.2f}",
                      f"{r.mean_ms:.2f}", f"{r.throughput:.1f}", f"{r.rss_peak_mib:.0f}")
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


@app.command()
def optimize(
    model: Annotated[Path, typer.Argument(help="Keras model (.keras/.h5).")],
    max_drop: Annotated[float, typer.Option(help="Accuracy budget in percentage points below the float model "
                                            "(top-1 agreement when the data's labels are not the model's).")] = 1.0,
    formats: Annotated[str | None, typer.Option(help="Comma-separated formats to try (default: every format).")] = None,
    data: Annotated[str, typer.Option(help="Calibration and parity images: photos, digits, an image folder or an .npy file.")] = "digits",
    device: DeviceOption = "auto",
    batch_size: Annotated[int, typer.Option(min=1)] = 1,
    threads: Annotated[int | None, typer.Option(min=1, help="Runtime threads (default: every usable core).")] = None,
    min_time_s: Annotated[float, typer.Option(min=0.0, help="Measure each candidate at least this long.")] = 3.0,
    n: Annotated[int, typer.Option("--n", min=1, help="Parity images.")] = 500,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for the candidates, the chosen artifact and the receipt.")] = Path("optimized"),
    as_json: JsonFlag = False,
) -> None:
    """Export every format this machine runs, verify each, keep the fastest within --max-drop; the table is the receipt."""
    from ..optimize import optimize as run_optimize
    from ..optimize import summary_lines
    from ..report import format_table

    result = run_optimize(model, out_dir, max_drop=max_drop, formats=split_list(formats), data=data, device=device,
                          batch_size=batch_size, threads=threads, min_time_s=min_time_s, parity_count=n,
                          progress=None if as_json else say, command=command_line())
    if as_json:
        print_json(result.to_dict())
        return
    out.print(format_table(result.rows))
    for line in summary_lines(result):
        out.print(line)
