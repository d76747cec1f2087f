"""``load(path)`` gives a Predictor: any artifact on any device, images in, labels out (and the raw call).

The backend comes from the artifact's suffix (the registry's rows), the device from what really works here;
the Predictor owns the host side every backend shares: decoding, fitting frames to the model's resize policy,
casting or quantizing the input, the softmax and top-k.
"""

from __future__ import annotations

import glob
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .cpu import usable_cores
from .errors import DataError, DeviceError, InvalidArgumentError, ModelFileError
from .metadata import ModelMetadata
from .preprocess import InputSpec, cast_batch, fit_image, is_image_file, load_image, prepare_images
from .registry import BACKENDS, backend_for_file, devices, find_backend, has_suffix, load_target
from .runtime import Backend, Intermediates


@dataclass(frozen=True)
class Prediction:
    """Top-k labels of one input, best first."""

    source: str
    labels: list[str]
    indices: list[int]
    scores: list[float]


@dataclass
class PredictionRun:
    predictions: list[Prediction] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def expand_input(item: Any, skip_missing: bool = False) -> Iterator[tuple[str, Any]]:
    """Flatten one user input into (name, source) pairs: paths, folders, globs, PIL images, arrays.

    A path that does not exist, or a glob that matches no image, is a one-line DataError (a typo must not
    look like an empty result) unless ``skip_missing``: it is then one unreadable input among the others.
    """
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
            if not files and not skip_missing:
                raise DataError(f"{path}: no image files in this folder")
            yield from ((str(p), p) for p in files)
        elif path.exists():
            yield str(path), path
        elif any(ch in str(item) for ch in "*?["):
            matches = [m for m in sorted(glob.glob(str(item), recursive=True)) if is_image_file(Path(m))]
            if not matches and not skip_missing:
                raise DataError(f"{item}: no image file matches")
            yield from ((match, Path(match)) for match in matches)
        elif skip_missing:
            yield str(path), path
        else:
            raise DataError(f"{path}: no such file or folder")
    elif isinstance(item, Image.Image):
        yield "<image>", item
    elif isinstance(item, np.ndarray):
        if item.ndim == 4:
            yield from ((f"<batch[{i}]>", frame) for i, frame in enumerate(item))
        else:
            yield "<frame>", item
    else:
        raise InvalidArgumentError(f"cannot use {type(item).__name__} as an image input")


def looks_like_probabilities(scores: np.ndarray) -> bool:
    """Rows inside [0, 1] that sum to 1: what a classifier's softmax gives."""
    return bool(scores.ndim == 2 and scores.min() >= -1e-3 and scores.max() <= 1.0 + 1e-3
                and np.abs(scores.sum(axis=-1) - 1.0).max() <= 0.05)


def to_probabilities(scores: np.ndarray, output_activation: str | None = None) -> np.ndarray:
    """A classifier's outputs as probabilities: as they are after a softmax, through one after logits.

    When the artifact does not say (``output_activation`` None: metadata from before it was recorded),
    rows inside [0, 1] that sum to 1 are taken as probabilities.
    """
    if output_activation == "softmax":
        return scores
    if output_activation is None and looks_like_probabilities(scores):
        return scores
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best scores per row, best first (partial sort: k is small, classes may be many)."""
    if k >= scores.shape[1]:
        return np.argsort(-scores, axis=1, kind="stable")
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1, kind="stable")
    return np.take_along_axis(best, order, axis=1)


def _is_identity(quantization) -> bool:
    return quantization is None or (quantization.scale == 1.0 and quantization.zero_point == 0)


class Predictor:
    """Runs any artifact: ``p(batch)`` for raw outputs, ``p.predict(images)`` for labelled top-k."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._lock = None if backend.thread_safe else threading.Lock()

    @property
    def metadata(self) -> ModelMetadata | None:
        return self.backend.metadata

    @property
    def input_spec(self) -> InputSpec:
        return self.backend.input_spec

    @property
    def device(self) -> str:
        return self.backend.device

    @property
    def path(self) -> Path:
        return self.backend.path

    def native(self) -> Any:
        """The backend's own runtime handle (see ``Backend.native``)."""
        return self.backend.native()

    @property
    def labels(self) -> list[str]:
        if self.metadata and self.metadata.labels:
            return list(self.metadata.labels)
        return []

    def __repr__(self) -> str:
        return f"Predictor({self.backend.path.name}, backend={self.backend.name}, device={self.device})"

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """All outputs for an NHWC batch of pixels 0-255 (uint8 or float); an int8 batch is taken as already quantized."""
        batch = np.asarray(batch)
        spec = self.input_spec
        if batch.ndim == 3:
            batch = batch[None]
        if batch.ndim != 4 or batch.shape[1:] != (spec.height, spec.width, spec.channels):
            raise DataError(
                f"expected an NHWC batch of shape (N, {spec.height}, {spec.width}, {spec.channels}), "
                f"got {batch.shape}"
            )
        if len(batch) == 0:
            raise DataError("the batch is empty (N = 0)")
        if batch.dtype.kind not in "uif" and batch.dtype != np.bool_:
            raise DataError(f"the batch must hold numbers (pixels 0-255), not {batch.dtype}")
        if batch.dtype.kind == "f" and not np.isfinite(batch).all():
            raise DataError(f"the batch holds NaN or inf pixel values ({int((~np.isfinite(batch)).sum())} of them)")
        if batch.dtype != np.dtype(spec.dtype) or (spec.dtype == "uint8" and not _is_identity(spec.quantization)):
            batch = cast_batch(batch, spec)
        if self._lock is None:
            outputs = self.backend.run(batch)
        else:
            with self._lock:
                outputs = self.backend.run(batch)
        order = self._order()
        return outputs if order is None else [outputs[i] for i in order]

    def _order(self) -> list[int] | None:
        """Where each output the model was built with sits among the backend's, matched by name (a converter may
        reorder a multi-output model's outputs: TFLite gave c4, c3, c5 for a c3-c5 backbone)."""
        if not hasattr(self, "_output_order"):
            wanted = [o.name for o in self.metadata.outputs] if self.metadata else []
            have = list(self.backend.output_names)
            order = None
            if len(wanted) > 1 and have != wanted:
                if not set(wanted) <= set(have):
                    raise ModelFileError(f"{self.backend.path.name}: its outputs {have} cannot be matched by name to "
                                         f"the ones the model was built with, {wanted}")
                order = [have.index(name) for name in wanted]
            self._output_order = order
        return self._output_order

    @property
    def task(self) -> str:
        """classifier, features or embedding (``ModelMetadata.kind``; a classifier when the artifact does not say)."""
        return self.metadata.kind if self.metadata else "classifier"

    @property
    def output_names(self) -> list[str]:
        """The outputs' names in the order the model was built (what :meth:`features` keys its maps by)."""
        if self.metadata and self.metadata.outputs:
            return [o.name for o in self.metadata.outputs]
        return list(self.backend.output_names)

    def _require(self, task: str, instead: str) -> None:
        if self.task != task:
            article = "an" if self.task[0] in "aeiou" else "a"
            raise InvalidArgumentError(f"{self.backend.path.name} is {article} {self.task} model, not a {task}: {instead}")

    def embed(self, inputs: Iterable[Any] | Any, batch_size: int = 32, color: str = "rgb", strict: bool = False,
              skip_missing: bool = False, names: list[str] | None = None) -> np.ndarray:
        """One vector per input (paths, folders, globs, PIL images, frames of any size, NHWC batches): ``(N, D)``
        float32, in input order; ``names`` (a list) receives each row's source, unreadable files skipped."""
        self._require("embedding", "use features() for feature maps, predict() for labels")
        rows = []
        for batch_names, batch in self.iter_batches(inputs, batch_size, color, strict, skip_missing=skip_missing):
            rows.append(self._finite(self.run(batch)[0], batch_names))
            if names is not None:
                names.extend(batch_names)
        if not rows:
            raise DataError("no input could be read")
        return np.concatenate(rows).astype(np.float32, copy=False)

    def features(self, inputs: Iterable[Any] | Any, batch_size: int = 32, color: str = "rgb", strict: bool = False,
                 skip_missing: bool = False, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """Every feature map per input, by output name in the order built: ``{"c3": (N, H, W, C), ...}``."""
        self._require("features", "use embed() for vectors, predict() for labels")
        levels: list[list[np.ndarray]] = [[] for _ in self.output_names]
        for batch_names, batch in self.iter_batches(inputs, batch_size, color, strict, skip_missing=skip_missing):
            for slot, output in enumerate(self.run(batch)):
                levels[slot].append(self._finite(output, batch_names))
            if names is not None:
                names.extend(batch_names)
        if not levels[0]:
            raise DataError("no input could be read")
        return {name: np.concatenate(parts) for name, parts in zip(self.output_names, levels, strict=True)}

    def _finite(self, values: np.ndarray, names: Sequence[str]) -> np.ndarray:
        bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
        if bad.any():
            raise ModelFileError(f"{self.backend.path.name}: the model returned NaN or inf for {int(bad.sum())} of "
                                 f"{len(bad)} input(s) (first: {names[int(np.flatnonzero(bad)[0])]}); the artifact is "
                                 "broken: check it with resnet-edge parity")
        return values

    def __call__(self, batch: np.ndarray) -> np.ndarray | list[np.ndarray]:
        outputs = self.run(batch)
        return outputs[0] if len(outputs) == 1 else outputs

    @property
    def resize_policy(self) -> str:
        """How frames of another shape reach the input size (``squash`` for artifacts that do not say)."""
        return self.metadata.resize if self.metadata else "squash"

    def prepare(self, images: np.ndarray | Image.Image | Sequence[np.ndarray | Image.Image],
                color: str = "rgb") -> np.ndarray:
        """Frames of any size (one HWC array or PIL image, or a list) to an input batch for :meth:`run`."""
        if isinstance(images, (np.ndarray, Image.Image)):
            images = list(images) if isinstance(images, np.ndarray) and images.ndim == 4 else [images]
        return prepare_images(list(images), self.input_spec, self.resize_policy, color)

    def _fitted(self, source: Any, color: str) -> np.ndarray:
        if isinstance(source, Path):
            return load_image(source, self.input_spec.size, self.resize_policy)
        return fit_image(source, self.input_spec.size, self.resize_policy, color)

    def iter_batches(
        self, inputs: Iterable[Any] | Any, batch_size: int = 32, color: str = "rgb", strict: bool = False,
        skipped: list[str] | None = None, workers: int | None = None, skip_missing: bool = False,
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        """Decode, fit and batch any mix of inputs; unreadable ones are skipped (or raise if strict).

        A path that does not exist is an error unless ``skip_missing`` (see ``expand_input``).

        Files are decoded by ``workers`` background threads (default: the usable cores) up to two
        batches ahead, so decoding overlaps the model; results keep the order of the inputs.
        """
        if batch_size < 1:
            raise InvalidArgumentError("batch size must be at least 1")
        if isinstance(inputs, (str, os.PathLike, Image.Image, np.ndarray)):
            inputs = [inputs]
        pool: ThreadPoolExecutor | None = None
        pending: deque[tuple[str, Future[np.ndarray] | np.ndarray]] = deque()
        lookahead = 2 * batch_size
        names: list[str] = []
        images: list[np.ndarray] = []

        def take() -> Iterator[tuple[list[str], np.ndarray]]:
            nonlocal names, images
            name, item = pending.popleft()
            try:
                image = item.result() if isinstance(item, Future) else item
            except DataError:
                if strict:
                    raise
                if skipped is not None:
                    skipped.append(name)
                return
            names.append(name)
            images.append(image)
            if len(images) == batch_size:
                yield names, cast_batch(np.stack(images), self.input_spec)
                names, images = [], []

        try:
            for item in inputs:
                for name, source in expand_input(item, skip_missing):
                    if isinstance(source, Path):
                        if pool is None:
                            pool = ThreadPoolExecutor(workers or usable_cores(), thread_name_prefix="decode")
                        pending.append((name, pool.submit(self._fitted, source, color)))
                    else:
                        pending.append((name, self._fitted(source, color)))
                    if len(pending) > lookahead:
                        yield from take()
            while pending:
                yield from take()
            if images:
                yield names, cast_batch(np.stack(images), self.input_spec)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def predict(
        self, inputs: Iterable[Any] | Any, top_k: int = 5, batch_size: int = 32, color: str = "rgb",
        strict: bool = False, skip_missing: bool = False,
    ) -> PredictionRun:
        """Top-k labelled predictions for paths, folders, globs, PIL images, HWC frames or NHWC batches.

        Unreadable files are skipped and listed in ``skipped`` (``strict`` raises instead); a path that does not
        exist is an error unless ``skip_missing``.
        """
        if top_k < 1:
            raise InvalidArgumentError("top-k must be at least 1")
        self._require("classifier", "use embed() or features(), or predict --out FILE from the shell")
        result = PredictionRun()
        for names, batch in self.iter_batches(inputs, batch_size, color, strict, result.skipped,
                                              skip_missing=skip_missing):
            result.predictions.extend(self.classify(batch, top_k, names))
        return result

    def classify(self, batch: np.ndarray, top_k: int = 5, names: Sequence[str] | None = None) -> list[Prediction]:
        """Top-k labelled predictions for an input batch (from :meth:`prepare`), one per row."""
        if top_k < 1:
            raise InvalidArgumentError("top-k must be at least 1")
        self._require("classifier", "use embed() or features() for its outputs")
        outputs = self.run(batch)
        if len(outputs) != 1 or outputs[0].ndim != 2:
            raise InvalidArgumentError(
                f"{self.backend.path.name} is not a classifier (outputs {[o.shape for o in outputs]}); "
                "call the predictor on a batch for raw outputs"
            )
        if names is None:
            names = [f"<batch[{i}]>" for i in range(len(outputs[0]))]
        return self._top_k(names, outputs[0], top_k)

    def _top_k(self, names: Sequence[str], scores: np.ndarray, top_k: int) -> list[Prediction]:
        classes = scores.shape[1]
        if self.labels and len(self.labels) != classes:
            raise ModelFileError(f"{self.backend.path.name}: its metadata has {len(self.labels)} labels but the model "
                                 f"outputs {classes} classes (fix them with write_metadata, or re-export)")
        finite = np.isfinite(scores).all(axis=1)
        if not finite.all():
            first = names[int(np.flatnonzero(~finite)[0])]
            raise ModelFileError(f"{self.backend.path.name}: the model returned NaN or inf scores for "
                                 f"{int((~finite).sum())} of {len(finite)} input(s) (first: {first}); the artifact "
                                 "is broken: check it with resnet-edge parity")
        probabilities = to_probabilities(scores, self.metadata.output_activation if self.metadata else None)
        best = top_k_indices(probabilities, min(top_k, classes))
        labels = self.labels or [str(i) for i in range(classes)]
        return [
            Prediction(name, [labels[i] for i in row], [int(i) for i in row],
                       [float(probabilities[n, i]) for i in row])
            for n, (name, row) in enumerate(zip(names, best, strict=True))
        ]

    def close(self) -> None:
        if self._lock is None:
            self.backend.close()
        else:
            with self._lock:
                self.backend.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def load(
    path: str | os.PathLike[str], device: str = "auto", backend: str | None = None, threads: int | None = None
) -> Predictor:
    """Open an artifact as a Predictor; ``device="auto"`` takes the first device that really works."""
    path = Path(path)
    if device not in devices():
        raise InvalidArgumentError(f"unknown device {device!r}; valid: {', '.join(devices())}")
    if threads is not None and threads < 1:
        raise InvalidArgumentError("threads must be at least 1")
    row = find_backend(backend) if backend else backend_for_file(path)
    if not has_suffix(path, row.suffixes + row.also_runs):
        raise ModelFileError(f"{path}: the {row.name} backend runs {', '.join(row.suffixes + row.also_runs)} files")
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    if path.stat().st_size == 0:
        raise ModelFileError(f"{path}: model file is empty")
    if device != "auto":
        if device not in row.devices:
            raise DeviceError(f"the {row.name} backend runs on {', '.join(row.devices)}, not {device}")
        return Predictor(row.backend_class(device)(path, device, threads))
    available = row.backend_class().available_devices()
    errors = []
    for candidate in (d for d in row.devices if d in available):
        try:
            return Predictor(row.backend_class(candidate)(path, candidate, threads))
        except DeviceError as exc:
            errors.append(str(exc))
    raise DeviceError(f"no usable device for {row.name}: {'; '.join(errors) or 'none available'}")


def open_intermediates(path: str | os.PathLike[str]) -> Intermediates:
    """The artifact opened with its intermediate tensors readable (backends whose row has the hook)."""
    row = backend_for_file(path)
    if row.intermediates is None:
        with_hook = sorted(s for r in BACKENDS.values() if r.intermediates for s in r.suffixes)
        raise ModelFileError(f"{path}: layer-wise comparison reads {', '.join(with_hook)} files, not {row.suffixes[0]}")
    return load_target(row.intermediates)(Path(path))


__all__ = ["Backend", "Prediction", "PredictionRun", "Predictor", "expand_input", "load", "open_intermediates",
           "to_probabilities", "top_k_indices"]
