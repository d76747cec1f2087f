"""Atomic writes: a killed writer's temporary file is removed by the next write; a live writer's never is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resnet_edge import atomic
from resnet_edge.atomic import atomic_path, host_tag, remove_stale, write_bytes

# A writer that has its temporary file (and an OpenVINO-style companion) half written, says so, and waits.
WRITER = """
import sys, time
from resnet_edge.atomic import atomic_path
with atomic_path(sys.argv[1], companions=(".bin",)) as tmp:
    tmp.write_bytes(b"half an artifact")
    tmp.with_suffix(".bin").write_bytes(b"half the weights")
    print(tmp, flush=True)
    time.sleep(120)
"""


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def start_writer(target: Path) -> tuple[subprocess.Popen, Path]:
    """A real process in the middle of an atomic write to ``target``; returns it and its temporary path."""
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    line = writer.stdout.readline().strip()
    assert line, "the writer did not start"
    return writer, Path(line)


@pytest.fixture
def writers():
    started: list[subprocess.Popen] = []
    yield started
    for writer in started:
        if writer.poll() is None:
            writer.kill()
        writer.wait(10)
        writer.stdout.close()


def test_a_sigkilled_writers_leftovers_are_removed_by_the_next_write(tmp_path: Path, writers) -> None:
    target = tmp_path / "model.xml"
    writer, tmp = start_writer(target)
    writers.append(writer)
    assert tmp.name.startswith(f".model.{writer.pid}.{host_tag()}.") and tmp.name.endswith(".tmp.xml")
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(10)
    assert tmp.exists() and tmp.with_suffix(".bin").exists()  # nothing can clean up after SIGKILL
    (tmp_path / "other.tmp.xml").write_text("not ours")
    with atomic_path(target, companions=(".bin",)) as fresh:
        fresh.write_text("<net/>")
        fresh.with_suffix(".bin").write_bytes(b"weights")
    assert temporaries(tmp_path) == []
    assert target.read_text() == "<net/>" and (tmp_path / "other.tmp.xml").exists()


def test_a_live_writers_temporary_file_is_kept(tmp_path: Path, writers) -> None:
    target = tmp_path / "model.xml"
    writer, tmp = start_writer(target)
    writers.append(writer)
    old = time.time() - 2 * atomic.OTHER_HOST_AFTER_S  # old, but its writer runs: a long conversion
    os.utime(tmp, (old, old))
    write_bytes(target, b"<net/>")
    assert tmp.exists() and tmp.with_suffix(".bin").exists()
    assert remove_stale(target, (".bin",)) == []


@pytest.mark.parametrize(
    ("name", "age_s", "removed"),
    [
        (".model.ab12cd_3.tmp.onnx", 2 * atomic.UNKNOWN_WRITER_AFTER_S, True),  # the old naming, long untouched
        (".model.ab12cd_3.tmp.onnx", 10, False),  # the old naming, maybe still being written
        (".model.4242.0badc0de.xyz.tmp.onnx", 2 * atomic.OTHER_HOST_AFTER_S, True),  # another host's, long untouched
        (".model.4242.0badc0de.xyz.tmp.onnx", atomic.UNKNOWN_WRITER_AFTER_S * 2, False),  # another host's, recent
        (".model.v2.4242.0badc0de.xyz.tmp.onnx", 10**7, False),  # model.v2.onnx's, not ours
        (".model.tmp.onnx", 10**7, False),
        (".model.ab12cd_3.tmp.onnx.part", 10**7, False),
        ("model.ab12cd_3.tmp.onnx", 10**7, False),
    ],
)
def test_writers_that_cannot_be_checked_are_judged_by_age(tmp_path: Path, name: str, age_s: float,
                                                          removed: bool) -> None:
    leftover = tmp_path / name
    leftover.write_bytes(b"x")
    then = time.time() - age_s
    os.utime(leftover, (then, then))
    write_bytes(tmp_path / "model.onnx", b"model")
    assert leftover.exists() != removed


def test_a_dead_process_id_on_this_host_is_removed_at_once(tmp_path: Path) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = tmp_path / f".model.{int(finished.stdout)}.{host_tag()}.k2j4h5.tmp.onnx"
    leftover.write_bytes(b"x")
    mine = tmp_path / f".model.{os.getpid()}.{host_tag()}.k2j4h5.tmp.onnx"
    mine.write_bytes(b"x")
    assert remove_stale(tmp_path / "model.onnx") == [leftover]
    assert mine.exists()


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
