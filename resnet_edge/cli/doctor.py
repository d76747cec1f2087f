"""``resnet-edge doctor``: what this machine is and can run (a table, or ``--json`` for a bug report), and
``--selftest``, which exports a tiny ResNet to every format and checks each on every device (exit 1 on a failure)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from ..errors import InvalidArgumentError
from .common import JsonFlag, app, out, print_json, say, split_list


class _Table(Table):
    """A table whose cells are plain text: install lines keep their ``[extra]`` (Rich would read it as markup)."""

    def add_row(self, *cells: Any, **kwargs: Any) -> None:
        super().add_row(*(Text(str(cell)) for cell in cells), **kwargs)


def _mark(state: dict[str, Any]) -> str:
    ok = state.get("ok")
    return "yes" if ok else "?" if ok is None else "no"


def _machine_table(facts: dict[str, Any]) -> Table:
    table = _Table("machine", "", show_header=False)
    isa = ", ".join(name for name, present in facts["isa"].items() if present) or "none of note"
    lacking = ", ".join(name for name, present in facts["isa"].items() if not present)
    table.add_row("OS / Python", f"{facts['os']} / Python {facts['python']}")
    table.add_row("CPU", f"{facts['cpu']} ({facts['architecture']}), {facts['usable_cores']} usable of "
                         f"{facts['logical_cores']} logical cores")
    table.add_row("int8/bf16 instructions", isa + (f" (not: {lacking})" if lacking else ""))
    table.add_row("memory", f"{facts['memory_gib']} GiB")
    nvidia = facts["nvidia"]
    gpus = "; ".join(f"{g['name']} (compute capability {g['compute_capability']}, {g['memory']}, driver {g['driver']})"
                     for g in nvidia.get("gpus", []))
    table.add_row("NVIDIA GPU", gpus or "none found (no nvidia-smi, or it lists none)")
    if nvidia.get("driver_cuda") or nvidia.get("cuda_toolkit"):
        table.add_row("CUDA", f"driver supports {nvidia.get('driver_cuda', '?')}; toolkit in /usr/local/cuda: "
                              f"{nvidia.get('cuda_toolkit') or 'none'}")
    jetson = facts.get("jetson")
    if jetson:
        table.add_row("Jetson", f"{jetson.get('model')}: L4T {jetson.get('l4t') or '?'} (nvidia-l4t-core "
                                f"{jetson.get('l4t_core_package') or '?'}), JetPack {jetson.get('jetpack') or '?'}, "
                                f"{jetson.get('dla_cores')} DLA core(s) listed by the kernel")
    return table


def _facts_text(facts: dict[str, Any]) -> str:
    parts = []
    for key, value in facts.items():
        if key in ("jetson", "build", "version"):
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
        elif isinstance(value, list):
            value = ", ".join(map(str, value)) or "none"
        parts.append(f"{key}: {value}")
    return "; ".join(parts)


def _runtime_table(runtimes: list[dict[str, Any]]) -> Table:
    table = _Table("runtime", "versions", "device", "claimed", "works", "how it was checked", "facts")
    for runtime in runtimes:
        versions = ", ".join(f"{k} {v}" for k, v in runtime["versions"].items()) or "not installed"
        first = True
        for device, state in runtime["devices"].items():
            table.add_row(runtime["runtime"] if first else "", versions if first else "", device,
                          "yes" if state.get("claimed") else "no", _mark(state), state.get("detail", ""),
                          _facts_text(runtime["facts"]) if first else "")
            first = False
    return table


def _format_table(formats: list[dict[str, Any]]) -> Table:
    table = _Table("format", "precision", "runtime", "export here", "runs here on", "what is missing")
    for row in formats:
        table.add_row(row["format"], row["precision"], row["runtime"], "yes" if row["export"] else "no",
                      ", ".join(row["runs_on"]) or "nowhere", "; ".join(row["export_blockers"]) or "")
    return table


def _selftest_table(result: Any) -> Table:
    table = _Table("artifact", "device", "status", "precision", "export s", "p50 ms", "parity / why")
    for row in result.rows:
        table.add_row(row.name, row.device or "", row.status.upper(), row.precision or "",
                      "" if row.export_s is None else f"{row.export_s:.1f}",
                      "" if row.p50_ms is None else f"{row.p50_ms:.3g}", row.detail)
    return table


@app.command()
def doctor(
    selftest: Annotated[bool, typer.Option("--selftest", help="Export a tiny ResNet to every format this machine can "
                                           "export, run each on every device its runtime claims, check parity and "
                                           "time it (about a minute on 2 cores); exit 1 when a claimed device fails.")] = False,
    device: Annotated[str | None, typer.Option(help="With --selftest: only this device (cuda, jetson, tensorrt-ep, "
                                               "cpu); exit 1 when nothing ran on it.")] = None,
    formats: Annotated[str | None, typer.Option(help="With --selftest: comma-separated formats (default: all).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="With --selftest: keep the model, the artifacts "
                                                 "and reference.npz (the Keras outputs) in this folder.")] = None,
    from_dir: Annotated[Path | None, typer.Option("--from", help="With --selftest: run the artifacts of a folder made "
                                                  "by --selftest --out on another machine, against its reference.npz "
                                                  "(no TensorFlow, no export).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """What this machine is and what it can really run; with --selftest, the proof. Attach `resnet-edge doctor
    --json` to a bug report."""
    if not selftest and any(v is not None for v in (device, formats, out_dir, from_dir)):
        raise InvalidArgumentError("--device, --formats, --out and --from apply with --selftest")
    if from_dir is not None and (out_dir is not None or formats is not None):
        raise InvalidArgumentError("--from runs the artifacts it finds: --out and --formats do not apply with it")
    progress = None if as_json else say
    if not selftest:
        from ..doctor import diagnose

        report = diagnose(progress=progress)
        if as_json:
            print_json(report)
            return
        out.print(_machine_table(report["machine"]))
        out.print(_runtime_table(report["runtimes"]))
        out.print(_format_table(report["formats"]))
        for line in report["missing"]:
            out.print(f"missing: {line}", markup=False)
        out.print(f"for a bug report: {report['bug_report']}", markup=False)
        return
    from ..doctor import selftest as run_selftest
    from ..doctor import selftest_from

    if from_dir is not None:
        result = selftest_from(from_dir, device=device, progress=progress)
    else:
        result = run_selftest(device=device, formats=split_list(formats), out=out_dir, progress=progress)
    if as_json:
        print_json(result.to_dict())
    else:
        out.print(_selftest_table(result))
        verdict = "PASS" if result.passed else "FAIL"
        out.print(f"{verdict}: {sum(r.status == 'pass' for r in result.rows)} passed, {len(result.failures)} failed, "
                  f"{sum(r.status == 'skip' for r in result.rows)} skipped in {result.seconds:.0f} s on "
                  f"{result.machine.get('cpu')}" + ("" if result.ran_on_device else f"; nothing ran on {device}"))
    if not result.passed:
        raise typer.Exit(1)
