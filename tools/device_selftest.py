"""Pack a prepared device bundle into per-call folders (the helper of ``tools/device_selftest.sh prepare``).

The device tool carries at most 64 MiB per call (working tree included) and 8 paths: ``pack`` sorts the wheels,
the parts of the big ones (``parts/NAME.partNN``, made by ``split``) and the self-test artifacts into ``call01/``,
``call02/``, ... (first fit, biggest first), each under ``--call-mib``, so that every call carries ONE folder. It
writes ``manifest.txt`` (what each call carries, each wheel's size, sha256 and number of parts) into the bundle and
into every call folder. Runs on the preparing machine only; the device side is plain bash.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

MIB = 1 << 20
MANIFEST = "manifest.txt"
MANIFEST_RESERVE = 256 * 1024  # room left in every call for its copy of the manifest

Unit = tuple[str, list[tuple[str, Path]]]  # (name, [(path on the device, file here)])


def _size(unit: Unit) -> int:
    return sum(path.stat().st_size for _, path in unit[1])


def units(bundle: Path, checks: dict[str, str]) -> list[Unit]:
    """What must travel: each wheel whole, or its parts one by one; the artifacts (not the Keras model: the device
    has no TensorFlow, and ``--from`` skips it) and the CPU result as one unit."""
    found: list[Unit] = []
    for name in sorted(checks):
        parts = sorted((bundle / "parts").glob(f"{name}.part*"))
        if parts:
            found += [(part.name, [(f"parts/{part.name}", part)]) for part in parts]
        else:
            found.append((name, [(f"wheels/{name}", bundle / "wheels" / name)]))
    together = [(f"artifacts/{p.relative_to(bundle / 'artifacts').as_posix()}", p)
                for p in sorted((bundle / "artifacts").rglob("*")) if p.is_file() and p.suffix != ".keras"]
    if (bundle / "cpu_selftest.json").is_file():
        together.append(("cpu_selftest.json", bundle / "cpu_selftest.json"))
    if together:
        found.append(("artifacts", together))
    return found


def first_fit(found: list[Unit], capacity: int) -> list[list[Unit]]:
    """Bins of at most ``capacity`` bytes, biggest unit first (few calls: each one costs device time)."""
    bins: list[list[Unit]] = []
    for unit in sorted(found, key=lambda u: -_size(u)):
        if _size(unit) > capacity:
            raise SystemExit(f"error: {unit[0]} is {_size(unit) / MIB:.1f} MiB, over a call's {capacity / MIB:.1f} "
                             "MiB: split it smaller (PART_MIB)")
        for open_bin in bins:
            if sum(map(_size, open_bin)) + _size(unit) <= capacity:
                open_bin.append(unit)
                break
        else:
            bins.append([unit])
    return bins


def _place(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)  # same disk: no second copy of a few hundred MB
    except OSError:
        shutil.copy2(source, target)


def pack(bundle: Path, repo: Path, call_mib: float) -> int:
    """Fill ``bundle/callNN`` folders and write the manifest; the number of calls."""
    bundle, repo = bundle.resolve(), repo.resolve()
    try:
        carry_root = bundle.relative_to(repo)
    except ValueError:
        raise SystemExit(f"error: {bundle} is outside the repository {repo}: the device tool carries only paths "
                         "inside the working tree") from None
    for old in bundle.glob("call[0-9][0-9]"):
        shutil.rmtree(old)
    checks = {}
    for line in (bundle / "wheels" / "SHA256SUMS").read_text().splitlines():
        digest, _, name = line.partition("  ")
        checks[name.strip()] = digest
    bins = first_fit(units(bundle, checks), int(call_mib * MIB) - MANIFEST_RESERVE)
    lines = ["# resnet-edge device self-test bundle, made by tools/device_selftest.sh prepare",
             "# call N CARRY BYTES: call N carries the one folder CARRY (BYTES bytes)",
             "# item N BYTES PATH: a file that call N brings (PATH as kept on the device)",
             "# wheel NAME BYTES SHA256 PARTS: a wheel, rebuilt from PARTS parts on the device (0: it travels whole)",
             f"calls {len(bins)}"]
    items = []
    for number, open_bin in enumerate(bins, 1):
        folder = bundle / f"call{number:02d}"
        for _, files in open_bin:
            for relative, source in files:
                _place(source, folder / relative)
                items.append(f"item {number} {source.stat().st_size} {relative}")
        lines.append(f"call {number} {(carry_root / folder.name).as_posix()} {sum(map(_size, open_bin))}")
    lines += items
    for name, digest in sorted(checks.items()):
        parts = sorted((bundle / "parts").glob(f"{name}.part*"))
        size = sum(p.stat().st_size for p in parts) if parts else (bundle / "wheels" / name).stat().st_size
        lines.append(f"wheel {name} {size} {digest} {len(parts)}")
    text = "\n".join(lines) + "\n"
    (bundle / MANIFEST).write_text(text)
    for number in range(1, len(bins) + 1):
        (bundle / f"call{number:02d}" / MANIFEST).write_text(text)
    return len(bins)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    packing = sub.add_parser("pack", help="sort a prepared bundle into per-call folders and write manifest.txt")
    packing.add_argument("bundle", type=Path, help="the folder prepare filled (wheels/, parts/, artifacts/)")
    packing.add_argument("--repo", type=Path, required=True, help="the repository root (carry paths are relative)")
    packing.add_argument("--call-mib", type=float, default=60.0, help="the most one call carries, in MiB")
    args = parser.parse_args(argv)
    print(pack(args.bundle, args.repo, args.call_mib))
    return 0


if __name__ == "__main__":
    sys.exit(main())
