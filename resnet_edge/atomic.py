"""Atomic artifact writes: a file appears at its path complete or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], companions: Sequence[str] = ()) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; it replaces ``target`` only if the block succeeds.

    The temporary name keeps the target's suffix, since some writers (Keras) insist on it.
    ``companions`` are suffixes of files the writer puts beside the temporary path under its stem
    (OpenVINO's ``.bin`` beside the ``.xml``): they are moved first and the target last, so a reader that
    finds the new target finds its new companions. Any exception, KeyboardInterrupt included, removes
    every temporary file.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    moves = [(tmp.with_suffix(extra), target.with_suffix(extra)) for extra in companions] + [(tmp, target)]
    try:
        yield tmp
        for written, final in moves:
            with open(written, "rb+") as handle:
                os.fsync(handle.fileno())
            os.chmod(written, 0o666 & ~_umask())  # mkstemp's 0600 would hide the model from other users
            os.replace(written, final)
        _fsync_folder(target.parent)
    except BaseException:
        for written, _ in moves:
            written.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (power loss on an embedded board)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(target: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)
