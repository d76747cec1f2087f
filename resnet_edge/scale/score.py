"""Batch scoring on Ray Data: every image of a source through one Predictor per actor, into resumable Parquet shards.

The driver cuts the sorted path list into fixed shards and writes each shard's Parquet file atomically once
all its rows are back; a rerun skips the shards whose files exist. Every row carries its position, so a task
that Ray retries after a worker dies cannot add or lose a row: a shard is written only when its positions
are exactly its range.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_path
from ..errors import DataError, InvalidArgumentError, first_line
from ..metadata import sha256_file
from ..registry import backend_for_file
from .cluster import WorkerPlan, check_loads, import_ray, plan_workers, quiet_data, session, worker_errors
from .sources import image_paths

MANIFEST = "_scoring.json"
SCHEMA = 1
TASK_ROWS = 1024  # images per Ray task: each task costs milliseconds of scheduling, so small ones starve the model


@dataclass
class ScoreSummary:
    """What a scoring run did: totals over every shard (resumed ones included), and what this run processed."""

    out: str
    images: int
    scored: int = 0
    unreadable: int = 0
    shards: int = 0
    shards_written: int = 0
    shards_skipped: int = 0
    processed: int = 0
    workers: int = 0
    device: str = "cpu"
    seconds: float = 0.0
    first_unreadable: str | None = None
    parts: list[str] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        """Images this run read (scored or found unreadable) per second; shards skipped on resume do not count."""
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "images_per_s": self.images_per_s}


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


class ScoreActor:
    """One Predictor per actor (threads pinned by the plan); a batch of paths in, one row per path out."""

    def __init__(self, artifact: str, device: str, threads: int, top_k: int, batch_size: int) -> None:
        from ..predictor import load

        self.predictor = load(artifact, device=device, threads=threads)
        self.top_k, self.batch_size = top_k, batch_size

    def __call__(self, batch: dict[str, Any]) -> Any:
        """One row per path, the columns of the model's task (``results``: top-k, ``embedding``, or one flattened
        column per feature map), plus ``error`` for an unreadable image."""
        import pyarrow as pa

        paths = [str(p) for p in batch["path"]]
        task = self.predictor.task
        columns: dict[str, Any] = {"row": pa.array(batch["row"], pa.int64()), "path": pa.array(paths, pa.string())}
        if task == "classifier":
            run = self.predictor.predict([Path(p) for p in paths], top_k=self.top_k, batch_size=self.batch_size)
            found = {p.source: p for p in run.predictions}
            columns["labels"] = pa.array([found[p].labels if p in found else [] for p in paths], pa.list_(pa.string()))
            columns["indices"] = pa.array([found[p].indices if p in found else [] for p in paths], pa.list_(pa.int32()))
            columns["scores"] = pa.array([found[p].scores if p in found else [] for p in paths], pa.list_(pa.float32()))
        else:
            names: list[str] = []
            try:
                answers = (self.predictor.embed if task == "embedding" else self.predictor.features)(
                    [Path(p) for p in paths], self.batch_size, names=names)
            except DataError:
                answers = None  # none of this batch could be read
            arrays = {"embedding": answers} if task == "embedding" else answers or {}
            for name in (self.predictor.output_names if task == "features" else ["embedding"]):
                values = arrays.get(name)
                by_path = {} if values is None else dict(zip(names, values.reshape(len(values), -1), strict=True))
                columns[name] = pa.array([by_path.get(p, []) for p in paths], pa.list_(pa.float32()))
            found = set(names)
        columns["error"] = pa.array([None if p in found else _reason(p) for p in paths], pa.string())
        return pa.table(columns)


def _reason(path: str) -> str:
    """Why an image was not answered: only unreadable files land here, so decode again for the reason."""
    from ..preprocess import load_image

    try:
        load_image(path)
    except DataError as exc:
        return first_line(exc).removeprefix(f"{path}: ")
    return "unreadable"


def _manifest(artifact: Path, paths: Sequence[str], shard_size: int, top_k: int) -> dict[str, Any]:
    return {"schema": SCHEMA, "artifact": artifact.name, "artifact_sha256": sha256_file(artifact),
            "images": len(paths), "paths_sha256": hashlib.sha256("\n".join(paths).encode()).hexdigest(),
            "shard_size": shard_size, "top_k": top_k}


def _check_manifest(out: Path, manifest: dict[str, Any]) -> bool:
    """Refuse to mix two runs' shards in one folder; True when the folder already records this run."""
    path = out / MANIFEST
    if not path.is_file():
        return False
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable scoring manifest ({first_line(exc)})") from exc
    changed = [key for key in manifest if previous.get(key) != manifest[key]]
    if changed:
        raise InvalidArgumentError(f"{out} holds results of another run ({', '.join(changed)} differ); "
                                   "use a new --out folder, or delete it to start over")
    return True


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _discard(out: Path, created: bool) -> None:
    """Undo a run that wrote no shard: its manifest, and the folder if this run made it (and it is empty)."""
    (out / MANIFEST).unlink(missing_ok=True)
    if created:
        with contextlib.suppress(OSError):
            out.rmdir()


def _finished(part: Path, rows: int) -> bool:
    if not part.is_file():
        return False
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(part).metadata.num_rows == rows
    except (OSError, ValueError):
        return False


def _write_shard(part: Path, records: list[dict[str, Any]], schema: Any) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(records, schema=schema)
    with atomic_path(part) as tmp:
        pq.write_table(table, tmp)


def score(
    artifact: str | os.PathLike[str],
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    top_k: int = 5,
    address: str | None = None,
    workers: int | None = None,
    device: str = "auto",
    batch_size: int = 32,
    shard_size: int = 1024,
    task_rows: int = TASK_ROWS,
    progress: Callable[[str], None] | None = None,
) -> ScoreSummary:
    """Score every image of ``source`` with ``artifact`` on Ray, into ``out/part-NNNNN.parquet``.

    Rows: ``row`` (position in the source), ``path``, the answer columns of the model's task — a classifier's
    ``labels``/``indices``/``scores`` (top-k, best first), an embedding's ``embedding``, a backbone's one
    flattened column per feature map — and ``error`` (why an image could not be read; its answer lists are empty). A rerun into the same ``out`` skips
    the shards already written. ``address`` is a Ray cluster (None or ``local`` starts one on loopback).
    The artifact is loaded once here first, so a broken model fails in one line before Ray starts; the manifest
    (``_scoring.json``) is written once a worker has returned rows, and a run that fails before its first shard
    leaves no folder behind.
    ``batch_size`` images go through the model at once; ``task_rows`` images make one Ray task (the unit Ray
    schedules and retries).
    """
    artifact = Path(artifact)
    if min(top_k, batch_size, shard_size, task_rows) < 1:
        raise InvalidArgumentError("top-k, batch size, shard size and task rows must be at least 1")
    backend_for_file(artifact)
    if not artifact.is_file():
        raise InvalidArgumentError(f"{artifact}: no such model file")
    started = time.perf_counter()
    paths = image_paths(source)
    out = Path(out)
    manifest = _manifest(artifact, paths, shard_size, top_k)
    recorded = _check_manifest(out, manifest)
    shards = [range(start, min(start + shard_size, len(paths))) for start in range(0, len(paths), shard_size)]
    parts = [out / shard_name(i) for i in range(len(shards))]
    pending = {i for i, shard in enumerate(shards) if not _finished(parts[i], len(shard))}
    summary = ScoreSummary(str(out), len(paths), shards=len(shards), shards_skipped=len(shards) - len(pending),
                           parts=[str(p) for p in parts])
    if pending:
        check_loads([artifact], device)
        created = not out.exists()
        try:
            with session(address):
                plan = plan_workers(artifact, device, workers)
                summary.workers, summary.device = plan.actors, plan.device
                first_rows = (lambda: None) if recorded else (lambda: _write_manifest(out, manifest))
                _run(artifact, paths, shards, parts, pending, plan, top_k, batch_size, task_rows, summary, progress,
                     first_rows)
        except BaseException:
            if not recorded and summary.shards_written == 0:
                _discard(out, created)
            raise
    _count(summary, parts)
    summary.seconds = time.perf_counter() - started
    return summary


def _run(artifact: Path, paths: list[str], shards: list[range], parts: list[Path], pending: set[int],
         plan: WorkerPlan, top_k: int, batch_size: int, task_rows: int, summary: ScoreSummary,
         progress: Callable[[str], None] | None, first_rows: Callable[[], None]) -> None:
    """Stream the pending rows through the actor pool; write each shard as soon as all its rows are back.

    ``first_rows`` is called once, when the first rows are back (a worker has loaded the model); a worker's error
    (an actor that died loading the model included) is raised as its one-line ResnetEdgeError.
    """
    ray = import_ray()
    quiet_data(ray)
    rows = [{"row": r, "path": paths[r]} for i in sorted(pending) for r in shards[i]]
    task_rows = min(task_rows, -(-len(rows) // plan.actors))  # every actor gets work, even on a short job
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // task_rows)))
    scored = dataset.map_batches(
        ScoreActor, fn_constructor_kwargs={"artifact": str(artifact.resolve()), "device": plan.device,
                                           "threads": plan.threads, "top_k": top_k, "batch_size": batch_size},
        batch_size=task_rows, compute=ray.data.ActorPoolStrategy(size=plan.actors), batch_format="numpy",
        **plan.remote_args())
    waiting: dict[int, dict[int, dict[str, Any]]] = {i: {} for i in pending}
    with worker_errors():
        for number, block in enumerate(scored.iter_batches(batch_size=None, batch_format="pyarrow")):
            if number == 0:
                first_rows()
            _collect(block, shards, parts, waiting, summary, progress)
    if waiting:
        missing = sum(len(shards[i]) - len(got) for i, got in waiting.items())
        raise DataError(f"Ray returned {missing} fewer rows than were sent; {len(waiting)} shard(s) not written")


def _collect(block: Any, shards: list[range], parts: list[Path], waiting: dict[int, dict[int, dict[str, Any]]],
             summary: ScoreSummary, progress: Callable[[str], None] | None) -> None:
    """File a block's rows under their shards; write each shard whose rows are all back."""
    shard_size = len(shards[0])
    for record in block.to_pylist():
        index = record["row"] // shard_size
        waiting[index].setdefault(record["row"], record)  # a retried task's second copy is the same row
        if len(waiting[index]) == len(shards[index]):
            done = waiting.pop(index)
            _write_shard(parts[index], [done[r] for r in shards[index]], block.schema)
            summary.shards_written += 1
            summary.processed += len(done)
            if progress is not None:
                progress(f"{summary.shards_skipped + summary.shards_written}/{summary.shards} shards written "
                         f"({parts[index].name})")


def _count(summary: ScoreSummary, parts: list[Path]) -> None:
    """Scored and unreadable totals from the written shards (resumed ones included)."""
    import pyarrow.parquet as pq

    for part in parts:
        errors = pq.read_table(part, columns=["error", "path"])
        failed = errors.column("error").is_valid().to_pylist()
        summary.unreadable += sum(failed)
        summary.scored += len(failed) - sum(failed)
        if summary.first_unreadable is None and any(failed):
            position = failed.index(True)
            summary.first_unreadable = f"{errors.column('path')[position]}: {errors.column('error')[position]}"
