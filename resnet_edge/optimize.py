"""``optimize``: export every format this machine runs, verify each, keep the fastest one that passes.

Which runtime is fastest depends on the CPU (an EPYC with VNNI favours TFLite int8, a Xeon with AMX
OpenVINO), so the choice is measured here, never assumed. The candidates are the format table of
``benchmark.run_all`` (one run: same images, same threads) plus each format's ``variants`` this machine
supports (OpenVINO at bf16). A candidate passes when its parity check passes and its accuracy (or, without
labels, its top-1 agreement) is at most ``max_drop`` points below the float model's.
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
from .registry import FORMATS, companions_of, resolve_format

Progress = Callable[[str], None]


@dataclass
class Choice:
    """The result of ``optimize``: the chosen artifact (None when nothing passed) and the table it was chosen from."""

    rows: list[FormatRow]
    chosen: FormatRow | None
    artifact: Path | None
    max_drop: float
    drops: dict[str, float | None] = field(default_factory=dict)
    receipts: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": None if self.chosen is None else self.chosen.format,
                "artifact": None if self.artifact is None else str(self.artifact), "max_drop_points": self.max_drop,
                "drops_points": self.drops, "rows": rows_to_dict(self.rows),
                "receipts": {k: str(v) for k, v in self.receipts.items()}}


def accuracy_drop(row: FormatRow, reference: FormatRow | None) -> float | None:
    """Points lost against the float model: accuracy when both have it, else 100 - top-1 agreement."""
    if reference is not None and row.accuracy is not None and reference.accuracy is not None:
        return round(100.0 * (reference.accuracy - row.accuracy), 4)
    if row.top1_agreement is not None:
        return round(100.0 * (1.0 - row.top1_agreement), 4)
    return None


def passes(row: FormatRow, drop: float | None, max_drop: float) -> bool:
    return row.ok and row.format != REFERENCE and row.p50_ms is not None and drop is not None and drop <= max_drop


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
    (``optimize.json``, ``.md``, ``.csv``, ``.png``). Raises ParityError when no candidate passes (the receipt
    is still written).
    """
    from .report import machine_description, write_reports

    if max_drop < 0:
        raise InvalidArgumentError("--max-drop must be at least 0 percentage points")
    model_path, out_dir = Path(model_path), Path(out_dir)
    if model_path.suffix not in (".keras", ".h5"):
        raise InvalidArgumentError(f"{model_path}: optimize needs the Keras model (.keras/.h5)")
    if not model_path.is_file():
        raise InvalidArgumentError(f"{model_path}: no such model file")
    if parity_count < 1:
        raise InvalidArgumentError("optimize needs the parity check: --n must be at least 1")
    names = list(FORMATS) if formats is None else [resolve_format(f).name for f in formats]
    rows = run_all(model_path, out_dir / "candidates", formats=names, data=data, device=device,
                   batch_size=batch_size, min_time_s=min_time_s, warmup=warmup, calib_count=calib_count,
                   parity_count=parity_count, progress=progress, threads=threads, variants=True, time_failed=False)
    reference = next((r for r in rows if r.format == REFERENCE and r.ok), None)
    drops = {row.format: accuracy_drop(row, reference) for row in rows if row.format != REFERENCE}
    passing = [row for row in rows if passes(row, drops.get(row.format), max_drop)]
    chosen = min(passing, key=lambda row: row.p50_ms) if passing else None
    for row in rows:
        if row.format != REFERENCE and row.ok and row not in passing:
            row.status = (f"over budget: drop {drops[row.format]:.2f} points > {max_drop:g}"
                          if drops.get(row.format) is not None else "not verified")
    artifact = None
    if chosen is not None:
        chosen.status = "chosen"
        source = Path(chosen.path)
        artifact = out_dir / f"{model_path.stem}_best{source.suffix}"
        copy_artifact(source, artifact)
    result = Choice(rows, chosen, artifact, max_drop, drops)
    title = title or (f"{model_path.name}: the fastest artifact within {max_drop:g} percentage point(s) "
                      "of the float model (green)")
    result.receipts = write_reports(rows, out_dir, title, machine_description(), command, stem="optimize",
                                    extra={"chosen": None if chosen is None else chosen.format,
                                           "artifact": None if artifact is None else str(artifact),
                                           "max_drop_points": max_drop, "drops_points": drops})
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


def summary_lines(choice: Choice) -> list[str]:
    if choice.chosen is None:
        return ["no format passed"]
    row = choice.chosen
    drop = choice.drops.get(row.format)
    return [f"chosen: {row.format} ({row.p50_ms:.2f} ms p50, {drop:.2f} points below float) -> {choice.artifact}",
            "receipt: " + ", ".join(str(p) for p in choice.receipts.values())]


__all__ = ["Choice", "accuracy_drop", "copy_artifact", "optimize", "passes"]
