"""Atomic artifact writes: a file appears at its path complete or not at all.

The temporary file is a hidden sibling, ``.{stem}.{pid}.{host}.{random}.tmp{suffix}``: a writer killed
outright (SIGKILL, power loss) cannot remove it, so the next write to the same path removes the
leftovers whose writer is gone, as read from the name: a process id that no longer runs on this host.
Where the writer cannot be checked, age decides: a name from before the process id was recorded after
``UNKNOWN_WRITER_AFTER_S``, another host's (a shared folder) after ``OTHER_HOST_AFTER_S``. A live
writer's temporary file on this host is never touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

UNKNOWN_WRITER_AFTER_S = 3600.0  # a leftover of the old naming (no process id) is left alone this long
OTHER_HOST_AFTER_S = 86400.0  # another host's, or where a process cannot be checked (Windows)
REUSED_PID_AFTER_S = 7 * 86400.0  # a "live" writer this old is a reused process id, not a write in progress


def host_tag() -> str:
    """Eight hex digits naming this host, so a process id is only ever checked on the host that wrote it."""
    return hashlib.sha1(socket.gethostname().encode(), usedforsecurity=False).hexdigest()[:8]


def _running(pid: int) -> bool | None:
    """Whether a process with this id exists on this host (one we may not signal counts as running);
    None where that cannot be asked (on Windows ``os.kill`` would terminate it)."""
    if os.name == "nt":
        return None
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _writer(name: str, prefix: str, ending: str) -> tuple[bool, tuple[int, str] | None]:
    """Whether ``name`` is one of our temporary names between ``prefix`` and ``ending``, and the (pid, host)
    it records (None for a name of the old pattern, without them)."""
    if not (name.startswith(prefix) and name.endswith(ending)) or len(name) <= len(prefix) + len(ending):
        return False, None
    middle = name[len(prefix) : len(name) - len(ending)].split(".")
    if len(middle) == 3 and middle[0].isdigit():
        return True, (int(middle[0]), middle[1])
    return len(middle) == 1, None


def is_stale(path: Path, writer: tuple[int, str] | None, now: float | None = None) -> bool:
    """Whether a leftover temporary file's writer is gone: a dead process on this host, else age alone."""
    try:
        age = (time.time() if now is None else now) - path.lstat().st_mtime
    except OSError:
        return False
    if writer is None:
        return age > UNKNOWN_WRITER_AFTER_S
    running = _running(writer[0]) if writer[1] == host_tag() else None
    if running is None:
        return age > OTHER_HOST_AFTER_S
    return not running or age > REUSED_PID_AFTER_S


def split_name(target: Path) -> tuple[str, str]:
    """``("model", ".ncnn.param")`` for ``model.ncnn.param``: the name before its first suffix, and every suffix."""
    suffixes = "".join(target.suffixes)
    return target.name[: len(target.name) - len(suffixes)] or target.name, suffixes


def remove_stale(target: str | os.PathLike[str], companions: Sequence[str] = ()) -> list[Path]:
    """Remove the temporary files that killed writes to ``target`` left beside it (and their companions).

    Only names of our own pattern for this target are considered (``.{stem}.*.tmp{suffix}``, for the
    target's suffix and each companion suffix); errors (a file already gone, a read-only folder) are ignored.
    Returns what was removed.
    """
    target = Path(target)
    stem, suffixes = split_name(target)
    prefix = f".{stem}."
    inner = suffixes[: len(suffixes) - len(target.suffix)]
    endings = [f".tmp{inner}{suffix}" for suffix in dict.fromkeys([target.suffix, *companions])]
    removed = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        for ending in endings:
            ours, writer = _writer(entry.name, prefix, ending)
            if not ours:
                continue
            path = Path(entry.path)
            if is_stale(path, writer):
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed.append(path)
            break
    return removed


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], companions: Sequence[str] = ()) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; it replaces ``target`` only if the block succeeds.

    The temporary name keeps the target's suffixes, since some writers (Keras) insist on them and a two-part
    suffix names the runtime (``.ncnn.param``).
    ``companions`` are suffixes of files the writer puts beside the temporary path under its stem
    (OpenVINO's ``.bin`` beside the ``.xml``): they are moved first and the target last, so a reader that
    finds the new target finds its new companions. Any exception, KeyboardInterrupt included, removes
    every temporary file; what a killed writer left is removed on entry (see :func:`remove_stale`).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target, companions)
    stem, suffixes = split_name(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.{os.getpid()}.{host_tag()}.", suffix=f".tmp{suffixes}",
                                    dir=target.parent)
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
