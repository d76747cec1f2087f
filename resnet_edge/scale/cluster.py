"""Connecting to Ray (a local one on loopback, or a cluster) and sizing the workers from what it has."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from .. import errors
from .._lazy import lazy_import
from ..errors import DeviceError, InvalidArgumentError, MissingDependencyError, ResnetEdgeError, first_line
from ..registry import backend_for_file

LOOPBACK = "127.0.0.1"
PROBE_TIMEOUT_S = 5.0
TOKEN_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"
LOCAL_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray uses the loopback address as the node's (its macOS default)
GPU_DEVICES = ("cuda", "tensorrt-ep", "jetson")
# Ray Data's loggers that print a traceback of its internals when a worker fails: quiet while worker_errors() reports
FAILURE_LOGGERS = ("ray.data.exceptions", "ray.data._internal.execution.operators.actor_pool_map_operator")
_RAISED = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception)): (\S.*)$")  # a traceback's last line
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def import_ray() -> ModuleType:
    """Ray, or a one-line error naming the extra that installs it."""
    return lazy_import("ray", extra="scale")


def is_local(address: str | None) -> bool:
    """Whether ``connect(address)`` starts a Ray of its own (no address given, none in ``$RAY_ADDRESS``)."""
    return address in (None, "", "local") and not os.environ.get("RAY_ADDRESS")


def _probe(address: str) -> None:
    """Fail in seconds on a cluster address nothing listens at (Ray itself retries for minutes)."""
    host_port = address.removeprefix("ray://").rsplit(":", 1)
    if address == "auto" or len(host_port) != 2 or not host_port[1].isdigit():
        return
    try:
        socket.create_connection((host_port[0], int(host_port[1])), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise DeviceError(f"cannot reach Ray at {address}: {exc.strerror or exc}") from exc


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join the Ray cluster at ``address`` (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``; ``$RAY_ADDRESS`` when
    None), or start a local one on loopback; True when this call started Ray.

    A local Ray advertises 127.0.0.1 (Ray's own local-only mode, set before Ray is imported), so nothing of it
    is reached through another interface. A Ray already running in this process is reused as it is.
    """
    if address not in (None, "", "local", "auto") and Path(address).exists():
        raise InvalidArgumentError(f"--ray takes a cluster address, not the path {address!r}; "
                                   "write --ray=ADDRESS, or put --ray after the images")
    if (is_local(address) or _loopback(address)) and "ray" not in sys.modules:
        os.environ.setdefault(LOCAL_ONLY, "0")  # joining a local Ray by its 127.0.0.1 address needs it too
    ray = import_ray()
    if ray.is_initialized():
        return False
    options: dict[str, object] = {"include_dashboard": False, "logging_level": logging.WARNING,
                                  "log_to_driver": False}
    if is_local(address):
        options.update(num_cpus=num_cpus, _node_ip_address=LOOPBACK)
    else:
        options["address"] = os.environ["RAY_ADDRESS"] if address in (None, "", "local") else address
        _probe(str(options["address"]))
    # "Token authentication is enabled for this Ray cluster": Ray's default for a cluster it starts, said on every
    # start; the README says it once (Beyond one machine: Ray), and RAY_AUTH_MODE=disabled still opts out
    logging.getLogger(TOKEN_NOTICE_LOGGER).setLevel(logging.ERROR)
    try:
        ray.init(**options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise DeviceError(f"cannot reach Ray at {options.get('address', 'a new local instance')}: "
                          f"{' '.join(str(exc).split())[:300]}") from exc
    return True


def _loopback(address: str | None) -> bool:
    """An address on this machine's loopback (``127.0.0.1:6379``, ``localhost:6379``, ``ray://127.0.0.1:10001``)."""
    text = (os.environ.get("RAY_ADDRESS", "") if address in (None, "", "local") else address) or ""
    host = text.split("://")[-1].rsplit(":", 1)[0]
    return host in ("127.0.0.1", "localhost", "::1", "[::1]")


def quiet_data(ray: ModuleType) -> None:
    """No Ray Data progress bars or per-second status logs: the callers report progress per shard."""
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled": we chose so


def check_loads(artifacts: Sequence[str | os.PathLike[str]], device: str = "auto") -> None:
    """Load each artifact once in the driver and close it, before Ray starts or anything is written.

    A corrupt, truncated or absurd model is then a one-line error here instead of an actor dying in its
    constructor on every worker. Loaded on the CPU where its backend runs there (the driver's GPU stays free for
    the actors); a device or runtime the driver lacks proves nothing about the workers, so those errors are left
    for them to report (through :func:`worker_errors`).
    """
    from ..predictor import load

    for path in artifacts:
        row = backend_for_file(path)
        local = "cpu" if device in ("auto", "cpu") and "cpu" in row.devices else device
        try:
            with load(path, device=local, threads=1):
                pass
        except (DeviceError, MissingDependencyError):
            continue


def worker_error(error: BaseException) -> ResnetEdgeError | None:
    """The one-line error a Ray worker raised, out of the wrappers Ray delivers it in; None when there is none.

    A task's exception arrives as a ``RayTaskError`` whose ``cause`` is the original. An actor whose
    constructor raised arrives as ``ActorDiedError`` (a ``RayActorError`` with ``actor_init_failed``) that keeps
    only the worker's traceback as text: its last ``module.Error: message`` line is the error, rebuilt as the
    ResnetEdgeError of that name, or as a DeviceError naming it when it is not one of ours (a worker without
    the runtime, say). Ray Data chains these behind its own exceptions, so the whole chain is searched.
    """
    ray_actor_error = getattr(sys.modules.get("ray.exceptions"), "RayActorError", None)
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        cause = getattr(current, "cause", None)
        if isinstance(cause, ResnetEdgeError):
            return cause
        if isinstance(current, ResnetEdgeError) and cause is None:
            return current
        if ray_actor_error is not None and isinstance(current, ray_actor_error) and current.actor_init_failed:
            return _rebuilt(str(current))
        current = current.__cause__ or current.__context__
    return None


def _rebuilt(traceback_text: str) -> ResnetEdgeError:
    """The last ``Error: message`` line of a worker's traceback as a ResnetEdgeError."""
    for line in reversed(_ANSI.sub("", traceback_text).splitlines()):
        match = _RAISED.match(line.strip())
        if match is None:
            continue
        kind = getattr(errors, match.group(1), None)
        if isinstance(kind, type) and issubclass(kind, ResnetEdgeError):
            return kind(match.group(2))
        return DeviceError(f"a Ray worker could not load the model ({match.group(1)}: {match.group(2)})")
    return DeviceError(f"a Ray worker could not load the model ({first_line(traceback_text)})")


@contextlib.contextmanager
def worker_errors() -> Iterator[None]:
    """Within the block, a worker's failure is raised as its one-line ResnetEdgeError (see :func:`worker_error`),
    and Ray Data's own report of it (a traceback of its internals on stderr) is not printed. Other errors pass
    through unchanged."""
    loggers = [logging.getLogger(name) for name in FAILURE_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    except Exception as exc:
        found = worker_error(exc)
        if found is None or found is exc:
            raise
        raise found from None
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@contextlib.contextmanager
def session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Ray connected for the block; shut down after it only if this block started it."""
    started = connect(address, num_cpus)
    try:
        yield
    finally:
        if started:
            import_ray().shutdown()


@dataclass(frozen=True)
class WorkerPlan:
    """How many model actors to run and what each reserves: one per GPU, else one per CPU with one thread.

    On a GPU, ``device`` stays as asked (``auto`` lets each actor take its backend's first working GPU device).
    """

    actors: int
    num_cpus: float
    num_gpus: float
    threads: int
    device: str

    def remote_args(self) -> dict[str, float]:
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}


def uses_gpu(artifact: str | os.PathLike[str], device: str, gpus: float, cpus: float = 1) -> bool:
    """Whether the model actors of ``artifact`` take a GPU: ``device`` names one, or is ``auto`` with a GPU in
    the cluster and a backend that runs on it. A device the cluster or the backend lacks is a one-line error."""
    row = backend_for_file(artifact)
    runs_on_gpu = any(d in GPU_DEVICES for d in row.devices)
    wanted = device in GPU_DEVICES or (device == "auto" and gpus >= 1 and runs_on_gpu)
    if wanted and gpus < 1:
        raise DeviceError(f"--device {device} needs a GPU in the Ray cluster; it has none")
    if wanted and (not runs_on_gpu or (device != "auto" and device not in row.devices)):
        raise DeviceError(f"the {row.name} backend does not run on {device}")
    if not wanted and cpus < 1:
        raise DeviceError("the Ray cluster has no CPU to run on")
    return wanted


def plan_workers(artifact: str | os.PathLike[str], device: str = "auto", workers: int | None = None,
                 resources: dict[str, float] | None = None) -> WorkerPlan:
    """Actors for ``artifact`` from the cluster's resources (``ray.cluster_resources()`` by default).

    GPUs are used when the artifact's backend runs on one and ``device`` allows it; otherwise each
    actor takes one CPU and runs its model on one thread, so actors do not oversubscribe the cores.
    """
    if workers is not None and workers < 1:
        raise InvalidArgumentError("workers must be at least 1")
    if resources is None:
        resources = import_ray().cluster_resources()
    cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
    if uses_gpu(artifact, device, gpus, cpus):
        return WorkerPlan(workers or gpus, num_cpus=1, num_gpus=1, threads=1, device=device)
    return WorkerPlan(workers or cpus, num_cpus=1, num_gpus=0, threads=1, device="cpu" if device == "auto" else device)
