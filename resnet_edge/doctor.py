"""``resnet-edge doctor``: what this machine is and what it can really run, and ``--selftest``, which proves it.

``diagnose()`` describes the machine (OS, CPU and the instruction sets that decide int8/bf16 speed, cores, memory,
NVIDIA GPUs and driver, a Jetson's model, L4T/JetPack release and DLA cores), then asks every runtime's ``probe``
hook (its registry row) what it really gives: the devices it ran a one-node model on (not merely lists), its
versions and libraries; then which formats can be exported and run here, each missing piece named with the line
that installs it. It is what a bug report attaches (``resnet-edge doctor --json``).

``selftest()`` builds a tiny ResNet in-process (no download: digits are bundled), trains it for one short epoch so
its top-1 decisions are decisive, exports it to every format this machine can export (plus the hardware paths a
runtime's probe adds: TensorRT fp16/int8, a DLA core), runs each artifact on every device its backend claims,
compares it with the Keras model under the usual parity rules and times it briefly. ``selftest_from()`` runs
artifacts exported on another machine against the reference outputs saved with them (no TensorFlow needed).
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from . import machine
from .cpu import usable_cores
from .errors import InvalidArgumentError, MissingDependencyError, ModelFileError, first_line
from .metadata import tool_versions
from .registry import (
    BACKENDS,
    FORMATS,
    KERAS_SUFFIXES,
    BackendEntry,
    FormatEntry,
    backend_for_file,
    devices,
    find_format,
    load_target,
)

Progress = Callable[[str], None]
DISTRIBUTION = "resnet-edge"
EXPORT_EXTRA = "export"  # building and exporting a Keras model (TensorFlow and the ONNX route)
BUG_REPORT = "resnet-edge doctor --json > doctor.json"

SELFTEST_SIZE = 32
SELFTEST_BLOCKS = (1, 1, 1, 1)  # a ResNet-10 of basic blocks, narrow: every op of resnet18, a fifteenth the weights
SELFTEST_WIDTHS = (16, 32, 64, 128)
SELFTEST_MODEL = "resnet-selftest"
TRAIN_EPOCHS = 1
CALIBRATION_IMAGES = 100
PARITY_IMAGES = 200  # one decisive disagreement in 200 still passes the 99 % rule; one in 64 would not
LATENCY_S = 0.2
REFERENCE_FILE = "reference.npz"  # the Keras model's outputs on the parity images
LOGITS_REFERENCE_FILE = "reference_logits.npz"  # the same model cut before its softmax: for artifacts with logits out
MODEL_FILE = "selftest.keras"


# the machine --------------------------------------------------------------------------------------

def machine_facts() -> dict[str, Any]:
    """OS, Python, CPU (model, int8/bf16 instruction sets, cores), memory, NVIDIA GPUs and driver, and the Jetson."""
    return {
        "os": platform.platform(),
        "python": platform.python_version(),
        "architecture": platform.machine(),
        "cpu": machine.cpu_model(),
        "isa": machine.isa(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": usable_cores(),
        "memory_gib": round(psutil.virtual_memory().total / (1 << 30), 1),
        "nvidia": machine.nvidia_gpus(),
        "jetson": machine.jetson(),
    }


# what each runtime really gives -------------------------------------------------------------------

def claimed_devices(row: BackendEntry) -> tuple[tuple[str, ...], str | None]:
    """The devices a backend claims here (its ``available_devices()``, in preference order), or why none: the
    install line where its runtime is missing."""
    try:
        available = row.backend_class().available_devices()
    except MissingDependencyError:
        return (), f"pip install '{DISTRIBUTION}[{row.extra}]'"
    except Exception as exc:
        return (), first_line(exc)
    return tuple(d for d in row.devices if d in available), None


def probe_runtime(row: BackendEntry) -> dict[str, Any]:
    """One runtime's report: versions, the devices it claims and those it really ran on, facts, install lines."""
    report: dict[str, Any] = {"runtime": row.name, "description": row.description, "extra": row.extra,
                              "versions": tool_versions(*row.tools), "devices": {}, "facts": {}, "missing": [],
                              "exports": {}, "selftest": {}}
    claimed, why = claimed_devices(row)
    report["claimed"] = list(claimed)
    try:
        found = load_target(row.probe)() if row.probe else {}
    except MissingDependencyError:
        install = f"pip install '{DISTRIBUTION}[{row.extra}]'"
        found = {"devices": {d: {"ok": False, "detail": f"not installed: {install}"} for d in row.devices},
                 "missing": [install]}
    except Exception as exc:
        found = {"devices": {d: {"ok": False, "detail": f"probe failed: {first_line(exc)}"} for d in row.devices}}
    for key in ("facts", "exports", "selftest"):
        report[key] = dict(found.get(key) or {})
    report["missing"] = list(dict.fromkeys(found.get("missing") or []))
    states = found.get("devices") or {}
    for device in row.devices:
        state = dict(states.get(device) or {"ok": None, "detail": "not probed"})
        state["claimed"] = device in claimed
        if not state["claimed"] and state.get("ok") is None and why:
            state["detail"] = why
        report["devices"][device] = state
    return report


def probe_runtimes(names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    return {name: probe_runtime(row) for name, row in BACKENDS.items() if names is None or name in names}


def _requirement(text: str) -> tuple[str, str]:
    """(distribution name, marker) of a ``Requires-Dist`` line."""
    requirement, _, marker = text.partition(";")
    name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return (name.group(1) if name else requirement.strip()), marker.strip()


def _marker_applies(marker: str, extra: str) -> bool:
    """Whether a requirement's marker selects it for ``extra`` on this machine."""
    if f'extra == "{extra}"' not in marker and f"extra == '{extra}'" not in marker:
        return False
    try:
        from packaging.markers import Marker
    except ImportError:  # packaging absent: the extra alone decides
        return True
    try:
        return Marker(marker).evaluate({"extra": extra})
    except Exception:
        return True


def _installed(name: str) -> bool:
    """A distribution is installed, or its module is importable (onnxruntime-gpu gives the onnxruntime module)."""
    try:
        importlib_metadata.version(name)
        return True
    except importlib_metadata.PackageNotFoundError:
        import importlib.util

        module = name.lower().replace("-", "_")
        try:
            return importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            return False


def missing_requirements(extra: str) -> list[str]:
    """The distributions an extra of this package asks for that are not installed (from the installed package's
    metadata; an empty list where the package is not installed, as in a bare source tree)."""
    try:
        requires = importlib_metadata.requires(DISTRIBUTION) or []
    except importlib_metadata.PackageNotFoundError:
        return []
    lacking = []
    for line in requires:
        name, marker = _requirement(line)
        if name.lower().replace("_", "-") == DISTRIBUTION or not _marker_applies(marker, extra):
            continue
        if not _installed(name):
            lacking.append(name)
    return list(dict.fromkeys(lacking))


def export_blockers(fmt: FormatEntry, runtime: Mapping[str, Any]) -> list[str]:
    """Why ``fmt`` cannot be exported on this machine, each with its install line; empty when it can.

    A format whose runtime has no CPU device is built on the device that runs it (a TensorRT engine for its GPU):
    it is exported only where its runtime really runs.
    """
    extras = list(dict.fromkeys((EXPORT_EXTRA, fmt.extra)))
    lacking = [name for extra in extras for name in missing_requirements(extra)]
    reasons = []
    if lacking:
        reasons.append(f"{', '.join(lacking)} missing: pip install '{DISTRIBUTION}[{','.join(extras)}]'")
    blocked = runtime.get("exports", {}).get(fmt.name)
    if blocked:
        reasons.append(str(blocked))
    if not fmt.runs_on_cpu and not any(state.get("ok") for state in runtime["devices"].values()):
        reasons.append(f"built where it runs: needs {BACKENDS[fmt.backend].needs}")
    return reasons


def format_reports(runtimes: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every format: can it be exported here, on which devices its runtime really runs, what would bring the rest."""
    rows = []
    for fmt in FORMATS.values():
        runtime = runtimes[fmt.backend]
        blockers = export_blockers(fmt, runtime)
        runs_on = [d for d, state in runtime["devices"].items() if state.get("ok")]
        precisions = fmt.options["precision"].choices if "precision" in fmt.options else (fmt.precision,)
        rows.append({"format": fmt.name, "runtime": fmt.backend, "precision": "/".join(precisions),
                     "export": not blockers, "export_blockers": blockers, "runs_on": runs_on,
                     "install": fmt.install or None})
    return rows


def diagnose(progress: Progress | None = None) -> dict[str, Any]:
    """The whole report: machine, runtimes, formats, and every install line that would bring a missing piece."""
    say = progress or (lambda message: None)
    say("looking at the machine")
    facts = machine_facts()
    runtimes = {}
    for name, row in BACKENDS.items():
        say(f"probing {name}")
        runtimes[name] = probe_runtime(row)
    formats = format_reports(runtimes)
    missing = [line for runtime in runtimes.values() for line in runtime["missing"]]
    # a format whose runtime runs here but which cannot be exported here: what would let it be
    missing += [reason.split(": ", 1)[-1] for row in formats if row["runs_on"]
                for reason in row["export_blockers"] if "pip " in reason]
    return {"resnet_edge": tool_versions(DISTRIBUTION).get(DISTRIBUTION), "machine": facts,
            "runtimes": list(runtimes.values()), "formats": formats, "missing": list(dict.fromkeys(missing)),
            "bug_report": BUG_REPORT}


# the self-test ------------------------------------------------------------------------------------

@dataclass
class SelftestRow:
    """One artifact on one device: ``pass`` (parity holds, and it was timed), ``fail`` or ``skip`` (with why)."""

    format: str
    device: str | None
    status: str
    detail: str
    options: dict[str, Any] = field(default_factory=dict)
    precision: str | None = None
    export_s: float | None = None
    p50_ms: float | None = None
    parity: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        """The format, with the options of a variant: ``trt[precision=fp16,dla_core=0]``."""
        return variant_label(self.format, self.options)


@dataclass
class SelftestResult:
    rows: list[SelftestRow]
    seconds: float
    device: str | None = None
    model: str = ""
    data: str = ""
    machine: dict[str, Any] = field(default_factory=dict)

    @property
    def failures(self) -> list[SelftestRow]:
        return [row for row in self.rows if row.status == "fail"]

    @property
    def ran_on_device(self) -> bool:
        """Something passed or failed on the requested device (always True when no device was requested)."""
        return self.device is None or any(r.device == self.device and r.status != "skip" for r in self.rows)

    @property
    def passed(self) -> bool:
        """No device that a runtime claims failed, and the requested device (if any) ran something."""
        return not self.failures and self.ran_on_device

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "seconds": round(self.seconds, 1), "device": self.device, "model": self.model,
                "data": self.data, "machine": self.machine,
                "rows": [{"name": row.name, **asdict(row)} for row in self.rows]}


def variant_label(name: str, options: Mapping[str, Any]) -> str:
    return name + (f"[{','.join(f'{k}={v}' for k, v in options.items())}]" if options else "")


def _file_label(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_")


def _parity_summary(report: Any) -> dict[str, Any]:
    return {"passed": report.passed, "precision": report.precision, "compared": report.compared,
            "samples": report.samples, "cosine": report.cosine, "max_abs": report.max_abs,
            "top1_agreement": report.top1_agreement, "decisive": report.decisive,
            "decisive_top1": report.decisive_top1, "ran": report.ran, "failures": list(report.failures)}


def run_artifact(path: Path, label: str, device: str, data: Any, *, reference: Any = None,
                 reference_outputs: list[np.ndarray] | None = None, latency_s: float = LATENCY_S,
                 options: Mapping[str, Any] | None = None, export_s: float | None = None) -> SelftestRow:
    """Load ``path`` on ``device``, compare it with the reference (a Keras model, or saved outputs) and time it."""
    from .latency import measure
    from .parity import compare
    from .predictor import load

    fmt = label.split("[")[0]
    try:
        with load(path, device=device) as predictor:
            report = compare(reference, predictor, data, reference_outputs=reference_outputs)
            timing = measure(predictor, 1, warmup=3, min_time_s=latency_s, min_runs=10)
    except Exception as exc:
        kind = type(exc).__name__
        return SelftestRow(fmt, device, "fail", f"{kind}: {first_line(exc)}", dict(options or {}), export_s=export_s)
    detail = report.line() if not report.passed else (
        f"cos {report.cosine:.6f}" + (f", top-1 {report.decisive_top1:.2%} of {report.decisive} decisive"
                                      if report.decisive_top1 is not None else "")
        + (f", ran {report.ran}" if report.ran else ""))
    return SelftestRow(fmt, device, "pass" if report.passed else "fail", detail, dict(options or {}),
                       report.precision, export_s, timing.p50_ms, _parity_summary(report))


@contextlib.contextmanager
def _folder(out: str | os.PathLike[str] | None) -> Iterator[Path]:
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        yield Path(out)
        return
    with tempfile.TemporaryDirectory(prefix="resnet-edge-selftest-") as tmp:
        yield Path(tmp)


def tiny_resnet(classes: int = 10) -> Any:
    """The self-test's ResNet: basic blocks, one per stage, widths 16-128, 32x32 RGB in, built from the same depth
    table machinery as resnet18 (the spec is planted for the call and removed after)."""
    from .models import SPECS, ResNetSpec, build_resnet

    SPECS[SELFTEST_MODEL] = ResNetSpec(bottleneck=False, blocks=SELFTEST_BLOCKS, widths=SELFTEST_WIDTHS)
    try:
        return build_resnet(SELFTEST_MODEL, (SELFTEST_SIZE, SELFTEST_SIZE, 3), num_classes=classes)
    finally:
        SPECS.pop(SELFTEST_MODEL, None)


def _timed(progress: Progress | None, started: float) -> Progress:
    """Progress lines with the seconds since the start: where a slow machine spends its minute."""
    if progress is None:
        return lambda message: None
    return lambda message: progress(f"[{time.perf_counter() - started:5.1f} s] {message}")


def _check_device(device: str | None) -> None:
    if device is not None and device not in devices():
        raise InvalidArgumentError(f"unknown device {device!r}; valid: {', '.join(d for d in devices() if d != 'auto')}")


def _targets(row: BackendEntry, device: str | None) -> tuple[list[str], str | None]:
    """The devices to run a format on (claimed here, narrowed to ``device``), or why there are none."""
    claimed, why = claimed_devices(row)
    if why:
        return [], f"runtime missing: {why}"
    targets = [d for d in claimed if device in (None, d)]
    if not targets:
        return [], f"needs {device if device else row.needs}, which this machine does not give {row.name}"
    return targets, None


def selftest(device: str | None = None, formats: Sequence[str] | None = None, out: str | os.PathLike[str] | None = None,
             progress: Progress | None = None, latency_s: float = LATENCY_S) -> SelftestResult:
    """Export a tiny trained ResNet to every format this machine can export and check each on every device its
    backend claims (see the module docstring). ``out`` keeps the model, the artifacts and ``reference.npz`` (the
    Keras outputs, for ``selftest_from`` on another machine); by default they go to a temporary folder."""
    started = time.perf_counter()
    say = _timed(progress, started)
    _check_device(device)
    chosen = [find_format(name) for name in formats] if formats else list(FORMATS.values())
    chosen = [fmt for fmt in chosen if device is None or device in BACKENDS[fmt.backend].devices]
    if not chosen:
        raise InvalidArgumentError(f"no format runs on {device}")
    say("probing the runtimes")
    runtimes = probe_runtimes({fmt.backend for fmt in chosen})
    from .calibration import CalibrationSet
    from .data import load_digits
    from .exporter import export
    from .models.io import describe, save_model
    from .train import train

    rows: list[SelftestRow] = []
    digits = load_digits((SELFTEST_SIZE, SELFTEST_SIZE))
    with _folder(out) as folder:
        say(f"building {SELFTEST_MODEL} (ResNet basic blocks {SELFTEST_BLOCKS}, widths {SELFTEST_WIDTHS}) and "
            f"training it for {TRAIN_EPOCHS} epoch on digits")
        model = tiny_resnet(len(digits.class_names))
        train(model, digits, epochs=TRAIN_EPOCHS, verbose=0)
        model_path = save_model(model, folder / MODEL_FILE, describe(model, digits.class_names))
        calibration = CalibrationSet.from_dataset(digits, CALIBRATION_IMAGES)
        data = calibration.holdout.sample(PARITY_IMAGES) if calibration.holdout is not None else digits.sample(
            PARITY_IMAGES)
        save_references(model, data, folder)
        for fmt in chosen:
            row = BACKENDS[fmt.backend]
            targets, why = _targets(row, device)
            blockers = export_blockers(fmt, runtimes[fmt.backend])
            if why or blockers:
                rows.append(SelftestRow(fmt.name, device, "skip", why or "; ".join(blockers)))
                say(f"{fmt.name}: skipped ({rows[-1].detail})")
                continue
            paths = [({}, None)] + [(dict(v["options"]), v.get("devices"))
                                    for v in runtimes[fmt.backend]["selftest"].get(fmt.name, [])]
            for options, only in paths:
                label = variant_label(fmt.name, options)
                path = folder / f"selftest_{_file_label(label)}{fmt.suffix}"
                say(f"exporting {label}")
                began = time.perf_counter()
                try:
                    export(model_path, fmt.name, path, verify=False,
                           calibration=calibration if fmt.needs_calibration(options) else None, **options)
                except Exception as exc:
                    for target in [d for d in targets if only is None or d in only]:
                        rows.append(SelftestRow(fmt.name, target, "fail",
                                                f"export failed: {type(exc).__name__}: {first_line(exc)}", options))
                    say(f"{label}: export failed ({first_line(exc)})")
                    continue
                export_s = round(time.perf_counter() - began, 2)
                for target in [d for d in targets if only is None or d in only]:
                    result = run_artifact(path, label, target, data, reference=model, latency_s=latency_s,
                                          options=options, export_s=export_s)
                    rows.append(result)
                    say(f"{label} on {target}: {result.status.upper()} ({result.detail})")
    return SelftestResult(rows, time.perf_counter() - started, device, SELFTEST_MODEL, data.describe(),
                          _brief_machine())


def save_references(model: Any, data: Any, folder: Path) -> None:
    """The Keras outputs on the parity images, as they are and cut before the softmax, for ``selftest_from``: an
    artifact is compared with the one whose outputs are like its own (logits with logits), as in process."""
    from .models.reference import matching_reference
    from .parity import save_reference

    for name, reference in ((REFERENCE_FILE, model), (LOGITS_REFERENCE_FILE, matching_reference(model, "linear"))):
        outputs = reference.predict(data.images.astype(np.float32), batch_size=32, verbose=0)
        outputs = [np.asarray(o) for o in outputs] if isinstance(outputs, (list, tuple)) else [np.asarray(outputs)]
        save_reference(folder / name, outputs, data)


def selftest_from(folder: str | os.PathLike[str], device: str | None = None, progress: Progress | None = None,
                  latency_s: float = LATENCY_S) -> SelftestResult:
    """Run the artifacts a ``selftest(out=folder)`` left (copied from another machine) on every device their
    backends claim here, against the Keras outputs saved beside them: no TensorFlow, no export."""
    from .artifact import read_metadata
    from .parity import load_reference

    started = time.perf_counter()
    say = _timed(progress, started)
    _check_device(device)
    folder = Path(folder)
    if not (folder / REFERENCE_FILE).is_file():
        raise ModelFileError(f"{folder}: no {REFERENCE_FILE}; make the folder with 'resnet-edge doctor --selftest "
                             f"--out {folder}' on a machine with the export extra")
    outputs, data = load_reference(folder / REFERENCE_FILE)
    logits = load_reference(folder / LOGITS_REFERENCE_FILE)[0] if (folder / LOGITS_REFERENCE_FILE).is_file() else None
    rows: list[SelftestRow] = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.lower().endswith(KERAS_SUFFIXES):
            continue
        try:
            row = backend_for_file(path)
        except ModelFileError:
            continue  # a companion (.bin, .json) or the reference
        if device is not None and device not in row.devices:
            continue
        label = path.name
        targets, why = _targets(row, device)
        if why:
            rows.append(SelftestRow(label, device, "skip", why))
            continue
        own = read_metadata(path)
        matching = logits if logits is not None and own is not None and own.output_activation == "linear" else outputs
        for target in targets:
            result = run_artifact(path, label, target, data, reference_outputs=matching, latency_s=latency_s)
            rows.append(result)
            say(f"{label} on {target}: {result.status.upper()} ({result.detail})")
    if not rows:
        raise ModelFileError(f"{folder}: no artifact to run" + (f" on {device}" if device else ""))
    return SelftestResult(rows, time.perf_counter() - started, device, str(folder), data.describe(), _brief_machine())


def _brief_machine() -> dict[str, Any]:
    """What a self-test's figures mean nothing without: CPU, cores, GPU and Jetson, versions."""
    facts = machine_facts()
    versions = tool_versions(DISTRIBUTION, *(t for row in BACKENDS.values() for t in row.tools))
    return {key: facts[key] for key in ("os", "cpu", "usable_cores", "nvidia", "jetson")} | {"versions": versions}


__all__ = ["SelftestResult", "SelftestRow", "diagnose", "format_reports", "machine_facts", "missing_requirements",
           "probe_runtime", "selftest", "selftest_from"]
