"""Where a model's answers for a set of images go: a table on screen, JSON, or a file a pipeline reads.

A classifier gives labelled top-k; an embedding model one vector per image; a backbone named feature maps
(``Predictor.task``). ``predict_images`` (the ``predict`` command's one call) runs any of them over paths, folders
and globs and streams the answers batch by batch into ``out`` — feature maps of many images do not fit in memory —
written atomically: ``.parquet`` (one row per image: path, then labels/indices/scores, ``embedding``, or one
flattened column per feature map with its shape in the file's metadata), ``.npy`` (embeddings: an ``(N, D)``
array, the paths in ``<name>.paths.txt`` beside it), ``.npz`` (arrays by name plus ``paths``), ``.csv``/``.jsonl``
(a classifier's top-k) or a folder (``out/``: one ``.npz`` per image, for large maps, and ``paths.txt``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._lazy import lazy_import
from .atomic import atomic_path
from .errors import DataError, InvalidArgumentError
from .predictor import Prediction, Predictor, expand_input, load

SUFFIXES = {"classifier": (".parquet", ".csv", ".jsonl", ".npz"), "embedding": (".parquet", ".npy", ".npz"),
            "features": (".parquet", ".npz")}
JSON_VALUES_LIMIT = 1_000_000  # values a --json answer may carry; past it, --out FILE


@dataclass
class ImagesResult:
    """What ``predict_images`` did: the task, every image answered (in order), those skipped, and the answers kept
    in memory when no ``out`` was given (``predictions``, ``vectors`` or ``maps``)."""

    task: str
    sources: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    predictions: list[Prediction] = field(default_factory=list)
    vectors: np.ndarray | None = None
    maps: dict[str, np.ndarray] | None = None
    out: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: top-k per image, vectors as lists, feature maps as shapes and values."""
        data: dict[str, Any] = {"task": self.task, "skipped": self.skipped}
        if self.out is not None:
            data.update(out=str(self.out), images=len(self.sources))
        elif self.task == "classifier":
            data["predictions"] = [p.__dict__ for p in self.predictions]
        elif self.task == "embedding":
            data["embeddings"] = [{"source": s, "vector": v.tolist()} for s, v in zip(self.sources, self.vectors,
                                                                                    strict=True)]
        else:
            data["features"] = [{"source": s, **{name: maps[i].tolist() for name, maps in self.maps.items()}}
                                for i, s in enumerate(self.sources)]
        return data


class _Sink:
    """Answers batch by batch into one kind of file."""

    def __init__(self, target: Path, predictor: Predictor) -> None:
        self.target, self.predictor = target, predictor

    def add(self, sources: list[str], answers: Any) -> None:
        raise NotImplementedError

    def finish(self, tmp: Path) -> None:
        raise NotImplementedError


class _Parquet(_Sink):
    def __init__(self, target: Path, predictor: Predictor) -> None:
        super().__init__(target, predictor)
        self.pa = lazy_import("pyarrow", extra="scale")
        self.pq = lazy_import("pyarrow.parquet", extra="scale")
        self.writer = None
        self.tmp: Path | None = None

    def _table(self, sources: list[str], answers: Any):
        pa, task = self.pa, self.predictor.task
        columns: dict[str, Any] = {"path": pa.array(sources, pa.string())}
        if task == "classifier":
            columns["labels"] = pa.array([p.labels for p in answers], pa.list_(pa.string()))
            columns["indices"] = pa.array([p.indices for p in answers], pa.list_(pa.int32()))
            columns["scores"] = pa.array([p.scores for p in answers], pa.list_(pa.float32()))
        elif task == "embedding":
            columns["embedding"] = pa.array(list(answers), pa.list_(pa.float32()))
        else:
            for name, maps in answers.items():
                columns[name] = pa.array(list(maps.reshape(len(maps), -1)), pa.list_(pa.float32()))
        return pa.table(columns)

    def add(self, sources: list[str], answers: Any) -> None:
        table = self._table(sources, answers)
        if self.writer is None:
            shapes = {o.name: list(o.shape) for o in self.predictor.metadata.outputs} if self.predictor.metadata else {}
            schema = table.schema.with_metadata({"resnet_edge": json.dumps({"task": self.predictor.task,
                                                                           "shapes": shapes})})
            self.writer = self.pq.ParquetWriter(str(self.tmp), schema)
        self.writer.write_table(table.replace_schema_metadata(self.writer.schema.metadata))

    def finish(self, tmp: Path) -> None:
        if self.writer is not None:
            self.writer.close()


class _Arrays(_Sink):
    """``.npy`` (embeddings) and ``.npz``: the answers kept in memory and written at the end."""

    def __init__(self, target: Path, predictor: Predictor) -> None:
        super().__init__(target, predictor)
        self.sources: list[str] = []
        self.parts: dict[str, list[np.ndarray]] = {}

    def add(self, sources: list[str], answers: Any) -> None:
        self.sources += sources
        if self.predictor.task == "classifier":
            answers = {"indices": np.array([p.indices for p in answers]), "scores": np.array([p.scores for p in answers],
                                                                                            dtype=np.float32)}
        elif self.predictor.task == "embedding":
            answers = {"embedding": answers}
        for name, values in answers.items():
            self.parts.setdefault(name, []).append(values)

    def finish(self, tmp: Path) -> None:
        arrays = {name: np.concatenate(parts) for name, parts in self.parts.items()}
        if self.target.suffix == ".npy":
            with open(tmp, "wb") as handle:
                np.save(handle, arrays["embedding"])
            _write_paths(self.target.with_suffix(".paths.txt"), self.sources)
        else:
            if self.predictor.task == "classifier":
                arrays["labels"] = np.array(self.predictor.labels or [str(i) for i in range(arrays["scores"].shape[1])])
            with open(tmp, "wb") as handle:
                np.savez(handle, paths=np.array(self.sources), **arrays)


class _Lines(_Sink):
    """A classifier's top-k as CSV rows or JSON Lines, written as they come."""

    def __init__(self, target: Path, predictor: Predictor) -> None:
        super().__init__(target, predictor)
        self.handle = None

    def add(self, sources: list[str], answers: Any) -> None:
        if self.handle is None:
            self.handle = open(self.tmp, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed in finish
            if self.target.suffix == ".csv":
                self.handle.write("source,rank,label,index,score\n")
        for p in answers:
            if self.target.suffix == ".jsonl":
                self.handle.write(json.dumps(p.__dict__) + "\n")
            else:
                import csv
                import io

                buffer = io.StringIO()
                writer = csv.writer(buffer)
                for rank, (label, index, score) in enumerate(zip(p.labels, p.indices, p.scores, strict=True), 1):
                    writer.writerow([p.source, rank, label, index, f"{score:.6f}"])
                self.handle.write(buffer.getvalue())

    def finish(self, tmp: Path) -> None:
        if self.handle is not None:
            self.handle.close()


class _Folder(_Sink):
    """One ``.npz`` per image (its feature maps or its vector), for maps too large for one file."""

    def __init__(self, target: Path, predictor: Predictor) -> None:
        super().__init__(target, predictor)
        self.work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        self.sources: list[str] = []

    def add(self, sources: list[str], answers: Any) -> None:
        for offset, source in enumerate(sources):
            index = len(self.sources)
            if self.predictor.task == "embedding":
                arrays = {"embedding": answers[offset]}
            else:
                arrays = {name: maps[offset] for name, maps in answers.items()}
            np.savez(self.work / f"{index:06d}_{Path(source).stem[:80]}.npz", source=np.array(source), **arrays)
            self.sources.append(source)

    def finish(self, tmp: Path) -> None:
        _write_paths(self.work / "paths.txt", self.sources)


def _write_paths(path: Path, sources: Sequence[str]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{source}\n" for source in sources), encoding="utf-8")


def _sink(out: Path, predictor: Predictor, folder: bool) -> _Sink:
    task = predictor.task
    if folder or out.is_dir():
        if task == "classifier":
            raise InvalidArgumentError("a classifier's answers go to a .parquet, .csv, .jsonl or .npz file, not a folder")
        return _Folder(out, predictor)
    suffix = out.suffix.lower()
    if suffix not in SUFFIXES[task]:
        article = "an" if task[0] in "aeiou" else "a"
        raise InvalidArgumentError(f"{out}: {article} {task} model's answers go to {', '.join(SUFFIXES[task])}"
                                   + ("" if task == "classifier" else " or a folder (a path ending in /)"))
    return {".parquet": _Parquet, ".npy": _Arrays, ".npz": _Arrays, ".csv": _Lines, ".jsonl": _Lines}[suffix](
        out, predictor)


def predict_images(
    artifact: str | os.PathLike[str], inputs: Sequence[Any], *, out: str | os.PathLike[str] | None = None,
    device: str = "auto", backend: str | None = None, threads: int | None = None, top_k: int = 5,
    batch_size: int = 32, strict: bool = False, skip_missing: bool = False,
    progress: Callable[[int, int], None] | None = None, opened: Callable[[Predictor], None] | None = None,
) -> ImagesResult:
    """``resnet-edge predict``: every image among ``inputs`` through the artifact, by its task; with ``out`` the
    answers stream into that file or folder (see the module docstring), else they are returned.

    A path that does not exist is an error unless ``skip_missing``; unreadable files are skipped and listed
    (``strict`` raises instead); none readable is an error too.
    """
    if not inputs:
        raise InvalidArgumentError("give images, folders or globs to run the model on")
    if batch_size < 1 or top_k < 1:
        raise InvalidArgumentError("--batch-size and --top-k must be at least 1")
    items = [source for item in inputs for _, source in expand_input(item, skip_missing)]
    if not items:
        raise InvalidArgumentError(f"no images found in {' '.join(map(str, inputs))}")
    target = None if out is None else Path(out)
    with load(artifact, device=device, backend=backend, threads=threads) as predictor:
        result = ImagesResult(predictor.task, out=target)
        sink = None if target is None else _sink(target, predictor, str(out).endswith(("/", os.sep)))
        if opened is not None:  # after the output is known to suit the task: a refusal is the only line
            opened(predictor)
        kept: dict[str, list[np.ndarray]] = {}
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
        folder = isinstance(sink, _Folder)
        try:
            with _staged(target, folder) as tmp:
                if sink is not None:
                    sink.tmp = tmp
                for start in range(0, len(items), batch_size):
                    chunk = items[start : start + batch_size]
                    names: list[str] = []
                    answers = _answer(predictor, chunk, top_k, batch_size, strict, skip_missing, names,
                                      result.skipped)
                    if names:
                        result.sources += names
                        if sink is not None:
                            sink.add(names, answers)
                        else:
                            _keep(result, kept, answers)
                    if progress is not None:
                        progress(min(start + batch_size, len(items)), len(items))
                if not result.sources:
                    raise DataError(f"none of the {len(items)} input(s) could be read (first: {result.skipped[0]})")
                if sink is not None:
                    sink.finish(tmp)
                    if folder:
                        _replace_folder(sink.work, target)
        finally:
            if folder and sink.work.exists():
                shutil.rmtree(sink.work, ignore_errors=True)
    if kept:
        if result.task == "embedding":
            result.vectors = np.concatenate(kept["embedding"])
        else:
            result.maps = {name: np.concatenate(parts) for name, parts in kept.items()}
    return result


def _answer(predictor: Predictor, chunk: list[Any], top_k: int, batch_size: int, strict: bool, skip_missing: bool,
            names: list[str], skipped: list[str]) -> Any:
    if predictor.task == "classifier":
        run = predictor.predict(chunk, top_k=top_k, batch_size=batch_size, strict=strict, skip_missing=skip_missing)
        names += [p.source for p in run.predictions]
        skipped += run.skipped
        return run.predictions
    before = len(names)
    try:
        if predictor.task == "embedding":
            return predictor.embed(chunk, batch_size, strict=strict, skip_missing=skip_missing, names=names)
        return predictor.features(chunk, batch_size, strict=strict, skip_missing=skip_missing, names=names)
    except DataError:
        if strict or len(names) > before:
            raise
        return None  # no image of this chunk could be read
    finally:
        answered = set(names[before:])
        skipped += [str(item) for item in chunk if str(item) not in answered]


def _keep(result: ImagesResult, kept: dict[str, list[np.ndarray]], answers: Any) -> None:
    if result.task == "classifier":
        result.predictions += answers
        return
    arrays = {"embedding": answers} if result.task == "embedding" else answers
    for name, values in arrays.items():
        kept.setdefault(name, []).append(values)
    values = sum(sum(v.size for v in parts) for parts in kept.values())
    if values > JSON_VALUES_LIMIT:
        raise InvalidArgumentError(f"the answers hold more than {JSON_VALUES_LIMIT:,} values: write them to a file "
                                   "with --out FILE (.parquet, .npy, .npz or a folder/)")


class _staged:
    """The temporary file a sink writes, moved to ``target`` when all went well (nothing for a folder, which is
    swapped in by ``_replace_folder``)."""

    def __init__(self, target: Path | None, folder: bool) -> None:
        self.target, self.folder, self.context = target, folder, None

    def __enter__(self) -> Path | None:
        if self.target is None or self.folder:
            return None
        self.context = atomic_path(self.target)
        return self.context.__enter__()

    def __exit__(self, *exc_info: Any) -> bool | None:
        return None if self.context is None else self.context.__exit__(*exc_info)


def _replace_folder(work: Path, target: Path) -> None:
    """Swap the finished folder in: an existing one is replaced only now, when the new one is complete."""
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        work.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        work.rename(target)
