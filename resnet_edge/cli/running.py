"""Commands that run artifacts on images: predict (files, video, or on Ray) and parity."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from ..errors import InvalidArgumentError
from .common import (
    ArtifactArgument,
    BackendOption,
    DeviceOption,
    JsonFlag,
    RayOption,
    app,
    err,
    out,
    print_json,
    say,
    warn,
)


@app.command()
def predict(
    model: ArtifactArgument,
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
    jsonl: Annotated[str | None, typer.Option("--jsonl", metavar="FILE|-", help="With --source: one JSON line per frame "
                                              "(index, timestamp, capture_to_result_ms, labels, indices, scores), "
                                              "written as frames come; - for stdout.")] = None,
    save_video: Annotated[Path | None, typer.Option(help="With --source: write the clip (.mp4, .avi) with the top "
                                                    "label, score and FPS drawn on each frame.")] = None,
    as_json: JsonFlag = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV rows (source,rank,label,index,score).")] = False,
    ray: RayOption = None,
    out_dir: Annotated[str | None, typer.Option("--out", "-o", help="Write the answers to a file: .parquet (any "
                                                "model), .npy (embeddings; paths in NAME.paths.txt), .npz, .csv or "
                                                ".jsonl (a classifier's top-k), or a folder/ (one .npz per image, for "
                                                "large feature maps). With --ray: the folder of Parquet shards "
                                                "(default predictions/); a rerun resumes it.")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="With --ray: model actors (default: one per GPU, "
                                                "else one per CPU of the cluster).")] = None,
    shard_size: Annotated[int, typer.Option(min=1, help="With --ray: images per Parquet shard (the unit of resume).")] = 1024,
) -> None:
    """Label images (or a video stream) with any exported model; on Ray with --ray (inputs may be .parquet/.csv path lists)."""
    if not inputs and source is None:
        raise InvalidArgumentError("give images, folders or globs to label, or --source VIDEO|CAMERA")
    if as_json and as_csv:
        raise InvalidArgumentError("--json and --csv cannot be combined")
    if source is None and (jsonl is not None or save_video is not None):
        raise InvalidArgumentError("--jsonl and --save-video apply only with --source")
    if ray is None and (workers is not None or shard_size != 1024):
        raise InvalidArgumentError("--workers and --shard-size apply only with --ray")
    if out_dir is not None and source is not None:
        raise InvalidArgumentError("--out applies to images; with --source use --jsonl or --save-video")
    if out_dir is not None and as_csv:
        raise InvalidArgumentError("--csv prints the rows; to write them, give --out FILE.csv")
    if ray is not None:
        given = [flag for flag, used in (("--source", source is not None), ("--csv", as_csv), ("--strict", strict),
                                         ("--backend", backend is not None), ("--threads", threads is not None))
                 if used]
        if given:
            raise InvalidArgumentError(f"{', '.join(given)} cannot be combined with --ray "
                                       "(each Ray worker runs one thread and writes Parquet)")
        _predict_on_ray(model, inputs or [], ray, Path(out_dir or "predictions"), device, top_k, batch_size,
                        workers, shard_size, as_json)
        return

    def opened(predictor) -> None:
        if not (as_json or as_csv):
            say(f"{model.name}: {predictor.backend.name} on {predictor.device}")

    if source is not None:
        _predict_video(model, source, device, backend, threads, top_k, max_frames, as_json, live, opened, jsonl,
                       save_video)
        return
    from rich.progress import Progress

    from ..results import predict_images

    with Progress(console=err, transient=True, disable=as_json or as_csv or not err.is_terminal) as bar:
        task = bar.add_task("predicting", total=None)
        result = predict_images(model, inputs or [], out=out_dir, device=device, backend=backend, threads=threads,
                                top_k=top_k, batch_size=batch_size, strict=strict, skip_missing=skip_missing,
                                opened=opened, progress=lambda done, total: bar.update(task, completed=done, total=total))
    if result.task != "classifier" and as_csv:
        raise InvalidArgumentError(f"--csv prints a classifier's top-k; a {result.task} model's answers go to --out")
    if as_json:
        print_json(result.to_dict())
    elif result.out is not None:
        out.print(f"wrote {result.task} answers for {len(result.sources)} image(s) to {result.out}")
    elif result.task == "classifier":
        _print_predictions(result.predictions, [], False, as_csv)
    else:
        _print_shapes(result)
    if result.skipped:
        warn(f"skipped {len(result.skipped)} unreadable input(s), first: {result.skipped[0]}")


def _print_shapes(result) -> None:
    """A backbone's or an embedding's answers on screen: their shapes and a glimpse (the values go to --out)."""
    table = Table()
    table.add_column("input", overflow="fold")
    if result.task == "embedding":
        table.add_column(f"embedding ({result.vectors.shape[1]} values)")
        for source, vector in zip(result.sources, result.vectors, strict=True):
            table.add_row(source, f"|v| {float(np.linalg.norm(vector)):.3f}  " + " ".join(f"{v:.3f}" for v in vector[:6])
                          + " …")
    else:
        for name in result.maps:
            table.add_column(name)
        for index, source in enumerate(result.sources):
            table.add_row(source, *(f"{'x'.join(map(str, maps.shape[1:]))} mean {float(maps[index].mean()):.3f}"
                                    for maps in result.maps.values()))
    out.print(table)
    out.print("(the values: --out FILE.parquet|.npy|.npz or --json)")


def _predict_on_ray(model: Path, inputs: list[str], address: str, out_dir: Path, device: str, top_k: int,
                    batch_size: int, workers: int | None, shard_size: int, as_json: bool) -> None:
    from ..scale.score import score

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


def _predict_video(model: Path, source: str, device: str, backend: str | None, threads: int | None, top_k: int,
                   max_frames: int | None, as_json: bool, live: bool | None, opened, jsonl: str | None = None,
                   save_video: Path | None = None) -> None:
    """Per frame: a line of text, or with ``--jsonl`` a JSON line (``-``: stdout, which then holds only those
    lines); at the end the summary (``--json``: as one JSON document)."""
    from contextlib import ExitStack

    from ..video import JsonLines, run_video_file, video_codec

    lines_to_stdout = jsonl == "-"
    if lines_to_stdout and as_json:
        raise InvalidArgumentError("--jsonl - and --json both print to stdout: give --jsonl a file name")
    if save_video is not None:
        video_codec(save_video)
    with ExitStack() as stack:
        lines = None if jsonl is None else stack.enter_context(JsonLines(jsonl))

        def show(frame) -> None:
            if lines is not None:
                lines(frame)
            if not (as_json or lines_to_stdout):
                best = frame.prediction
                labels = ", ".join(f"{label} ({score:.3f})" for label, score in zip(best.labels, best.scores, strict=True))
                out.print(f"frame {frame.index}: {labels}  {frame.fps:.1f} FPS  {frame.capture_latency_ms:.1f} ms")

        summary = run_video_file(model, source, device=device, backend=backend, threads=threads, top_k=top_k,
                                 max_frames=max_frames, live=live, on_frame=show, opened=opened, save_video=save_video)
    if as_json:
        print_json(dataclasses.asdict(summary))
        return
    report = say if lines_to_stdout else out.print
    ending = "interrupted" if summary.interrupted else "done"
    report(f"{ending}: {summary.frames} frames in {summary.seconds:.1f} s ({summary.mean_fps:.1f} FPS, "
           f"steady {summary.steady_fps:.1f} FPS), {summary.dropped} dropped, "
           f"capture-to-result p50 {summary.latency_p50_ms:.1f} ms, "
           + ("capture beside the model" if summary.overlapped else
              "capture between model calls (the model's threads take every core; --threads N frees one)"))
    for written in (jsonl if jsonl not in (None, "-") else None, summary.saved_video):
        if written is not None:
            report(f"wrote {written}")


@app.command()
def parity(
    paths: Annotated[list[Path], typer.Argument(help="MODEL.keras then ARTIFACT... (only artifacts with --load-outputs).")],
    data: Annotated[str, typer.Option(help="digits, photos, an image folder or an .npy file.")] = "digits",
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
    if ray is None and workers is not None:
        raise InvalidArgumentError("--workers applies only with --ray")
    if ray is not None:
        from ..scale.parity import parity_on_ray

        if save_outputs is not None or load_outputs is not None:
            raise InvalidArgumentError("--save-outputs and --load-outputs cannot be combined with --ray")
        if len(paths) < 2:
            raise InvalidArgumentError("give the Keras model and at least one artifact to compare")
        reports, unreadable = parity_on_ray(paths[0], paths[1:], data, address=ray, workers=workers, device=device,
                                            batch_size=batch_size, progress=None if as_json else say)
        if unreadable:
            warn(f"left out {len(unreadable)} unreadable image(s), first: {unreadable[0]}")
    else:
        from ..parity import check_artifacts

        reference, candidates = (None, paths) if load_outputs is not None else (paths[0], paths[1:])
        reports = check_artifacts(reference, candidates, data, count=n, device=device, batch_size=batch_size,
                                  save_outputs=save_outputs, load_outputs=load_outputs,
                                  progress=None if as_json else say)
    if as_json:
        print_json([r.to_dict() for r in reports])
    elif reports:
        print_parity(reports)
    if not all(reports):
        raise typer.Exit(1)


def print_parity(reports) -> None:
    table = Table("artifact", "precision", "calib", "status", "compared", "max|err|", "mean|err|", "cosine", "top-1",
                  "top-1 decisive", "top-5", "accuracy (Δ)")
    for r in reports:
        accuracy = "–" if r.candidate_accuracy is None else f"{r.candidate_accuracy:.2%} ({r.accuracy_delta:+.2%})"
        decisive = "–" if r.decisive_top1 is None else f"{r.decisive_top1:.2%} of {r.decisive}"
        table.add_row(
            r.name, r.precision + (f" (ran {r.ran})" if r.ran else ""), str(r.calibration_images or "–"),
            "[green]pass[/green]" if r else "[red]FAIL[/red]", r.compared, f"{r.max_abs:.3g}", f"{r.mean_abs:.3g}",
            f"{r.cosine:.6f}", "–" if r.top1_agreement is None else f"{r.top1_agreement:.2%}", decisive,
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
