"""An accuracy budget for int8 exports, met by keeping the layers that lose the most in float.

int8 fails where one tensor cannot share a per-tensor scale (an outlier channel makes every other
channel round to zero). The layer-wise diagnosis names the layer whose output drifts most, which is the
*consumer* of such a tensor; a tensor stays float only when its producer and its consumers are float
(measured with ONNX Runtime and TFLite: either end alone changes nothing). So each step keeps in float
the named layer's fused unit (conv + batch norm + activation) and the units that produce its inputs,
rebuilds, verifies again, and repeats until the budget is met or ``max_float_layers`` is reached.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import InvalidArgumentError
from .parity import DIAGNOSIS_IMAGES

FUSABLE = ("BatchNormalization", "Activation", "ReLU")
WEIGHTED = ("Conv1D", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense")


@dataclass(frozen=True)
class AccuracyBudget:
    """How much an int8 artifact may lose, in percentage points.

    The loss is the accuracy drop against the float model where the verification images carry the model's
    classes, else the share of decisive images (see ``parity.Tolerance``) whose top-1 differs; for a feature model
    100 x (1 - the worst output's cosine), for an embedding the share of nearest neighbours missed.
    """

    max_drop: float
    max_float_layers: int = 12
    keep_best: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.max_drop <= 100:
            raise InvalidArgumentError(f"--max-drop is a percentage from 0 to 100, not {self.max_drop:g}")
        if self.max_float_layers < 1:
            raise InvalidArgumentError("--max-float-layers must be at least 1")

    @staticmethod
    def drop(report: Any) -> float:
        """The report's loss in percentage points (inf when nothing measures it): for a classifier the accuracy
        drop or the decisive top-1 disagreement; for feature maps 100 x (1 - the worst output's cosine); for an
        embedding the share of queries whose nearest neighbour the artifact misses (100 - recall@1)."""
        if getattr(report, "task", "classifier") == "features":
            return 100.0 * (1.0 - report.cosine)
        if getattr(report, "task", "classifier") == "embedding":
            return float("inf") if report.recall_at_1 is None else 100.0 * (1.0 - report.recall_at_1)
        if report.accuracy_delta is not None:
            return max(-100.0 * report.accuracy_delta, 0.0)
        if report.decisive_top1 is not None:
            return 100.0 * (1.0 - report.decisive_top1)
        return float("inf") if report.top1_agreement is None else 100.0 * (1.0 - report.top1_agreement)

    def met(self, report: Any) -> bool:
        return bool(report) and self.drop(report) <= self.max_drop

    def describe(self, report: Any) -> str:
        task = getattr(report, "task", "classifier")
        what = {"features": f"feature loss (1 - cos on {report.worst_level})", "embedding": "nearest neighbours missed"
                }.get(task) or ("accuracy drop" if report.accuracy_delta is not None else "top-1 disagreement")
        return f"{what} {self.drop(report):.2f} pp (budget {self.max_drop:g} pp)"


@dataclass
class FallbackResult:
    """What the fallback kept in float, how the artifact fared, and what the float layers cost."""

    float_layers: list[str] = field(default_factory=list)
    rounds: int = 0
    met: bool = False
    int8_p50_ms: float | None = None
    final_p50_ms: float | None = None

    def line(self) -> str:
        kept = ", ".join(self.float_layers) or "none"
        cost = ""
        if self.int8_p50_ms and self.final_p50_ms:
            change = self.final_p50_ms / self.int8_p50_ms - 1.0
            cost = f"; p50 {self.int8_p50_ms:.3g} ms all-int8 -> {self.final_p50_ms:.3g} ms ({change:+.0%})"
        verdict = "budget met" if self.met else "budget NOT met"
        return f"float fallback: {verdict} after {self.rounds} rebuild(s); kept float: {kept}{cost}"

    def to_dict(self) -> dict[str, Any]:
        return {"float_layers": self.float_layers, "rounds": self.rounds, "met": self.met,
                "int8_p50_ms": self.int8_p50_ms, "final_p50_ms": self.final_p50_ms}


def _graph(model) -> tuple[dict[str, list[str]], dict[str, list[str]], dict[str, str]]:
    """(parents, children, class name) of every layer, by layer name."""
    from .layerwise import layer_parents

    parents = layer_parents(model)
    children: dict[str, list[str]] = {name: [] for name in parents}
    for name, inputs in parents.items():
        for parent in inputs:
            children.setdefault(parent, []).append(name)
    kinds = {layer.name: type(layer).__name__ for layer in model.layers}
    return parents, children, kinds


def fused_unit(model, name: str) -> list[str]:
    """The layers one runtime op computes with ``name``: back to its conv/dense, on through its norm/activation."""
    return _unit(_graph(model), name)


def _unit(graph: tuple[dict[str, list[str]], dict[str, list[str]], dict[str, str]], name: str) -> list[str]:
    parents, children, kinds = graph
    unit = [name]
    current = name
    while kinds.get(current) in FUSABLE and len(parents.get(current, [])) == 1:
        current = parents[current][0]
        if kinds.get(current) not in FUSABLE + WEIGHTED:
            break
        unit.insert(0, current)
        if kinds[current] in WEIGHTED:
            break
    current = name
    while len(children.get(current, [])) == 1 and kinds.get(children[current][0]) in FUSABLE:
        current = children[current][0]
        if len(parents.get(current, [])) != 1:
            break
        unit.append(current)
    return unit


def float_step(model, ranked: list[tuple[str, float]], kept: set[str]) -> list[str]:
    """The layers to keep in float next: the worst-ranked layer's unit and the units feeding it, not yet kept."""
    graph = _graph(model)
    parents, _, kinds = graph
    for name, error in ranked:
        if error <= 0:
            break
        unit = _unit(graph, name)
        feeding = [layer for parent in parents.get(unit[0], []) if kinds.get(parent) != "InputLayer"
                   for layer in _unit(graph, parent)]
        new = list(dict.fromkeys(layer for layer in unit + feeding if layer not in kept))
        if new:
            return new
    return []


def fit_budget(
    job: Any,
    report: Any,
    rebuild: Callable[[Any], Any],
    verify: Callable[[], Any],
    reference_model: Callable[[Any], Any],
    budget: AccuracyBudget,
    say: Callable[[str], None],
) -> tuple[Any, Any, FallbackResult]:
    """Rebuild ``job.output`` with more layers in float until ``verify()`` meets ``budget``.

    ``rebuild(job)`` converts and returns the metadata, ``verify()`` checks ``job.output`` and returns a
    ParityReport, ``reference_model(metadata)`` is the Keras model to diagnose against. Returns the
    (metadata, report) of the artifact left at ``job.output`` (the best one when the budget is not met)
    and what was kept float.
    """
    from .layerwise import worst_layers

    output = Path(job.output)
    result = FallbackResult()
    metadata = job.metadata
    kept: set[str] = set(job.options.get("float_layers") or ())
    images = job.calibration.images[:DIAGNOSIS_IMAGES]
    with tempfile.TemporaryDirectory(prefix="resnet-edge-fallback-") as workdir:
        plain, best_path = Path(workdir) / f"int8{output.suffix}", Path(workdir) / f"best{output.suffix}"
        shutil.copyfile(output, plain)
        shutil.copyfile(output, best_path)
        best = (report, metadata, sorted(kept))
        while not budget.met(report):
            say(f"{budget.describe(report)}: looking for the layers that lose the most")
            ranked = worst_layers(reference_model(metadata), output, images, top=10_000)
            step = float_step(job.model, ranked, kept)
            if not step or len(kept) + len(step) > budget.max_float_layers:
                reason = "no layer left to keep float" if not step else f"the cap of {budget.max_float_layers} float layers"
                say(f"stopping at {reason}")
                break
            kept.update(step)
            result.rounds += 1
            say(f"rebuilding with {len(kept)} layer(s) in float: {', '.join(step)}")
            job = replace(job, options={**job.options, "float_layers": tuple(sorted(kept))})
            metadata = rebuild(job)
            report = verify()
            say(report.line())
            if _better(report, best[0], budget):
                best = (report, metadata, sorted(kept))
                shutil.copyfile(output, best_path)
        report, metadata, float_layers = best
        shutil.copyfile(best_path, output)
        result.float_layers, result.met = float_layers, budget.met(report)
        if result.rounds:
            result.int8_p50_ms, result.final_p50_ms = _p50_ms(plain), _p50_ms(output)
    say(result.line())
    return metadata, report, result


def _better(candidate: Any, incumbent: Any, budget: AccuracyBudget) -> bool:
    return (budget.met(candidate), -budget.drop(candidate), candidate.cosine) > \
        (budget.met(incumbent), -budget.drop(incumbent), incumbent.cosine)


def _p50_ms(path: Path) -> float:
    from .latency import measure
    from .predictor import load

    with load(path, device="cpu") as predictor:
        return measure(predictor, 1, warmup=3, min_time_s=1.0).p50_ms
