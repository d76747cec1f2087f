"""``optimize``: export every format this machine runs, verify each, keep the fastest one that passes.

Which runtime is fastest depends on the CPU (an EPYC with VNNI favours TFLite int8, a Xeon with AMX
OpenVINO), so the choice is measured here, never assumed. The candidates are the format table of
``benchmark.run_all`` (one run: same images, same threads) plus each format's ``variants`` this machine
supports (OpenVINO at bf16). A candidate passes when its parity check passes and its accuracy (or, without
labels, its top-1 agreement) is at most ``max_drop`` points below the float model's.

The candidates are timed together in interleaved rounds, and the choice never rests on a difference the
measurement cannot resolve: passing candidates whose p50s lie within each other's noise are a tie (``tied``),
and a tie is decided by a stated rule, the smaller file, then the table's order (``decide``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import atomic_path
from .benchmark import REFERENCE, FormatRow, rows_to_dict, run_all
from .errors import InvalidArgumentError, ParityError
from .registry import FORMATS, KERAS_SUFFIXES, companions_of, find_format

Progress = Callable[[str], None]
TIE_FLOOR = 0.03  # candidates within 3 % of the faster p50 always tie: two runs of one runtime differ by that
TIE_RULE = ("a passing candidate is tied with the fastest when each p50 lies within the other's noise band "
            "(the gap is at most the smaller of their two noise figures) or the gap is at most 3 % of the faster "
            "p50; among the tied, the smaller file wins, then the earlier row of the format table (the "
            "registry's order)")


@dataclass
class Decision:
    """Which passing candidate ``decide`` picked and why: ``tied_with`` lists the other candidates within the
    fastest one's noise, ``rule`` is ``fastest``, ``smaller file`` or ``registry order``, ``band_ms`` the widest
    gap that counted as a tie."""

    chosen: FormatRow | None
    fastest: FormatRow | None = None
    tied_with: list[FormatRow] = field(default_factory=list)
    rule: str | None = None
    band_ms: float | None = None
    runner_up: FormatRow | None = None

    @property
    def tie(self) -> bool:
        """Whether other candidates were within the fastest one's noise."""
        return bool(self.tied_with)


@dataclass
class Choice:
    """The result of ``optimize``: the chosen artifact (None when nothing passed) and the table it was chosen from."""

    rows: list[FormatRow]
    chosen: FormatRow | None
    artifact: Path | None
    max_drop: float
    drops: dict[str, float | None] = field(default_factory=dict)
    receipts: dict[str, Path] = field(default_factory=dict)
    decision: Decision | None = None

    def facts(self) -> dict[str, Any]:
        """What was chosen and why, as plain JSON: the head of ``optimize.json`` and of ``--json``'s output.

        ``tied_with`` names the other candidates within the fastest one's noise, ``rule`` is how the choice was
        made (``fastest``, ``smaller file`` or ``registry order``), ``tie_band_ms`` the widest gap that counted
        as noise, and ``tie_rule`` the rule in words.
        """
        decision = self.decision or Decision(self.chosen)
        return {"chosen": None if self.chosen is None else self.chosen.format,
                "artifact": None if self.artifact is None else str(self.artifact), "max_drop_points": self.max_drop,
                "drops_points": self.drops, "tied_with": [row.format for row in decision.tied_with],
                "rule": decision.rule, "tie_band_ms": decision.band_ms, "tie_rule": TIE_RULE,
                "summary": summary_lines(self, receipts=False)}

    def to_dict(self) -> dict[str, Any]:
        """The whole result as plain JSON: the choice and why, the table, and where the receipt is."""
        return {**self.facts(), "rows": rows_to_dict(self.rows),
                "receipts": {k: str(v) for k, v in self.receipts.items()}}


def accuracy_drop(row: FormatRow, reference: FormatRow | None) -> float | None:
    """Points lost against the float model: accuracy when both have it, else 100 - top-1 agreement."""
    if reference is not None and row.accuracy is not None and reference.accuracy is not None:
        return round(100.0 * (reference.accuracy - row.accuracy), 4)
    if row.top1_agreement is not None:
        return round(100.0 * (1.0 - row.top1_agreement), 4)
    return None


def passes(row: FormatRow, drop: float | None, max_drop: float) -> bool:
    """Verified, timed, not the float model itself, and within the accuracy budget."""
    return row.ok and row.format != REFERENCE and row.p50_ms is not None and drop is not None and drop <= max_drop


def tie_band(a: FormatRow, b: FormatRow, floor: float = TIE_FLOOR) -> float:
    """The widest p50 gap between ``a`` and ``b`` that is still noise, symmetric in ``a`` and ``b``.

    Each p50 must lie within the other's noise band, so the gap may be at most the *smaller* of the two noise
    figures (a wildly noisy row does not tie with everything; it gets a warning instead), and it is never
    under ``floor`` times the faster p50 (two runs of one runtime differ by that much without any noise).
    """
    return max(min(a.noise_ms or 0.0, b.noise_ms or 0.0), floor * min(a.p50_ms, b.p50_ms))


def tied(a: FormatRow, b: FormatRow, floor: float = TIE_FLOOR) -> bool:
    """Whether two timed rows are within each other's noise (see ``tie_band``)."""
    return abs(a.p50_ms - b.p50_ms) <= tie_band(a, b, floor)


def _size(row: FormatRow) -> float:
    return float("inf") if row.size_mb is None else row.size_mb


def decide(passing: Sequence[FormatRow], floor: float = TIE_FLOOR) -> Decision:
    """Pick among passing, timed rows (in the table's order): the fastest, unless others are tied with it.

    The tied are the rows within the fastest one's noise (``tied``); among them the smaller file wins, and
    between equal sizes the earlier row (the registry's order, variants after their format), so the choice
    never follows a difference smaller than the measurement's noise.
    """
    if not passing:
        return Decision(None)
    order = {id(row): index for index, row in enumerate(passing)}
    fastest = min(passing, key=lambda row: (row.p50_ms, order[id(row)]))
    group = [row for row in passing if row is fastest or tied(fastest, row, floor)]
    grouped = {id(row) for row in group}
    others = sorted((row for row in passing if id(row) not in grouped), key=lambda row: row.p50_ms)
    runner_up = others[0] if others else None
    if len(group) == 1:
        return Decision(fastest, fastest, [], "fastest", None, runner_up)
    by_size = sorted(group, key=lambda row: (_size(row), order[id(row)]))
    chosen = by_size[0]
    rule = "smaller file" if _size(by_size[1]) > _size(chosen) else "registry order"
    band = max(tie_band(fastest, row, floor) for row in group if row is not fastest)
    return Decision(chosen, fastest, [row for row in group if row is not chosen], rule, band, runner_up)


def optimize(
    model_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    max_drop: float = 1.0,
    formats: Sequence[str] | None = None,
    data: str | os.PathLike[str] = "digits",
    device: str = "auto",
    batch_size: int = 1,
    threads: int | None = None,
    min_time_s: float = 3.0,
    warmup: int = 10,
    calib_count: int = 300,
    parity_count: int = 500,
    progress: Progress | None = None,
    title: str | None = None,
    command: str | None = None,
) -> Choice:
    """Try every format (and supported variant) on ``model_path``; write the fastest passing one to ``out_dir``.

    The candidates are written under ``out_dir/candidates``; the chosen one is copied beside them as
    ``out_dir/<model>_best<suffix>`` (with its companions), atomically, and the table is the receipt
    (``optimize.json``, ``.md``, ``.csv``, ``.png``). The candidates are timed together in interleaved rounds
    and chosen by ``decide``: candidates within the fastest one's noise are a tie, settled by the smaller file,
    then the table's order, and the receipt says so. Raises ParityError when no candidate passes (the receipt
    is still written).
    """
    from .report import machine_description, write_reports

    if max_drop < 0:
        raise InvalidArgumentError("--max-drop must be at least 0 percentage points")
    model_path, out_dir = Path(model_path), Path(out_dir)
    if model_path.suffix.lower() not in KERAS_SUFFIXES:
        raise InvalidArgumentError(f"{model_path}: optimize needs the Keras model (.keras/.h5)")
    if not model_path.is_file():
        raise InvalidArgumentError(f"{model_path}: no such model file")
    if parity_count < 1:
        raise InvalidArgumentError("optimize needs the parity check: --n must be at least 1")
    names = list(FORMATS) if formats is None else [find_format(f).name for f in formats]
    rows = run_all(model_path, out_dir / "candidates", formats=names, data=data, device=device,
                   batch_size=batch_size, min_time_s=min_time_s, warmup=warmup, calib_count=calib_count,
                   parity_count=parity_count, progress=progress, threads=threads, variants=True, time_failed=False)
    reference = next((r for r in rows if r.format == REFERENCE and r.ok), None)
    drops = {row.format: accuracy_drop(row, reference) for row in rows if row.format != REFERENCE}
    passing = [row for row in rows if passes(row, drops.get(row.format), max_drop)]
    decision = decide(passing)
    chosen = decision.chosen
    for row in rows:
        if row.format != REFERENCE and row.ok and row not in passing:
            row.status = (f"over budget: drop {drops[row.format]:.2f} points > {max_drop:g}"
                          if drops.get(row.format) is not None else "not verified")
    artifact = None
    if chosen is not None:
        chosen.status = "chosen"
        for row in decision.tied_with:
            row.status = f"tied with {chosen.format}"
        source = Path(chosen.path)
        artifact = out_dir / f"{model_path.stem}_best{source.suffix}"
        copy_artifact(source, artifact)
    result = Choice(rows, chosen, artifact, max_drop, drops, decision=decision)
    title = title or (f"{model_path.name}: the fastest artifact within {max_drop:g} percentage point(s) "
                      "of the float model (green)")
    result.receipts = write_reports(rows, out_dir, title, machine_description(), command, stem="optimize",
                                    extra=result.facts())
    if chosen is None:
        raise ParityError(f"no format passed within {max_drop:g} points of the float model; "
                          f"see {result.receipts.get('markdown', out_dir)}")
    return result


def copy_artifact(source: Path, target: Path) -> None:
    """Copy an artifact and its companions (OpenVINO's ``.bin``) so the pair appears together or not at all."""
    extras = [p.suffix for p in companions_of(source)]
    with atomic_path(target, extras) as tmp:
        shutil.copyfile(source, tmp)
        for extra in extras:
            shutil.copyfile(source.with_suffix(extra), tmp.with_suffix(extra))


def _ms(value: float) -> str:
    """Milliseconds to three significant figures (0.607, 2.44, 28.2), enough to show a sub-noise gap."""
    return f"{value:#.3g}" if value < 100 else f"{value:.0f}"


def _names(rows: Sequence[FormatRow]) -> str:
    items = [f"{row.format} {_ms(row.p50_ms)} ms" for row in rows]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def summary_lines(choice: Choice, receipts: bool = True) -> list[str]:
    """What ``optimize`` chose, in words: the pick, a tie and the rule that settled it, a noisy timing."""
    if choice.chosen is None:
        return ["no format passed"]
    row, decision = choice.chosen, choice.decision or Decision(choice.chosen)
    drop = choice.drops.get(row.format)
    drop_text = "" if drop is None else f", {drop:.2f} points below float"
    lines = [f"chosen: {row.format} ({_ms(row.p50_ms)} ms p50 ±{row.noise_ms or 0.0:.2g}{drop_text}) -> "
             f"{choice.artifact}"]
    if decision.tie:
        group = sorted([row, *decision.tied_with], key=lambda r: r.p50_ms)
        sizes = ", ".join(f"{r.format} {r.size_mb:.2f} MB" for r in group if r.size_mb is not None)
        why = f"smaller file ({sizes})" if decision.rule == "smaller file" else \
            "same size, earlier in the registry's format order"
        lines.append(f"tie: {_names(group)} are within noise (±{decision.band_ms:.2g} ms); chose {row.format}: {why}")
    elif decision.runner_up is not None:
        other = decision.runner_up
        noisy = " (noisy)" if other.noisy else ""
        lines.append(f"next: {other.format} {_ms(other.p50_ms)} ms{noisy}, beyond the noise "
                     f"(±{tie_band(row, other):.2g} ms)")
    if row.noisy:
        lines.append(f"warning: {row.format}'s timing is noisy (round-to-round ±{row.noise_ms:.2g} ms); "
                     "close other programs or raise --min-time-s before trusting the ranking")
    if receipts and choice.receipts:
        lines.append("receipt: " + ", ".join(str(p) for p in choice.receipts.values()))
    return lines


__all__ = ["TIE_FLOOR", "TIE_RULE", "Choice", "Decision", "accuracy_drop", "copy_artifact", "decide", "optimize",
           "passes", "summary_lines", "tie_band", "tied"]
