"""Silence converters' and runtimes' chatter (Python prints, warnings, INFO logs, native stdout/stderr)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator

_redirecting = threading.RLock()


@contextlib.contextmanager
def _native_fds_to_devnull() -> Iterator[None]:
    with _redirecting:
        yield from _redirected()


def _redirected() -> Iterator[None]:
    sys.stdout.flush()
    sys.stderr.flush()
    saved = []
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            saved.append((fd, os.dup(fd)))
            os.dup2(devnull, fd)
        os.close(devnull)
    except OSError:  # no real file descriptors (e.g. captured by a test runner): leave them alone
        pass
    try:
        yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)


NOISY_LOGGERS = ("tf2onnx", "tensorflow", "absl", "onnxruntime")  # libraries that log through Python's logging


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Run a conversion or runtime start-up without anything reaching the user's terminal."""
    loggers = [logging.getLogger(name) for name in NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _native_fds_to_devnull():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
