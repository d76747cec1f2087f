"""Online serving on Ray Serve: ``POST /predict`` with an encoded image returns its top-k, ``GET /health`` says
which model answers.

Each replica holds one Predictor and batches the requests that arrive within ``batch_wait_ms`` (up to
``max_batch``) into one model call. Bodies are size-capped and decoded before they join a batch, so a bad
upload costs its sender a 4xx and nobody else anything. There is no authentication: the default host is
loopback, and binding elsewhere is the caller's explicit choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import re
import signal
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .._lazy import lazy_import
from ..errors import DataError, DeviceError, InvalidArgumentError, ResnetEdgeError, first_line
from ..registry import backend_for_file, devices
from .cluster import LOOPBACK, connect, import_ray, is_local, uses_gpu

APP_NAME = "resnet-edge"
DEFAULT_PORT = 8000
MAX_BODY_BYTES = 10 * 2**20
MAX_PIXELS = 40_000_000
MAX_TOP_K = 1000
SOURCE = "<request>"
READY_TIMEOUT_S = 120.0
JSON_TYPE = "application/json"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    """What every replica needs: the artifact, how to run it, how to batch, what to accept."""

    artifact: str
    max_batch: int = 16
    batch_wait_s: float = 0.005
    top_k: int = 5
    device: str = "auto"
    threads: int | None = None
    max_body_bytes: int = MAX_BODY_BYTES
    max_pixels: int = MAX_PIXELS


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Any:
    from starlette.responses import Response

    body = json.dumps({"error": " ".join(message.split())}) + "\n"
    return Response(body, status_code=status, media_type=JSON_TYPE, headers=headers)


def _json(data: Any) -> Any:
    from starlette.responses import Response

    return Response(json.dumps(data) + "\n", media_type=JSON_TYPE)


class BodyTooLarge(Exception):
    """A request body over the limit, by its Content-Length or by what arrived."""


class ModelReplica:
    """One Serve replica: one Predictor, one batch queue, the HTTP routes."""

    def __init__(self, options: ServeOptions) -> None:
        from ray import serve

        from ..predictor import load

        self.options = options
        self.predictor = load(options.artifact, device=options.device, threads=options.threads)
        self.size = self.predictor.input_spec.size
        self.policy = self.predictor.resize_policy

        @serve.batch(max_batch_size=options.max_batch, batch_wait_timeout_s=options.batch_wait_s)
        async def classify(items: list[tuple[np.ndarray, int]]) -> list[dict[str, Any]]:
            return await asyncio.to_thread(self._classify, items)

        self.classify = classify

    def _classify(self, items: list[tuple[np.ndarray, int]]) -> list[dict[str, Any]]:
        """One model call for the batch; each request gets its own top-k cut of the largest asked for."""
        widest = max(top_k for _, top_k in items)
        batch = np.stack([image for image, _ in items])
        predictions = self.predictor.classify(batch, widest, [SOURCE] * len(items))
        return [{"source": p.source, "labels": p.labels[:k], "indices": p.indices[:k], "scores": p.scores[:k]}
                for p, (_, k) in zip(predictions, items, strict=True)]

    async def __call__(self, request: Any) -> Any:
        path = request.url.path.rstrip("/") or "/"
        routes = {"/predict": ("POST", self._predict), "/health": ("GET", self._health)}
        if path not in routes:
            return _error(404, f"no route {path}: POST /predict or GET /health")
        method, handler = routes[path]
        if request.method != method and not (method == "GET" and request.method == "HEAD"):
            return _error(405, f"{path} takes {method}, not {request.method}", {"Allow": method})
        try:
            return await handler(request)
        except Exception as exc:  # the replica answers 500 and keeps serving
            logger.exception("request to %s failed", path)
            return _error(500, f"{type(exc).__name__}: {first_line(exc)}")

    async def _health(self, request: Any) -> Any:
        return _json({"status": "ok", "artifact": Path(self.options.artifact).name,
                      "backend": self.predictor.backend.name, "device": self.predictor.device,
                      "input_size": list(self.size), "max_batch": self.options.max_batch})

    async def _predict(self, request: Any) -> Any:
        try:
            top_k = _top_k(request.query_params.get("top_k"), self.options.top_k)
            body = await _read_body(request, self.options.max_body_bytes)
        except InvalidArgumentError as exc:
            return _error(400, str(exc))
        except BodyTooLarge as exc:
            return _error(413, str(exc))
        from ..preprocess import decode_image

        try:
            image = await asyncio.to_thread(decode_image, body, self.size, self.policy, "request body",
                                            self.options.max_pixels)
        except DataError as exc:
            return _error(400, str(exc))
        prediction = await self.classify((image, top_k))
        return _json({"predictions": [prediction], "skipped": []})


def _top_k(text: str | None, default: int) -> int:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise InvalidArgumentError(f"top_k must be an integer from 1 to {MAX_TOP_K}, not {text[:40]!r}") from None
    if not 1 <= value <= MAX_TOP_K:
        raise InvalidArgumentError(f"top_k must be an integer from 1 to {MAX_TOP_K}, not {value}")
    return value


async def _read_body(request: Any, limit: int) -> bytes:
    """The body, refused by its declared length before any is read, and cut off once past ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise InvalidArgumentError(f"bad Content-Length {declared[:40]!r}") from None
        if length > limit:
            raise BodyTooLarge(f"body of {length} bytes is over the limit of {limit} bytes")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge(f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _serve() -> ModuleType:
    import_ray()
    return lazy_import("ray.serve", extra="scale")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``: addresses no other machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_options(artifact: str | Path, replicas: int, max_batch: int, batch_wait_ms: float, top_k: int,
                   device: str, max_body_bytes: int, max_pixels: int) -> Path:
    path = Path(artifact)
    try:
        backend_for_file(path)
    except ResnetEdgeError as exc:
        raise InvalidArgumentError(str(exc)) from None
    if not path.is_file():
        raise InvalidArgumentError(f"{path}: no such model file")
    checks = [(replicas >= 1, "replicas must be at least 1"),
              (max_batch >= 1, "max batch must be at least 1"),
              (batch_wait_ms >= 0, "batch wait must be 0 ms or more"),
              (1 <= top_k <= MAX_TOP_K, f"top-k must be from 1 to {MAX_TOP_K}"),
              (device in devices(), f"unknown device {device!r}; valid: {', '.join(devices())}"),
              (max_body_bytes >= 1, "max body size must be at least 1 byte"),
              (max_pixels >= 1, "max pixels must be at least 1")]
    for ok, message in checks:
        if not ok:
            raise InvalidArgumentError(message)
    return path


def _check_address(host: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise InvalidArgumentError(f"port must be from 1 to 65535, not {port}")
    if not host or any(ch.isspace() or ch in "/[]@" for ch in host):
        raise InvalidArgumentError(f"bad host {host!r}: give an IP address or a host name")


def build_app(
    artifact: str | Path, *, replicas: int = 1, max_batch: int = 16, batch_wait_ms: float = 5.0, top_k: int = 5,
    device: str = "auto", max_body_bytes: int = MAX_BODY_BYTES, max_pixels: int = MAX_PIXELS,
    resources: dict[str, float] | None = None,
) -> Any:
    """The Serve application for ``artifact``: ``replicas`` replicas sharing the cluster's CPUs (or one GPU
    each), each batching up to ``max_batch`` requests that arrive within ``batch_wait_ms``.

    ``resources`` (default: ``ray.cluster_resources()``, so Ray must be connected) sizes the replicas.
    """
    path = _check_options(artifact, replicas, max_batch, batch_wait_ms, top_k, device, max_body_bytes, max_pixels)
    serve = _serve()
    if resources is None:
        resources = import_ray().cluster_resources()
    cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    wants_gpu = uses_gpu(path, device, gpus, cpus)
    actor_options = {"num_cpus": min(1.0, cpus / replicas) if cpus else 0,
                     "num_gpus": min(1.0, gpus / replicas) if wants_gpu else 0}
    options = ServeOptions(str(path.resolve()), max_batch=max_batch, batch_wait_s=batch_wait_ms / 1000, top_k=top_k,
                           device=device, threads=max(1, int(cpus) // replicas), max_body_bytes=max_body_bytes,
                           max_pixels=max_pixels)
    deployment = serve.deployment(
        ModelReplica, name="ModelReplica", num_replicas=replicas, ray_actor_options=actor_options,
        max_ongoing_requests=max(64, 4 * max_batch), max_constructor_retry_count=2,
        graceful_shutdown_timeout_s=5, logging_config={"enable_access_log": False, "log_level": "WARNING"},
    )
    return deployment.bind(options)


@dataclass
class _Running:
    """What :func:`stop` must undo: the server :func:`start` brought up, and whether it also started Ray."""

    url: str | None = None
    started_ray: bool = False


_running = _Running()


def _port_is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _url(host: str, port: int) -> str:
    if host in ("0.0.0.0", ""):
        host = LOOPBACK
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _wait_ready(url: str, timeout_s: float) -> dict[str, Any]:
    """Poll ``/health`` until it answers 200: the proxy learns the route a moment after the app is up."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                return json.loads(response.read())
        except (OSError, ValueError) as exc:
            last = first_line(exc)
        time.sleep(0.2)
    raise DeviceError(f"the server at {url} did not answer /health within {timeout_s:.0f} s ({last})")


def _deploy_error(serve: ModuleType, exc: Exception) -> ResnetEdgeError:
    """The replica's own one-line error, out of the deployment's status (``serve.run`` only says that it failed)."""
    text = str(exc)
    with contextlib.suppress(Exception):
        app = serve.status().applications[APP_NAME]
        text = "\n".join([text, app.message, *(d.message for d in app.deployments.values())])
    ours = re.findall(r"resnet_edge\.errors\.(\w+): (.+)", text)
    if ours:
        from .. import errors

        kind, message = ours[-1]
        cls = getattr(errors, kind, DeviceError)
        return cls(message) if isinstance(cls, type) and issubclass(cls, ResnetEdgeError) else DeviceError(message)
    lines = [line.strip() for line in text.splitlines() if re.match(r"\s*\w+(\.\w+)*(Error|Exception): ", line)]
    return DeviceError(f"the model replicas failed to start: {lines[-1] if lines else first_line(exc)}")


def start(
    artifact: str | Path, *, host: str = LOOPBACK, port: int = DEFAULT_PORT, replicas: int = 1, max_batch: int = 16,
    batch_wait_ms: float = 5.0, top_k: int = 5, device: str = "auto", max_body_bytes: int = MAX_BODY_BYTES,
    max_pixels: int = MAX_PIXELS, address: str | None = None, ready_timeout_s: float = READY_TIMEOUT_S,
    on_message: Callable[[str], None] | None = None,
) -> str:
    """Serve ``artifact`` over HTTP on ``host:port`` and return its base URL once ``/health`` answers.

    Connects to Ray (``address``; None starts a local one on loopback), starts Serve's proxy on the address and
    deploys the app; :func:`stop` undoes it. A host other than loopback is reachable by anyone on the network.
    """
    _check_address(host, port)
    _check_options(artifact, replicas, max_batch, batch_wait_ms, top_k, device, max_body_bytes, max_pixels)
    if not is_loopback(host) and on_message is not None:
        on_message(f"warning: serving on {host} with no authentication: anyone who can reach port {port} "
                   "can use the model")
    if is_local(address) and not _port_is_free(host, port):
        raise InvalidArgumentError(f"port {port} on {host} is in use; pick another with --port")
    running = sys.modules.get("ray")  # connect() must import Ray itself: a local Ray binds loopback only then
    owns_ray = running is None or not running.is_initialized()
    url = _url(host, port)
    try:
        connect(address)
        _running.started_ray = _running.started_ray or owns_ray
        serve = _serve()
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
        app = build_app(artifact, replicas=replicas, max_batch=max_batch, batch_wait_ms=batch_wait_ms, top_k=top_k,
                        device=device, max_body_bytes=max_body_bytes, max_pixels=max_pixels)
        serve.start(http_options={"host": host, "port": port},
                    logging_config={"enable_access_log": False, "log_level": "WARNING"})
        try:
            serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        except RuntimeError as exc:
            raise _deploy_error(serve, exc) from None
        _wait_ready(url, ready_timeout_s)
    except BaseException:
        with contextlib.suppress(Exception):
            stop()
        if owns_ray and "ray" in sys.modules:  # also after an interrupted ray.init, whose threads crash the exit
            sys.modules["ray"].shutdown()
        raise
    _running.url = url
    return url


def stop() -> None:
    """Shut Serve down, and Ray too when :func:`start` started it."""
    ray = import_ray()
    try:
        if ray.is_initialized():
            _serve().shutdown()
    finally:
        if _running.started_ray:
            ray.shutdown()
        _running.url, _running.started_ray = None, False


def run_server(
    artifact: str | Path, *, on_ready: Callable[[str], None] | None = None,
    on_message: Callable[[str], None] | None = None, **options: Any,
) -> None:
    """:func:`start`, then block until SIGINT (Ctrl-C) or SIGTERM, then :func:`stop`; returns after a clean shutdown.

    ``options`` are :func:`start`'s keywords; ``on_ready`` gets the base URL once it answers.
    """
    stopping, started = threading.Event(), threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stopping.set()
        if not started.is_set():
            raise KeyboardInterrupt

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for sig in handlers:
            signal.signal(sig, on_signal)
        url = start(artifact, on_message=on_message, **options)
        for sig in handlers:  # ray.init replaces the SIGTERM handler
            signal.signal(sig, on_signal)
        started.set()
        if on_ready is not None and not stopping.is_set():
            on_ready(url)
        while not stopping.wait(0.5):
            pass
        if on_message is not None:
            on_message("stopping")
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if started.is_set():
            stop()


__all__ = ["MAX_BODY_BYTES", "MAX_PIXELS", "ModelReplica", "ServeOptions", "build_app", "is_loopback",
           "run_server", "start", "stop"]
