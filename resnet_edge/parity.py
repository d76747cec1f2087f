"""Accuracy parity of an artifact against the float model: metrics, per-precision tolerances, reports."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclasses_fields
from pathlib import Path
from typing import Any

import numpy as np

from ._memo import KeepLast
from .data import Dataset
from .errors import DataError, InvalidArgumentError, ParityError, ResnetEdgeError
from .metrics import row_cosine
from .runtime.base import looks_like_probabilities, to_probabilities

DIAGNOSIS_IMAGES = 32


@dataclass(frozen=True)
class Tolerance:
    """Pass bounds for one precision.

    ``max_abs <= atol + rtol * scale`` (scale: max|reference|, or the reference's logit range when logits are
    compared); cosine similarity per image, averaged, at least ``min_cosine`` (``min_logit_cosine`` for
    logits, each row centred first since a softmax ignores a constant shift); top-1 agreement at least
    ``min_top1`` on the *decisive* images, those whose float top-1 margin exceeds ``decisive_margin * scale``:
    the precision's own noise level, so a model whose best two classes are closer than that (a random-init
    network, an uncertain frame) is judged by its cosine, not by a coin toss. The margin belongs to the
    precision, not to the candidate, so a badly wrong artifact cannot make its own images indecisive.
    """

    atol: float | None
    rtol: float
    min_top1: float
    min_cosine: float
    min_logit_cosine: float | None = None
    decisive_margin: float = 0.0

    def cosine_floor(self, logits: bool) -> float:
        return self.min_logit_cosine if logits and self.min_logit_cosine is not None else self.min_cosine

    def describe(self) -> str:
        parts = [f"top-1 ≥ {self.min_top1:.0%} where the margin > {self.decisive_margin:g}·scale", f"cos ≥ {self.min_cosine}"]
        if self.min_logit_cosine is not None:
            parts.append(f"logit cos ≥ {self.min_logit_cosine}")
        if self.atol is not None:
            parts.insert(0, f"|err| ≤ {self.atol:g} + {self.rtol:g}·|ref|")
        return ", ".join(parts)


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3, min_top1=0.99, min_cosine=0.9999, decisive_margin=1e-3),
    "fp16": Tolerance(atol=1e-2, rtol=2e-2, min_top1=0.99, min_cosine=0.999, decisive_margin=0.01),
    # bf16 keeps 8 mantissa bits (fp16: 11): OpenVINO bf16 on digits drifts up to 0.016 in probability
    "bf16": Tolerance(atol=5e-2, rtol=5e-2, min_top1=0.99, min_cosine=0.995, decisive_margin=0.05),
    "int8": Tolerance(atol=None, rtol=0.0, min_top1=0.99, min_cosine=0.95, min_logit_cosine=0.99,
                      decisive_margin=0.02),
}


@dataclass
class ParityReport:
    """How far a candidate's outputs drift from the reference's on the same images; truthy when it passes."""

    name: str
    precision: str
    samples: int
    max_abs: float
    mean_abs: float
    max_rel: float
    cosine: float
    top1_agreement: float | None
    top5_agreement: float | None
    reference_accuracy: float | None
    candidate_accuracy: float | None
    tolerance: Tolerance
    compared: str = "outputs"
    decisive: int | None = None
    decisive_top1: float | None = None
    top5_overlap: float | None = None
    calibration_images: int | None = None
    ran: str | None = None  # the precision the runtime says it computed in, where it says (OpenVINO)
    failures: list[str] = field(default_factory=list)
    worst_layers: list[tuple[str, float]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def __bool__(self) -> bool:
        return self.passed

    @property
    def accuracy_delta(self) -> float | None:
        if self.reference_accuracy is None or self.candidate_accuracy is None:
            return None
        return self.candidate_accuracy - self.reference_accuracy

    def line(self) -> str:
        """One human-readable line: the figures and the verdict."""
        calibrated = f", calib {self.calibration_images}" if self.calibration_images else ""
        what = " (logits)" if self.compared == "logits" else ""
        ran = f", ran {self.ran}" if self.ran else ""
        parts = [f"{self.name}: {'PASS' if self.passed else 'FAIL'} ({self.precision}{ran}, n={self.samples}{calibrated})",
                 f"max|err|{what} {self.max_abs:.3g}", f"mean|err| {self.mean_abs:.3g}", f"cos{what} {self.cosine:.6f}"]
        if self.top1_agreement is not None:
            decisive = ""
            if self.decisive is not None and self.decisive < self.samples:
                decisive = (f" ({self.decisive_top1:.2%} of {self.decisive} decisive)" if self.decisive
                            else " (no decisive image)")
            parts.append(f"top-1 agree {self.top1_agreement:.2%}{decisive}")
        if self.candidate_accuracy is not None and self.accuracy_delta is not None:
            parts.append(f"acc {self.candidate_accuracy:.2%} (Δ {self.accuracy_delta:+.2%})")
        if self.failures:
            parts.append("; ".join(self.failures))
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(passed=self.passed, accuracy_delta=self.accuracy_delta, tolerance=asdict(self.tolerance))
        return data

    def raise_if_failed(self, hint: str = "") -> None:
        if not self.passed:
            layers = ""
            if self.worst_layers:
                layers = "; layers losing most: " + ", ".join(f"{n} ({e:.3g})" for n, e in self.worst_layers[:3])
            raise ParityError(f"{self.line()}{layers}{'; ' + hint if hint else ''}")


def _flat(outputs: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(o, dtype=np.float64).reshape(len(o), -1) for o in outputs], axis=1)


def _centred(rows: np.ndarray) -> np.ndarray:
    return rows - rows.mean(axis=1, keepdims=True)


@dataclass
class RowStats:
    """Per-image figures a parity report is reduced from exactly (sums, maxima, counts), so images compared
    in many places (Ray workers) give the same report as images compared in one.

    ``margin`` and the rank fields are set for a classifier (one 2-D output with several classes) only.
    """

    values: int
    logits: bool
    classifier: bool
    max_err: np.ndarray
    sum_err: np.ndarray
    cosine: np.ndarray
    ref_abs_max: np.ndarray
    ref_min: np.ndarray
    ref_max: np.ndarray
    finite: np.ndarray
    margin: np.ndarray | None = None
    ref_best: np.ndarray | None = None
    cand_best: np.ndarray | None = None
    top5_hit: np.ndarray | None = None
    top5_overlap: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.max_err)

    @classmethod
    def concat(cls, parts: Sequence[RowStats]) -> RowStats:
        """Stats of several batches, in the order given."""
        first = parts[0]
        if any((p.values, p.logits, p.classifier) != (first.values, first.logits, first.classifier) for p in parts):
            raise DataError("parity batches disagree on the outputs' shape or kind")
        arrays = {f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses_fields(cls)
                  if f.name not in ("values", "logits", "classifier") and getattr(first, f.name) is not None}
        return cls(values=first.values, logits=first.logits, classifier=first.classifier, **arrays)


def row_stats(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray], *, logits: bool = False,
              name: str = "candidate") -> RowStats:
    """Each image's errors, cosine and ranks from two runs' outputs (lists of arrays, one per model output)."""
    if len(reference) != len(candidate) or any(r.shape != c.shape for r, c in zip(reference, candidate, strict=True)):
        raise DataError(
            f"{name}: outputs do not match the reference's shapes "
            f"({[r.shape for r in reference]} vs {[c.shape for c in candidate]})"
        )
    ref, cand = _flat(reference), _flat(candidate)
    error = np.abs(ref - cand)
    classifier = len(reference) == 1 and reference[0].ndim == 2 and reference[0].shape[1] > 1
    logits = logits and classifier
    stats = RowStats(
        values=ref.shape[1], logits=logits, classifier=classifier, max_err=error.max(axis=1),
        sum_err=error.sum(axis=1), cosine=row_cosine(_centred(ref), _centred(cand)) if logits else row_cosine(ref, cand),
        ref_abs_max=np.abs(ref).max(axis=1), ref_min=ref.min(axis=1), ref_max=ref.max(axis=1),
        finite=np.isfinite(cand).all(axis=1),
    )
    if classifier:
        two_best = np.partition(ref, -2, axis=1)[:, -2:]
        k = min(5, ref.shape[1])
        ref_top = np.argpartition(-ref, k - 1, axis=1)[:, :k]
        cand_top = np.argpartition(-cand, k - 1, axis=1)[:, :k]
        stats.margin = two_best[:, 1] - two_best[:, 0]
        stats.ref_best, stats.cand_best = np.argmax(ref, axis=1), np.argmax(cand, axis=1)
        stats.top5_hit = (cand_top == stats.ref_best[:, None]).any(axis=1)
        stats.top5_overlap = np.array([len(set(r) & set(c)) / k for r, c in zip(ref_top, cand_top, strict=True)])
    return stats


def reduce_stats(stats: RowStats, precision: str, labels: np.ndarray | None = None, name: str = "candidate", *,
                 calibration_images: int | None = None) -> ParityReport:
    """The report and verdict from every image's stats (see ``Tolerance``)."""
    if precision not in TOLERANCES:
        raise InvalidArgumentError(f"unknown precision {precision!r}; tolerances exist for {', '.join(TOLERANCES)}")
    tolerance = TOLERANCES[precision]
    logits = stats.logits
    scale = max(float(stats.ref_max.max() - stats.ref_min.min()) if logits else float(stats.ref_abs_max.max()), 1e-12)
    max_abs = float(stats.max_err.max())
    cosine = float(np.mean(stats.cosine))
    report = ParityReport(
        name=name, precision=precision, samples=len(stats),
        max_abs=max_abs, mean_abs=float(stats.sum_err.sum() / (len(stats) * stats.values)), max_rel=max_abs / scale,
        cosine=cosine, top1_agreement=None, top5_agreement=None, reference_accuracy=None, candidate_accuracy=None,
        tolerance=tolerance, compared="logits" if logits else "outputs", calibration_images=calibration_images,
    )
    if stats.classifier:
        agree = stats.ref_best == stats.cand_best
        decisive = stats.margin > tolerance.decisive_margin * scale
        report.top1_agreement = float(np.mean(agree))
        report.top5_agreement = float(np.mean(stats.top5_hit))
        report.top5_overlap = float(np.mean(stats.top5_overlap))
        report.decisive = int(decisive.sum())
        report.decisive_top1 = float(np.mean(agree[decisive])) if decisive.any() else None
        if labels is not None:
            report.reference_accuracy = float(np.mean(stats.ref_best == labels))
            report.candidate_accuracy = float(np.mean(stats.cand_best == labels))
    if not stats.finite.all():
        report.failures.append("non-finite outputs")
    if tolerance.atol is not None and report.max_abs > tolerance.atol + tolerance.rtol * scale:
        report.failures.append(f"max|err| {report.max_abs:.3g} > {tolerance.atol + tolerance.rtol * scale:.3g}")
    if report.decisive and report.decisive_top1 < tolerance.min_top1:
        report.failures.append(f"top-1 agreement {report.decisive_top1:.2%} < {tolerance.min_top1:.0%} "
                               f"on {report.decisive} decisive images")
    floor = tolerance.cosine_floor(logits)
    if cosine < floor:
        report.failures.append(f"cosine{' (logits)' if logits else ''} {cosine:.4f} < {floor}")
    return report


def compare_outputs(
    reference: Sequence[np.ndarray],
    candidate: Sequence[np.ndarray],
    precision: str,
    labels: np.ndarray | None = None,
    name: str = "candidate",
    *,
    logits: bool = False,
    calibration_images: int | None = None,
) -> ParityReport:
    """Metrics and verdict from two runs' outputs (lists of arrays, one per model output).

    ``logits``: both sides are a classifier's logits; errors are then relative to the reference's logit
    range and the cosine is taken on centred rows (see ``Tolerance``).
    """
    return reduce_stats(row_stats(reference, candidate, logits=logits, name=name), precision, labels, name,
                        calibration_images=calibration_images)


def run_outputs(predictor, images: np.ndarray, batch_size: int = 32) -> list[np.ndarray]:
    """All outputs of a predictor over RGB ``uint8`` images, concatenated per output."""
    chunks: list[list[np.ndarray]] = []
    for start in range(0, len(images), batch_size):
        chunks.append(predictor.run(images[start : start + batch_size]))
    return [np.concatenate(parts) for parts in zip(*chunks, strict=True)]


def reference_model_for(reference, candidate):
    """The Keras model a candidate is compared with (its logits twin when the candidate outputs logits);
    None when the reference is not a Keras model."""
    if reference is None or reference.backend.name != "keras":
        return None
    from .models.reference import matching_reference

    metadata = candidate.metadata
    return matching_reference(reference.native(), metadata.output_activation if metadata else None)


def paired_outputs(reference, candidate, images: np.ndarray, keras_model=None, batch_size: int = 32,
                   reference_outputs: list[np.ndarray] | None = None) -> tuple[list[np.ndarray], list[np.ndarray], bool]:
    """The reference's and the candidate's outputs on the same images, in the form they are compared in, and
    whether they are logits. A candidate that outputs logits meets the Keras model's own logits when the
    reference is a Keras model (``keras_model``), else a softmax of its logits meets the reference's probabilities.
    """
    candidate_outputs = run_outputs(candidate, images, batch_size)
    metadata = candidate.metadata
    logits = (metadata.output_activation if metadata else None) == "linear"
    if logits and keras_model is not None:  # the Keras model's own logits, whatever outputs were passed in
        reference_outputs = _keras_outputs(keras_model, images)
    elif reference_outputs is None:
        reference_outputs = run_outputs(reference, images, batch_size)
    if logits and len(reference_outputs) == 1 and looks_like_probabilities(reference_outputs[0]):
        candidate_outputs, logits = [to_probabilities(candidate_outputs[0], "linear")], False
    return reference_outputs, candidate_outputs, logits


def compare(
    reference, candidate, data: Dataset, precision: str | None = None, batch_size: int = 32,
    name: str | None = None, reference_outputs: list[np.ndarray] | None = None,
) -> ParityReport:
    """Run ``reference`` and ``candidate`` Predictors on the same images and compare their outputs.

    ``precision`` defaults to the candidate's metadata; ``reference_outputs`` replaces the reference run
    (outputs saved on another machine with ``save_reference``; ``reference`` may then be None). How logits
    are compared: see ``paired_outputs``.
    """
    data = data.resized(candidate.input_spec.size, candidate.resize_policy)
    metadata = candidate.metadata
    if precision is None:
        precision = metadata.precision if metadata else "fp32"
    if reference_outputs is not None and len(reference_outputs[0]) != len(data):
        raise DataError(f"saved reference outputs cover {len(reference_outputs[0])} images, the data has {len(data)}")
    keras_model = reference_model_for(reference, candidate)
    reference_outputs, candidate_outputs, logits = paired_outputs(reference, candidate, data.images, keras_model,
                                                                  batch_size, reference_outputs)
    model_labels = metadata.labels if metadata else ()
    labels = data.labels if labels_match(data, reference_outputs, model_labels) else None
    report = compare_outputs(reference_outputs, candidate_outputs, precision, labels, name or Path(candidate.path).name,
                             logits=logits, calibration_images=calibration_images_of(metadata))
    report.ran = candidate.backend.inference_precision
    if keras_model is not None:
        diagnose(report, keras_model, Path(candidate.path), data.images)
    return report


def verify_artifact(model, artifact_path: Path, precision: str, data: Dataset | None, count: int = 500,
                    label: str = "artifact") -> ParityReport:
    """The export-time check: the fresh artifact against the in-memory Keras model on real images."""
    from .data import load_digits
    from .runtime import load

    height, width = (int(v) for v in model.input_shape[1:3])
    if data is None:
        data = load_digits((height, width))
    with load(artifact_path, device="auto") as candidate:
        data = data.sample(count).resized((height, width), candidate.resize_policy)
        candidate_outputs = run_outputs(candidate, data.images)
        metadata, ran = candidate.metadata, candidate.backend.inference_precision
    from .models.reference import matching_reference

    activation = metadata.output_activation if metadata else None
    reference_model = matching_reference(model, activation)
    keras_outputs = _keras_outputs(reference_model, data.images)
    labels = data.labels if labels_match(data, keras_outputs) else None
    report = compare_outputs(keras_outputs, candidate_outputs, precision, labels, label, logits=activation == "linear",
                             calibration_images=calibration_images_of(metadata))
    report.ran = ran
    diagnose(report, reference_model, Path(artifact_path), data.images)
    return report


def calibration_images_of(metadata) -> int | None:
    count = metadata.extra.get("calibration_images") if metadata is not None else None
    return int(count) if isinstance(count, int) else None


_reference = KeepLast()  # the last Keras reference outputs


def _keras_outputs(model, images: np.ndarray) -> list[np.ndarray]:
    """The Keras model's outputs on ``images``; the last ones are kept, so several formats share one run."""
    from .models.reference import model_digest

    def run() -> list[np.ndarray]:
        outputs = model.predict(images.astype(np.float32), batch_size=32, verbose=0)
        return outputs if isinstance(outputs, list) else [outputs]

    images_digest = hashlib.sha256(np.ascontiguousarray(images)).hexdigest()
    # id(): this model object only; a reused id matches nothing unless the digest does too
    return _reference.get((id(model), model_digest(model), images.shape, images.dtype.str, images_digest), run)


def diagnose(report: ParityReport, model, artifact_path: Path, images: np.ndarray) -> None:
    """On a failed int8 check, name the layers that lose the most; a diagnosis that fails changes nothing."""
    from .registry import BACKENDS

    readable = {s for row in BACKENDS.values() if row.intermediates for s in row.suffixes}
    if report.passed or report.precision != "int8" or artifact_path.suffix.lower() not in readable:
        return
    from .layerwise import worst_layers

    with contextlib.suppress(ResnetEdgeError):
        report.worst_layers = worst_layers(model, artifact_path, images[:DIAGNOSIS_IMAGES])


def labels_match(data: Dataset, outputs: list[np.ndarray], model_labels: Sequence[str] = ()) -> bool:
    """Accuracy only means something when the data's classes are the model's classes."""
    if data.labels is None or len(outputs) != 1 or outputs[0].ndim != 2:
        return False
    return classes_match(data.class_names, outputs[0].shape[1], model_labels)


def classes_match(class_names: Sequence[str], classes: int, model_labels: Sequence[str] = ()) -> bool:
    """The data's class names are the model's labels (or, without labels, as many as its outputs)."""
    if model_labels:
        return tuple(model_labels) == tuple(class_names)
    return len(class_names) == classes


def save_reference(path: str | os.PathLike[str], outputs: list[np.ndarray], data: Dataset) -> Path:
    """Reference outputs with the images (and labels) they came from, to check an artifact on another machine."""
    from .atomic import atomic_path

    path = Path(path)
    arrays = {f"output_{i}": o for i, o in enumerate(outputs)}
    arrays["images"] = data.images
    if data.labels is not None:
        arrays["labels"] = data.labels
    info = json.dumps({"source": data.source, "class_names": list(data.class_names)})
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, info=np.array(info), **arrays)
    return path


def load_reference(path: str | os.PathLike[str]) -> tuple[list[np.ndarray], Dataset]:
    """The outputs and images written by ``save_reference``."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = sorted((k for k in archive.files if k.startswith("output_")), key=lambda k: int(k.split("_")[1]))
            if not keys or "images" not in archive.files:
                raise DataError(f"{path}: not a saved reference (no outputs or images in it)")
            info = json.loads(str(archive["info"])) if "info" in archive.files else {}
            labels = archive["labels"] if "labels" in archive.files else None
            data = Dataset(archive["images"], labels, tuple(info.get("class_names", ())), info.get("source", str(path)))
            return [archive[k] for k in keys], data
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: cannot read saved reference outputs ({exc})") from exc
