"""Parity over a whole image folder on Ray: every worker compares batches, the driver reduces exactly.

Workers return per-image statistics (``parity.RowStats``), not outputs, so a million images cost a few
numbers each; the driver concatenates them in image order and reduces them with the function the
in-process check uses. Batches are the in-process batches (the same ``batch_size`` chunks in the same order),
so both give the same report. An unreadable file shifts the later batches by one image; on a runtime whose
float results depend on the batch's make-up, figures may then differ in their last digits.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data import Dataset, scan_folder
from ..errors import DataError, InvalidArgumentError, first_line
from ..parity import DIAGNOSIS_IMAGES, ParityReport, RowStats, reduce_candidate
from .cluster import check_loads, import_ray, plan_workers, quiet_data, session, worker_errors
from .score import TASK_ROWS


def _decode(paths: Sequence[str], size: tuple[int, int], policy: str) -> tuple[list[int], list[np.ndarray], list[str]]:
    """Images fitted to the reference's input: positions kept, images, and one reason per unreadable file."""
    from ..preprocess import load_image

    kept, images, unreadable = [], [], []
    for position, path in enumerate(paths):
        try:
            images.append(load_image(path, size, policy))
            kept.append(position)
        except DataError as exc:
            unreadable.append(first_line(exc))
    return kept, images, unreadable


class ParityActor:
    """The reference model and every candidate, loaded once; one image batch in, each candidate's RowStats out."""

    def __init__(self, model: str, artifacts: list[str], device: str, threads: int, batch_size: int) -> None:
        from ..parity import Comparison
        from ..predictor import load

        self.reference = load(model, device="cpu", threads=threads)
        self.candidates = [load(path, device=device, threads=threads) for path in artifacts]
        self.comparisons = [Comparison(self.reference, c, batch_size=batch_size) for c in self.candidates]

    def compare(self, paths: Sequence[str]) -> dict[str, Any]:
        kept, images, unreadable = _decode(paths, self.reference.input_spec.size, self.reference.resize_policy)
        stats = []
        if images:
            data = Dataset(np.stack(images), None, (), "batch")
            for candidate, comparison in zip(self.candidates, self.comparisons, strict=True):
                stats.append(comparison.stats(data.resized(candidate.input_spec.size, candidate.resize_policy).images))
        return {"kept": kept, "stats": stats, "unreadable": unreadable,
                "candidates": [comparison.info for comparison in self.comparisons]}

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        results = [self.compare(list(paths)) for paths in batch["paths"]]
        return {"batch": batch["batch"], "result": np.array([pickle.dumps(r) for r in results], dtype=object)}


def list_labelled(data: str | os.PathLike[str]) -> tuple[list[str], np.ndarray | None, tuple[str, ...]]:
    """An image folder's files (absolute), labels and class names, without decoding anything."""
    root = Path(data)
    if not root.is_dir():
        raise InvalidArgumentError(f"{data}: parity on Ray reads an image folder (one subfolder per class, or flat)")
    files, labels, class_names = scan_folder(root)
    return [os.path.abspath(f) for f in files], np.asarray(labels, dtype=np.int64) if labels else None, class_names


def parity_on_ray(
    model: str | os.PathLike[str],
    artifacts: Sequence[str | os.PathLike[str]],
    data: str | os.PathLike[str],
    *,
    address: str | None = None,
    workers: int | None = None,
    device: str = "auto",
    batch_size: int = 32,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[ParityReport], list[str]]:
    """Every candidate against the Keras ``model`` on every image of the folder ``data``, on Ray.

    Returns the reports (the figures the in-process ``parity`` gives on the same images) and the reasons of
    the images that could not be read (left out, as in-process).
    """
    if batch_size < 1:
        raise InvalidArgumentError("batch size must be at least 1")
    if not artifacts:
        raise InvalidArgumentError("give at least one artifact to compare")
    model, artifacts = Path(model), [Path(a) for a in artifacts]
    for path in [model, *artifacts]:
        if not path.is_file():
            raise InvalidArgumentError(f"{path}: no such model file")
    paths, labels, class_names = list_labelled(data)
    chunks = [paths[start : start + batch_size] for start in range(0, len(paths), batch_size)]
    check_loads([model], "cpu")  # a broken model or artifact fails here in one line, before Ray starts
    check_loads(artifacts, device)
    with session(address):
        ray = import_ray()
        quiet_data(ray)
        plan = plan_workers(artifacts[0], device, workers)
        per_task = max(1, min(TASK_ROWS // batch_size, -(-len(chunks) // plan.actors)))
        dataset = ray.data.from_items([{"batch": i, "paths": chunk} for i, chunk in enumerate(chunks)],
                                      override_num_blocks=-(-len(chunks) // per_task))
        compared = dataset.map_batches(
            ParityActor, batch_size=per_task, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=plan.actors),
            fn_constructor_kwargs={"model": str(model.resolve()), "artifacts": [str(a.resolve()) for a in artifacts],
                                   "device": plan.device, "threads": plan.threads, "batch_size": batch_size},
            **plan.remote_args())
        results: dict[int, dict[str, Any]] = {}
        with worker_errors():  # an actor that died loading a model: its one-line error, not Ray's traceback
            for block in compared.iter_batches(batch_size=None, batch_format="numpy"):
                for index, payload in zip(block["batch"], block["result"], strict=True):
                    results.setdefault(int(index), pickle.loads(payload))
                if progress is not None:
                    progress(f"{len(results)}/{len(chunks)} batches compared")
    if len(results) != len(chunks):
        raise DataError(f"Ray returned {len(results)} of {len(chunks)} batches")
    return _reports(model, artifacts, paths, batch_size, labels, class_names,
                    [results[i] for i in range(len(chunks))], str(data))


def _reports(model: Path, artifacts: list[Path], paths: list[str], batch_size: int, labels: np.ndarray | None,
             class_names: tuple[str, ...], results: list[dict[str, Any]], source: str) -> tuple[list[ParityReport], list[str]]:
    """Reduce the batches' stats per candidate, in image order, with the in-process check's reduction."""
    unreadable = [reason for result in results for reason in result["unreadable"]]
    kept = [number * batch_size + position for number, result in enumerate(results) for position in result["kept"]]
    if not kept:
        raise DataError(f"none of the {len(paths)} image files could be read")
    infos = next(result["candidates"] for result in results if result["stats"])
    data = Dataset(np.empty((len(kept), 0, 0, 3), np.uint8), None if labels is None else labels[kept], class_names,
                   source)
    reports = []
    for number, artifact in enumerate(artifacts):
        stats = RowStats.concat([result["stats"][number] for result in results if result["stats"]])
        report = reduce_candidate(stats, infos[number], data)
        if not report.passed:
            _diagnose_locally(report, model, artifact, paths, kept)
        reports.append(report)
    return reports, unreadable


def _diagnose_locally(report: ParityReport, model: Path, artifact: Path, paths: list[str], kept: list[int]) -> None:
    """A failed candidate's worst layers, on the first readable images, as the in-process check names them."""
    from ..parity import Comparison, diagnose
    from ..predictor import load

    with load(model, device="cpu") as reference, load(artifact) as candidate:
        keras_model = Comparison(reference, candidate).keras_model
        _, images, _ = _decode([paths[i] for i in kept[:DIAGNOSIS_IMAGES]], reference.input_spec.size,
                               reference.resize_policy)
        data = Dataset(np.stack(images), None, (), "diagnosis").resized(candidate.input_spec.size,
                                                                         candidate.resize_policy)
        diagnose(report, keras_model, artifact, data.images)
