"""Accuracy parity of an artifact against the float model: metrics, per-precision tolerances, reports."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclasses_fields
from pathlib import Path
from typing import Any

import numpy as np

from ._memo import PerModel
from .data import Dataset
from .errors import DataError, InvalidArgumentError, ParityError, ResnetEdgeError, first_line
from .metrics import row_cosine
from .predictor import looks_like_probabilities, to_probabilities
from .registry import KERAS_SUFFIXES

DIAGNOSIS_IMAGES = 32
FLAT_LOGITS = 1e-6  # a logit range below this carries no signal to compare


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

    Feature maps and embeddings are judged per output: the cosine of each image's centred values (ReLU maps and
    pooled vectors are non-negative, which inflates a plain cosine) averaged, the worst output at least
    ``min_map_cosine``, and ``max_abs <= atol + rtol * range`` with the output's own range. An embedding is also
    judged by what an image search sees (``min_recall1``/``min_recall5``): each verification image's nearest
    neighbours among the others found with the artifact's vectors, counted as found when their float similarity
    is within ``neighbour_margin`` of the float model's own k-th best (see ``retrieval_agreement``).
    """

    atol: float | None
    rtol: float
    min_top1: float
    min_cosine: float
    min_logit_cosine: float | None = None
    decisive_margin: float = 0.0
    min_map_cosine: float = 0.9999
    min_recall1: float = 0.99
    min_recall5: float = 0.99
    neighbour_margin: float = 1e-3

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
    "fp32": Tolerance(atol=1e-4, rtol=1e-3, min_top1=0.99, min_cosine=0.9999, decisive_margin=1e-3,
                      min_map_cosine=0.9999, min_recall1=0.99, min_recall5=0.99, neighbour_margin=1e-4),
    "fp16": Tolerance(atol=1e-2, rtol=2e-2, min_top1=0.99, min_cosine=0.999, decisive_margin=0.01,
                      min_map_cosine=0.999, min_recall1=0.99, min_recall5=0.99, neighbour_margin=2e-3),
    # bf16 keeps 8 mantissa bits (fp16: 11): OpenVINO bf16 on digits drifts up to 0.016 in probability
    "bf16": Tolerance(atol=5e-2, rtol=5e-2, min_top1=0.99, min_cosine=0.995, decisive_margin=0.05,
                      min_map_cosine=0.995, min_recall1=0.98, min_recall5=0.98, neighbour_margin=5e-3),
    "int8": Tolerance(atol=None, rtol=0.0, min_top1=0.99, min_cosine=0.95, min_logit_cosine=0.99,
                      decisive_margin=0.02, min_map_cosine=0.98, min_recall1=0.95, min_recall5=0.95,
                      neighbour_margin=0.01),
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
    data: str = ""  # which images verified it: "32 images of photos/ (held out from calibration)"
    task: str = "classifier"
    levels: list[dict[str, Any]] = field(default_factory=list)  # per output: name, cosine, max_rel, mean_rel
    worst_level: str | None = None
    recall_at_1: float | None = None
    recall_at_5: float | None = None
    exact_at_1: float | None = None
    stand_in: bool = False  # the images were built-in ones standing in for the user's (none were given)
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
        on = f" on {self.data}" if self.data else f" on {self.samples} images"
        parts = [f"{self.name}: {'PASS' if self.passed else 'FAIL'} ({self.precision}{ran}{calibrated}){on}",
                 f"max|err|{what} {self.max_abs:.3g}", f"mean|err| {self.mean_abs:.3g}", f"cos{what} {self.cosine:.6f}"]
        if self.top1_agreement is not None:
            decisive = ""
            if self.decisive is not None and self.decisive < self.samples:
                decisive = (f" ({self.decisive_top1:.2%} of {self.decisive} decisive)" if self.decisive
                            else " (no decisive image)")
            parts.append(f"top-1 agree {self.top1_agreement:.2%}{decisive}")
        if self.candidate_accuracy is not None and self.accuracy_delta is not None:
            parts.append(f"acc {self.candidate_accuracy:.2%} (Δ {self.accuracy_delta:+.2%})")
        if len(self.levels) > 1:
            parts.append("cos per output " + " ".join(f"{lv['name']} {lv['cosine']:.4f}" for lv in self.levels)
                         + f" (worst {self.worst_level})")
        if self.recall_at_1 is not None:
            parts.append(f"recall@1 {self.recall_at_1:.2%}, recall@5 {self.recall_at_5:.2%} "
                         f"(same nearest neighbour {self.exact_at_1:.2%})")
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
    ref_finite: np.ndarray
    margin: np.ndarray | None = None
    ref_best: np.ndarray | None = None
    cand_best: np.ndarray | None = None
    top5_hit: np.ndarray | None = None
    top5_overlap: np.ndarray | None = None
    task: str = "classifier"
    names: tuple[str, ...] = ()
    level_cosine: np.ndarray | None = None  # (images, outputs): centred cosine per output
    level_max_err: np.ndarray | None = None
    level_sum_err: np.ndarray | None = None
    level_min: np.ndarray | None = None  # the reference's range per image and output
    level_max: np.ndarray | None = None
    level_values: tuple[int, ...] = ()
    ref_vectors: np.ndarray | None = None  # an embedding's vectors, for the retrieval check (it needs all images)
    cand_vectors: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.max_err)

    @classmethod
    def concat(cls, parts: Sequence[RowStats]) -> RowStats:
        """Stats of several batches, in the order given."""
        first = parts[0]
        fixed = ("values", "logits", "classifier", "task", "names", "level_values")
        if any(tuple(getattr(p, k) for k in fixed) != tuple(getattr(first, k) for k in fixed) for p in parts):
            raise DataError("parity batches disagree on the outputs' shape or kind")
        arrays = {f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses_fields(cls)
                  if f.name not in fixed and getattr(first, f.name) is not None}
        return cls(**{k: getattr(first, k) for k in fixed}, **arrays)


def row_stats(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray], *, logits: bool = False,
              name: str = "candidate", task: str = "classifier", names: Sequence[str] = ()) -> RowStats:
    """Each image's errors, cosine and ranks from two runs' outputs (lists of arrays, one per model output)."""
    if len(reference) != len(candidate) or any(r.shape != c.shape for r, c in zip(reference, candidate, strict=True)):
        raise DataError(
            f"{name}: outputs do not match the reference's shapes "
            f"({[r.shape for r in reference]} vs {[c.shape for c in candidate]})"
        )
    ref, cand = _flat(reference), _flat(candidate)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN and inf are reported as failures, not warnings
        stats = _row_stats(ref, cand, reference, logits and task == "classifier")
        if task != "classifier":
            _output_stats(stats, reference, candidate, task, names)
        return stats


def _output_stats(stats: RowStats, reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray], task: str,
                  names: Sequence[str]) -> None:
    """Per output (feature level, or the embedding): centred cosine, errors and the reference's range per image;
    an embedding's vectors themselves, for the retrieval check."""
    stats.task, stats.classifier, stats.logits = task, False, False
    stats.names = tuple(names) if len(names) == len(reference) else tuple(f"output_{i}" for i in range(len(reference)))
    refs = [np.asarray(r, dtype=np.float64).reshape(len(r), -1) for r in reference]
    cands = [np.asarray(c, dtype=np.float64).reshape(len(c), -1) for c in candidate]
    stats.level_values = tuple(r.shape[1] for r in refs)
    stats.level_cosine = np.stack([row_cosine(_centred(r), _centred(c)) for r, c in zip(refs, cands, strict=True)], 1)
    errors = [np.abs(r - c) for r, c in zip(refs, cands, strict=True)]
    stats.level_max_err = np.stack([e.max(axis=1) for e in errors], 1)
    stats.level_sum_err = np.stack([e.sum(axis=1) for e in errors], 1)
    stats.level_min = np.stack([r.min(axis=1) for r in refs], 1)
    stats.level_max = np.stack([r.max(axis=1) for r in refs], 1)
    if task == "embedding":
        stats.ref_vectors, stats.cand_vectors = refs[0].astype(np.float32), cands[0].astype(np.float32)


def _row_stats(ref: np.ndarray, cand: np.ndarray, reference: Sequence[np.ndarray], logits: bool) -> RowStats:
    error = np.abs(ref - cand)
    classifier = len(reference) == 1 and reference[0].ndim == 2 and reference[0].shape[1] > 1
    logits = logits and classifier
    stats = RowStats(
        values=ref.shape[1], logits=logits, classifier=classifier, max_err=error.max(axis=1),
        sum_err=error.sum(axis=1), cosine=row_cosine(_centred(ref), _centred(cand)) if logits else row_cosine(ref, cand),
        ref_abs_max=np.abs(ref).max(axis=1), ref_min=ref.min(axis=1), ref_max=ref.max(axis=1),
        finite=np.isfinite(cand).all(axis=1), ref_finite=np.isfinite(ref).all(axis=1),
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
                 calibration_images: int | None = None, agreement: bool = True) -> ParityReport:
    """The report and verdict from every image's stats (see ``Tolerance``).

    A NaN or infinity on either side fails with its own reason (NaN compares false with every bound, so it
    would otherwise pass). ``agreement=False`` leaves top-1 agreement out of the report and the verdict: the
    images were built-in ones standing in for the user's, and a class "agreement" on them means nothing.
    """
    if precision not in TOLERANCES:
        raise InvalidArgumentError(f"unknown precision {precision!r}; tolerances exist for {', '.join(TOLERANCES)}")
    if len(stats) == 0:
        raise DataError(f"{name}: no image to compare on")
    tolerance = TOLERANCES[precision]
    logits = stats.logits
    usable = stats.finite & stats.ref_finite
    kept = (lambda values: values[usable]) if usable.any() else (lambda values: values)
    span = float(kept(stats.ref_max).max() - kept(stats.ref_min).min()) if logits else float(kept(stats.ref_abs_max).max())
    scale = max(span, 1e-12) if np.isfinite(span) else 1e-12
    max_abs = float(stats.max_err.max())
    cosine = float(np.mean(stats.cosine))
    report = ParityReport(
        name=name, precision=precision, samples=len(stats),
        max_abs=max_abs, mean_abs=float(stats.sum_err.sum() / (len(stats) * stats.values)), max_rel=max_abs / scale,
        cosine=cosine, top1_agreement=None, top5_agreement=None, reference_accuracy=None, candidate_accuracy=None,
        tolerance=tolerance, compared="logits" if logits else "outputs", calibration_images=calibration_images,
    )
    if not stats.ref_finite.all():
        report.failures.append(f"the reference's outputs are not finite (NaN or inf) on "
                               f"{int((~stats.ref_finite).sum())} of {len(stats)} images")
    if not stats.finite.all():
        report.failures.append(f"non-finite outputs (NaN or inf) on {int((~stats.finite).sum())} of {len(stats)} images")
    if stats.task != "classifier":
        _judge_outputs(report, stats, tolerance)
        return report
    if stats.classifier and agreement:
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
    if tolerance.atol is not None and report.max_abs > tolerance.atol + tolerance.rtol * scale:
        report.failures.append(f"max|err| {report.max_abs:.3g} > {tolerance.atol + tolerance.rtol * scale:.3g}")
    if report.decisive and report.decisive_top1 < tolerance.min_top1:
        report.failures.append(f"top-1 agreement {report.decisive_top1:.2%} < {tolerance.min_top1:.0%} "
                               f"on {report.decisive} decisive images")
    floor = tolerance.cosine_floor(logits)
    if logits and span < FLAT_LOGITS:
        report.failures.append(f"the float model's logits do not vary on these images (range {span:.3g}): an untrained "
                               "or broken model leaves nothing to compare")
    elif cosine < floor:
        report.failures.append(f"cosine{' (logits)' if logits else ''} {cosine:.4f} < {floor}")
    return report


def _judge_outputs(report: ParityReport, stats: RowStats, tolerance: Tolerance) -> None:
    """The feature-map and embedding verdict: every output by its own range and centred cosine, the worst named;
    an embedding's nearest neighbours too (see ``Tolerance``)."""
    report.task = stats.task
    usable = stats.finite & stats.ref_finite
    rows = usable if usable.any() else np.ones(len(stats), bool)
    for index, name in enumerate(stats.names):
        span = float(stats.level_max[rows, index].max() - stats.level_min[rows, index].min())
        span = max(span, 1e-12) if np.isfinite(span) else 1e-12
        max_err = float(stats.level_max_err[:, index].max())
        report.levels.append({
            "name": name, "cosine": float(np.mean(stats.level_cosine[:, index])),
            "min_cosine": float(np.min(stats.level_cosine[:, index])), "max_abs": max_err, "range": span,
            "max_rel": max_err / span,
            "mean_rel": float(stats.level_sum_err[:, index].sum() / (len(stats) * stats.level_values[index])) / span,
        })
    worst = min(report.levels, key=lambda level: level["cosine"])
    report.worst_level, report.cosine = worst["name"], worst["cosine"]
    report.compared = "feature maps" if stats.task == "features" else "embeddings"
    if worst["cosine"] < tolerance.min_map_cosine:
        report.failures.append(f"cosine {worst['cosine']:.4f} < {tolerance.min_map_cosine} on {worst['name']}")
    if tolerance.atol is not None:
        for level in report.levels:
            bound = tolerance.atol + tolerance.rtol * level["range"]
            if level["max_abs"] > bound:
                report.failures.append(f"max|err| {level['max_abs']:.3g} > {bound:.3g} on {level['name']}")
    if stats.task == "embedding" and stats.ref_vectors is not None and len(stats) > 2:
        recall1, recall5, exact1 = retrieval_agreement(stats.ref_vectors, stats.cand_vectors,
                                                       tolerance.neighbour_margin)
        report.recall_at_1, report.recall_at_5, report.exact_at_1 = recall1, recall5, exact1
        if recall1 < tolerance.min_recall1:
            report.failures.append(f"recall@1 {recall1:.2%} < {tolerance.min_recall1:.0%}")
        if recall5 < tolerance.min_recall5:
            report.failures.append(f"recall@5 {recall5:.2%} < {tolerance.min_recall5:.0%}")


def retrieval_agreement(reference: np.ndarray, candidate: np.ndarray, margin: float) -> tuple[float, float, float]:
    """What an image search with the artifact's vectors finds, each verification image a query among the others
    (cosine similarity), judged by the float vectors: recall@k is the share of the artifact's top-k whose float
    similarity to the query is at least the float k-th best minus ``margin`` (a neighbour as good as the float
    model's own, within the precision's noise: near-duplicates tie), and ``exact@1`` how often both pick the very
    same nearest neighbour. Returns (recall@1, recall@5, exact@1)."""
    def similarities(vectors: np.ndarray) -> np.ndarray:
        unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        table = unit @ unit.T
        np.fill_diagonal(table, -np.inf)
        return table

    ref, cand = similarities(reference.astype(np.float64)), similarities(candidate.astype(np.float64))
    k = min(5, len(ref) - 1)
    ref_sorted = -np.sort(-ref, axis=1)
    cand_top = np.argsort(-cand, axis=1, kind="stable")[:, :k]
    found = np.take_along_axis(ref, cand_top, axis=1)  # the float similarity of what the artifact found
    recall1 = float(np.mean(found[:, 0] >= ref_sorted[:, 0] - margin))
    recall5 = float(np.mean(found >= ref_sorted[:, k - 1 : k] - margin))
    exact1 = float(np.mean(cand_top[:, 0] == np.argmax(ref, axis=1)))
    return recall1, recall5, exact1


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
    if len(images) == 0:
        raise DataError("no image to run the model on")
    chunks: list[list[np.ndarray]] = []
    for start in range(0, len(images), batch_size):
        chunks.append(predictor.run(images[start : start + batch_size]))
    return [np.concatenate(parts) for parts in zip(*chunks, strict=True)]


def keras_model_of(reference: Any) -> Any:
    """The Keras model behind a reference: a ``keras.Model`` itself, or the one a Keras-backend Predictor holds."""
    if reference is None:
        return None
    backend = getattr(reference, "backend", None)
    if backend is not None:
        return reference.native() if backend.name == "keras" else None
    return reference


@dataclass(frozen=True)
class Candidate:
    """What the reduction needs to know of a candidate: small and picklable, so Ray workers can send it back."""

    name: str
    path: str
    precision: str
    labels: tuple[str, ...]
    calibration_images: int | None
    ran: str | None


class Comparison:
    """One candidate against one reference, in two steps that may run in different places.

    ``stats(images)`` runs both on a batch and returns per-image figures (in process, or on a Ray worker);
    ``report(stats, data)`` reduces them, matches the data's labels with the model's classes and, for a failed
    int8 artifact, names the layers that lose the most. Every parity check (export verification, ``parity``,
    ``optimize``, the accuracy budget, Ray) goes through this class.

    ``reference`` is a ``keras.Model``, a Predictor (of any backend), or None when the reference outputs are
    passed to ``stats`` (saved on another machine). A candidate that outputs logits is compared with the Keras
    model's own logits (the model cut before its softmax) when the reference is a Keras model, else a softmax of
    its logits meets the reference's probabilities.
    """

    def __init__(self, reference: Any, candidate: Any, *, precision: str | None = None, name: str | None = None,
                 batch_size: int = 32) -> None:
        metadata = candidate.metadata
        self.candidate, self.batch_size = candidate, batch_size
        self.task, self.names = candidate.task, tuple(candidate.output_names)
        self.logits = self.task == "classifier" and (metadata.output_activation if metadata else None) == "linear"
        keras_model = keras_model_of(reference)
        self.keras_model = self._digest = None
        if keras_model is not None:  # only then Keras: saved reference outputs are compared without TensorFlow
            from .models.reference import matching_reference, model_digest

            self.keras_model = matching_reference(keras_model, metadata.output_activation if metadata else None)
            self._digest = model_digest(self.keras_model)
        self.reference = None if self.keras_model is not None else reference
        self.info = Candidate(name or Path(candidate.path).name, str(candidate.path),
                              precision or (metadata.precision if metadata else "fp32"),
                              tuple(metadata.labels) if metadata else (), calibration_images_of(metadata),
                              candidate.backend.inference_precision)

    def stats(self, images: np.ndarray, reference_outputs: list[np.ndarray] | None = None) -> RowStats:
        """Per-image figures of the candidate against the reference on ``images`` (RGB ``uint8`` at the
        candidate's input size)."""
        candidate_outputs = run_outputs(self.candidate, images, self.batch_size)
        logits = self.logits
        if reference_outputs is None:
            if self.keras_model is not None:
                reference_outputs = _keras_outputs(self.keras_model, images, self._digest)
            elif self.reference is not None:
                reference_outputs = run_outputs(self.reference, images, self.batch_size)
            else:
                raise InvalidArgumentError("a comparison without a reference model needs the reference outputs")
        if logits and len(reference_outputs) == 1 and looks_like_probabilities(reference_outputs[0]):
            candidate_outputs, logits = [to_probabilities(candidate_outputs[0], "linear")], False
        return row_stats(reference_outputs, candidate_outputs, logits=logits, name=self.info.name,
                         task=self.task, names=self.names)

    def report(self, stats: RowStats, data: Dataset, diagnosis_images: np.ndarray | None = None) -> ParityReport:
        """The verdict over ``data`` (whose ``stats`` these are, in order); see ``reduce_stats``."""
        return reduce_candidate(stats, self.info, data, self.keras_model, diagnosis_images)

    def run(self, data: Dataset, reference_outputs: list[np.ndarray] | None = None) -> ParityReport:
        """Both steps in this process, batch by batch (feature maps of many images need not fit in memory)."""
        step = max(self.batch_size, 1)
        parts = []
        for start in range(0, len(data), step):
            given = None if reference_outputs is None else [o[start : start + step] for o in reference_outputs]
            parts.append(self.stats(data.images[start : start + step], given))
        if not parts:
            raise DataError(f"{self.info.name}: no image to compare on")
        return self.report(RowStats.concat(parts), data, data.images[:DIAGNOSIS_IMAGES])


def reduce_candidate(stats: RowStats, info: Candidate, data: Dataset, keras_model: Any = None,
                     diagnosis_images: np.ndarray | None = None) -> ParityReport:
    """A candidate's report from its per-image stats over ``data``: labels matched, provenance recorded, a failed
    int8 artifact diagnosed against ``keras_model`` on ``diagnosis_images``."""
    classes_agree = stats.classifier and classes_match(data.class_names, stats.values, info.labels)
    labels = data.labels if data.labels is not None and classes_agree else None
    report = reduce_stats(stats, info.precision, labels, info.name, calibration_images=info.calibration_images,
                          agreement=not data.stand_in or classes_agree)
    report.ran, report.data, report.stand_in = info.ran, data.describe(), data.stand_in
    if keras_model is not None and diagnosis_images is not None:
        diagnose(report, keras_model, Path(info.path), diagnosis_images)
    return report


def compare(
    reference, candidate, data: Dataset, precision: str | None = None, batch_size: int = 32,
    name: str | None = None, reference_outputs: list[np.ndarray] | None = None,
) -> ParityReport:
    """Run ``reference`` (a Predictor or a ``keras.Model``) and ``candidate`` on the same images and compare.

    ``precision`` defaults to the candidate's metadata; ``reference_outputs`` replaces the reference run
    (outputs saved on another machine with ``save_reference``; ``reference`` may then be None).
    """
    data = data.resized(candidate.input_spec.size, candidate.resize_policy)
    if reference_outputs is not None:
        check_reference_outputs(reference_outputs, len(data))
    return Comparison(reference, candidate, precision=precision, name=name, batch_size=batch_size).run(
        data, reference_outputs)


def check_artifacts(
    reference: str | os.PathLike[str] | None,
    candidates: Sequence[str | os.PathLike[str]],
    data: str | os.PathLike[str] = "digits",
    *,
    count: int = 500,
    device: str = "auto",
    batch_size: int = 32,
    save_outputs: str | os.PathLike[str] | None = None,
    load_outputs: str | os.PathLike[str] | None = None,
    progress: Any = None,
) -> list[ParityReport]:
    """``resnet-edge parity``: each candidate artifact against the Keras model on a stratified sample of ``data``.

    ``save_outputs`` writes the reference's outputs and images (``.npz``) for a check on another machine;
    ``load_outputs`` reads them instead of running a reference (``reference`` is then None).
    """
    from .data import load_dataset
    from .predictor import load

    say = progress or (lambda message: None)
    if count < 1 or batch_size < 1:
        raise InvalidArgumentError("--n and --batch-size must be at least 1")
    if load_outputs is not None:
        if reference is not None:
            raise InvalidArgumentError("with --load-outputs give only artifacts: the saved outputs are the reference")
        if save_outputs is not None:
            raise InvalidArgumentError("--save-outputs and --load-outputs cannot be combined")
        if not candidates:
            raise InvalidArgumentError("give at least one artifact to compare with the saved outputs")
        reference_outputs, dataset = load_reference(load_outputs)
        reports = []
        for path in candidates:
            with load(path, device=device) as candidate:
                reports.append(compare(None, candidate, dataset, batch_size=batch_size,
                                       reference_outputs=reference_outputs))
        return reports
    if reference is None or Path(reference).suffix.lower() not in KERAS_SUFFIXES:
        raise InvalidArgumentError(f"{reference}: the reference must be a Keras model (.keras/.h5)")
    if not candidates and save_outputs is None:
        raise InvalidArgumentError("give at least one artifact to compare (or --save-outputs FILE)")
    with load(reference, device="cpu") as model:
        dataset = load_dataset(data, model.input_spec.size, model.resize_policy).sample(count)
        if save_outputs is not None:
            save_reference(save_outputs, run_outputs(model, dataset.images, batch_size), dataset)
            say(f"saved reference outputs for {dataset.describe()} to {save_outputs}")
        reports = []
        for path in candidates:
            with load(path, device=device) as candidate:
                reports.append(compare(model, candidate, dataset, batch_size=batch_size))
    return reports


def verify_artifact(model, artifact_path: str | os.PathLike[str], data: Dataset, count: int = 500,
                    label: str = "artifact") -> ParityReport:
    """The export-time check: a fresh artifact against the in-memory Keras model on a sample of ``data``."""
    from .predictor import load

    with load(artifact_path, device="auto") as candidate:
        return compare(model, candidate, data.sample(count), name=label)


def verification_set(calibration: Any, verify_data: Any, size: tuple[int, int], policy: str) -> Dataset:
    """The images an export is verified on, by one rule (the README's "Which images verify an export"):

    the user's ``verify_data`` (a Dataset or a source: folder, ``.npy``, ``photos``, ``digits``); else the
    calibration hold-out (a small folder keeps one back: see ``CalibrationSet.from_dataset``); else, when
    nothing could be held out, the calibration images themselves, with a warning; and only when the user gave no
    images at all, the built-in digits, marked as standing in (no class agreement is reported on them unless the
    model's classes are the digits).
    """
    from .data import load_dataset, load_digits

    if verify_data is not None:
        if isinstance(verify_data, Dataset):
            return verify_data
        return load_dataset(verify_data, size, policy)
    if calibration is not None:
        if calibration.holdout is not None and len(calibration.holdout):
            return calibration.holdout
        warnings.warn(f"{calibration.source}: too few images to hold any out; the export is verified on the "
                      "calibration images themselves (give --verify-data for an independent check)", stacklevel=2)
        return calibration.as_dataset()
    return load_digits(size, policy).noted("built-in: no images given, pass --verify-data or --calib-data",
                                           stand_in=True)


def calibration_images_of(metadata) -> int | None:
    count = metadata.extra.get("calibration_images") if metadata is not None else None
    return int(count) if isinstance(count, int) else None


_reference = PerModel(max_bytes=256 * 2**20)  # Keras outputs per batch, shared by several formats' checks


def _keras_outputs(model, images: np.ndarray, digest: str | None = None) -> list[np.ndarray]:
    """The Keras model's outputs on ``images``, kept (within a memory bound) for the next format's check."""
    from .models.reference import model_digest

    def run() -> list[np.ndarray]:
        outputs = model.predict(images.astype(np.float32), batch_size=32, verbose=0)
        return [np.asarray(o) for o in outputs] if isinstance(outputs, (list, tuple)) else [np.asarray(outputs)]

    images_digest = hashlib.sha256(np.ascontiguousarray(images)).hexdigest()
    key = (digest or model_digest(model), images.shape, images.dtype.str, images_digest)
    return _reference.get(model, key, run, size=lambda outputs: sum(o.nbytes for o in outputs))


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


def check_reference_outputs(outputs: Sequence[np.ndarray], images: int) -> None:
    """Saved reference outputs that can stand in for a reference run on ``images`` images: one line otherwise."""
    for index, output in enumerate(outputs):
        if output.ndim < 2 or not np.issubdtype(output.dtype, np.number) or output.dtype == np.bool_:
            raise DataError(f"saved reference output {index} is not a batch of numbers (shape {output.shape}, "
                            f"{output.dtype})")
        if len(output) != images:
            raise DataError(f"saved reference outputs cover {len(output)} images, the data has {images}")
        if not np.isfinite(output).all():
            raise DataError(f"saved reference output {index} holds NaN or inf values: the reference run was broken")


def save_reference(path: str | os.PathLike[str], outputs: list[np.ndarray], data: Dataset) -> Path:
    """Reference outputs with the images (and labels) they came from, to check an artifact on another machine."""
    from .atomic import atomic_path

    check_reference_outputs(outputs, len(data))
    path = Path(path)
    arrays = {f"output_{i}": o for i, o in enumerate(outputs)}
    arrays["images"] = data.images
    if data.labels is not None:
        arrays["labels"] = data.labels
    info = json.dumps({"schema": REFERENCE_SCHEMA, "source": data.source, "class_names": list(data.class_names)})
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, info=np.array(info), **arrays)
    return path


REFERENCE_SCHEMA = 1
_OUTPUT_KEY = re.compile(r"output_(\d{1,4})")


def load_reference(path: str | os.PathLike[str]) -> tuple[list[np.ndarray], Dataset]:
    """The outputs and images written by ``save_reference``; any other ``.npz`` (or a broken one) is one DataError."""
    def refuse(reason: str) -> DataError:
        return DataError(f"{path}: not a reference saved by 'parity --save-outputs' ({reason})")

    try:
        loaded = np.load(path, allow_pickle=False)
        if not hasattr(loaded, "files"):
            raise refuse("a plain .npy array, not an .npz archive")
        with loaded as archive:
            names = set(archive.files)
            keys = sorted((k for k in names if _OUTPUT_KEY.fullmatch(k)), key=lambda k: int(k.split("_")[1]))
            if not keys or "images" not in names:
                raise refuse("no outputs or images in it")
            if [int(k.split("_")[1]) for k in keys] != list(range(len(keys))):
                raise refuse("its outputs are not numbered 0, 1, ...")
            info: dict[str, Any] = {}
            if "info" in names:
                text = archive["info"]
                if text.dtype.kind != "U" or text.ndim != 0 or len(str(text)) > 1_000_000:
                    raise refuse("its info entry is not a JSON text")
                info = json.loads(str(text))
                if not isinstance(info, dict):
                    raise refuse("its info entry is not a JSON object")
            images = archive["images"]
            if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or not len(images):
                raise refuse(f"its images are not RGB uint8 NHWC (shape {images.shape}, {images.dtype})")
            labels = archive["labels"] if "labels" in names else None
            if labels is not None and (labels.shape != (len(images),) or labels.dtype.kind not in "iu"):
                raise refuse("its labels do not match its images")
            class_names = info.get("class_names", [])
            if not isinstance(class_names, list) or not all(isinstance(n, str) for n in class_names):
                raise refuse("its class names are not a list of strings")
            source = info.get("source", str(path))
            data = Dataset(images, labels, tuple(class_names), str(source), note="saved reference images")
            outputs = [archive[k] for k in keys]
    except DataError:
        raise
    except (OSError, ValueError, KeyError, EOFError, RecursionError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read saved reference outputs ({first_line(exc)})") from exc
    check_reference_outputs(outputs, len(data))
    return outputs, data
