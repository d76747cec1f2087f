"""Online serving on Ray Serve: ``POST /predict`` with an image returns its top-k, ``GET /health`` says which
model answers, ``GET /metrics`` counts requests, errors, latencies and batch sizes (Prometheus text format).

An image arrives as the raw body (``curl --data-binary @x.jpg``), as a multipart/form-data file
(``curl -F file=@x.jpg``, what browsers and most HTTP clients send) or as JSON ``{"image": "<base64>"}`` (a
``data:`` URL too): ``image_bytes`` turns any of them into the encoded image, for every route that takes one.
Each replica holds one Predictor and batches the requests that arrive within ``batch_wait_ms`` (up to
``max_batch``) into one model call. Bodies are size-capped and decoded before they join a batch, so a bad
upload costs its sender a 4xx and nobody else anything. There is no authentication: the default host is
loopback, and binding elsewhere is the caller's explicit choice.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email.message
import email.utils
import ipaddress
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus text exposition format
FILE_FIELDS = ("file", "image")  # the multipart field names looked for first
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
QUANTILES = (0.5, 0.9, 0.99)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
RECENT_REQUESTS = 1024  # per route: the window the latency quantiles are taken over
METRICS_FLUSH_S = 1.0  # how often a replica sends its counts to the collector

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


class RequestError(Exception):
    """A request refused before it reaches the model: the HTTP status it gets and a one-line reason."""

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class BodyTooLarge(RequestError):
    """A request body over the limit, by its Content-Length or by what arrived."""

    status = 413


def _header_params(name: str, value: str | None, default: str) -> tuple[str, dict[str, str]]:
    """A MIME header's main value (lower case) and its parameters, unquoted (``boundary``, ``name``, ...)."""
    message = email.message.Message()
    message[name] = value or default
    params = message.get_params(header=name) or [(default, "")]
    main = params[0][0].strip().lower()
    return main, {key.lower(): str(email.utils.collapse_rfc2231_value(v)) for key, v in params[1:]}


def _multipart_file(body: bytes, boundary: str | None) -> bytes:
    """The uploaded file of a multipart/form-data body (RFC 7578): the field named ``file`` or ``image``, else the
    first part with a file name, else the only part."""
    if not boundary:
        raise RequestError("multipart/form-data without a boundary in its Content-Type")
    delimiter = b"\r\n--" + boundary.encode("latin-1", "replace")
    parts = (b"\r\n" + body).split(delimiter)
    fields: list[tuple[str | None, str | None, bytes]] = []
    closed = False
    for part in parts[1:]:
        if part.startswith(b"--"):
            closed = True
            break
        head, blank, content = part.partition(b"\r\n\r\n")
        if not blank:
            raise RequestError("malformed multipart/form-data: a part has no blank line after its headers")
        disposition = None
        for line in head.split(b"\r\n")[1:]:  # the first line is the rest of the boundary line
            key, colon, value = line.decode("utf-8", "replace").partition(":")
            if colon and key.strip().lower() == "content-disposition":
                disposition = value.strip()
        _, params = _header_params("content-disposition", disposition, "form-data")
        fields.append((params.get("name"), params.get("filename"), content))
    if not closed:
        raise RequestError("malformed multipart/form-data: no closing boundary (a cut-off body, or another boundary "
                           "than its Content-Type names)")
    for wanted in FILE_FIELDS:
        for name, _, content in fields:
            if name == wanted:
                return content
    with_name = [content for _, filename, content in fields if filename]
    if with_name:
        return with_name[0]
    if len(fields) == 1:
        return fields[0][2]
    names = ", ".join(str(name) for name, _, _ in fields) or "none"
    raise RequestError(f"multipart/form-data has no file field (fields: {names}); send -F file=@image.jpg")


def _json_image(body: bytes) -> bytes:
    """The image of a JSON body ``{"image": "<base64>"}``; the string may be a ``data:image/...;base64,`` URL,
    URL-safe base64, unpadded or wrapped over lines."""
    usage = 'send {"image": "<base64 of the encoded image>"}'
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RequestError(f"body is not valid JSON: {usage}") from None
    text = document.get("image") if isinstance(document, dict) else None
    if not isinstance(text, str):
        raise RequestError(f'JSON body has no "image" string: {usage}')
    if text.startswith("data:"):
        header, comma, text = text.partition(",")
        if not comma or not header.lower().endswith(";base64"):
            raise RequestError("a data: URL must hold base64 (data:image/jpeg;base64,...)")
    compact = "".join(text.split())
    urlsafe = "-" in compact or "_" in compact
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), altchars=b"-_" if urlsafe else None,
                                validate=True)
    except (binascii.Error, ValueError):
        raise RequestError('"image" is not valid base64') from None


def image_bytes(body: bytes, content_type: str | None) -> bytes:
    """The encoded image an upload carries, by its Content-Type: multipart/form-data (its file field), JSON
    (``{"image": "<base64>"}``; also recognised by a body that starts with ``{``, which no image does), else the
    raw body. Raises ``RequestError`` (400) with a one-line reason; decoding the image is the caller's next step.
    """
    kind, params = _header_params("content-type", content_type, "application/octet-stream")
    if kind == "multipart/form-data":
        return _multipart_file(body, params.get("boundary"))
    if kind == JSON_TYPE or kind.endswith("+json") or body[:64].lstrip()[:1] == b"{":
        return _json_image(body)
    return body


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@dataclass
class Metrics:
    """Request counts by route and status, request durations (a histogram, and the last ``RECENT_REQUESTS`` per
    route for quantiles) and model-call batch sizes: what ``GET /metrics`` renders.

    Counts add up: ``take()`` hands over what was counted since the last ``take()`` and ``add()`` merges such a
    delta, so the replicas' counts gather in one collector (``MetricsCollector``).
    """

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    duration_buckets: dict[str, list[int]] = field(default_factory=dict)
    duration_sum: Counter[str] = field(default_factory=Counter)
    recent: dict[str, deque[float]] = field(default_factory=dict)
    batch_sizes: Counter[int] = field(default_factory=Counter)
    replicas: set[str] = field(default_factory=set)

    def request(self, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its duration."""
        self.requests[route, str(status)] += 1
        buckets = self.duration_buckets.setdefault(route, [0] * (len(LATENCY_BUCKETS_S) + 1))
        buckets[next((i for i, edge in enumerate(LATENCY_BUCKETS_S) if seconds <= edge), len(LATENCY_BUCKETS_S))] += 1
        self.duration_sum[route] += seconds
        self.recent.setdefault(route, deque(maxlen=RECENT_REQUESTS)).append(seconds)

    def batch(self, size: int) -> None:
        """Count one model call of ``size`` requests."""
        self.batch_sizes[size] += 1

    def take(self) -> Metrics:
        """What was counted since the last ``take()``; this object starts again from zero."""
        taken = Metrics(self.requests, self.duration_buckets, self.duration_sum, self.recent, self.batch_sizes,
                        set(self.replicas))
        self.requests, self.duration_buckets, self.duration_sum = Counter(), {}, Counter()
        self.recent, self.batch_sizes = {}, Counter()
        return taken

    def add(self, other: Metrics) -> None:
        """Merge another replica's (or an earlier) delta into this one."""
        self.requests.update(other.requests)
        for route, buckets in other.duration_buckets.items():
            mine = self.duration_buckets.setdefault(route, [0] * len(buckets))
            self.duration_buckets[route] = [a + b for a, b in zip(mine, buckets, strict=True)]
        self.duration_sum.update(other.duration_sum)
        for route, values in other.recent.items():
            self.recent.setdefault(route, deque(maxlen=RECENT_REQUESTS)).extend(values)
        self.batch_sizes.update(other.batch_sizes)
        self.replicas |= other.replicas

    def render(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        lines: list[str] = []

        def family(name: str, kind: str, text: str) -> None:
            lines.extend([f"# HELP {name} {text}", f"# TYPE {name} {kind}"])

        family("resnet_edge_requests_total", "counter", "HTTP requests answered, by route and status code.")
        for (route, status), count in sorted(self.requests.items()):
            lines.append(f'resnet_edge_requests_total{{route="{_label(route)}",status="{status}"}} {count}')
        family("resnet_edge_errors_total", "counter", "Requests answered with a 4xx or 5xx status, by route and status.")
        for (route, status), count in sorted(self.requests.items()):
            if int(status) >= 400:
                lines.append(f'resnet_edge_errors_total{{route="{_label(route)}",status="{status}"}} {count}')
        name = "resnet_edge_request_duration_seconds"
        family(name, "histogram", "Time from a request's arrival at the replica to its answer.")
        for route, buckets in sorted(self.duration_buckets.items()):
            route_label, running = f'route="{_label(route)}"', 0
            for edge, count in zip((*map(repr, LATENCY_BUCKETS_S), "+Inf"), buckets, strict=True):
                running += count
                lines.append(f'{name}_bucket{{{route_label},le="{edge}"}} {running}')
            lines += [f"{name}_sum{{{route_label}}} {self.duration_sum[route]!r}",
                      f"{name}_count{{{route_label}}} {running}"]
        name = "resnet_edge_request_latency_seconds"
        family(name, "summary", f"Quantiles of the last {RECENT_REQUESTS} request durations per route (sum and count "
                                "over every request).")
        for route, values in sorted(self.recent.items()):
            route_label = f'route="{_label(route)}"'
            for quantile, value in zip(QUANTILES, np.quantile(np.asarray(values), QUANTILES), strict=True):
                lines.append(f'{name}{{{route_label},quantile="{quantile}"}} {float(value)!r}')
            lines += [f"{name}_sum{{{route_label}}} {self.duration_sum[route]!r}",
                      f"{name}_count{{{route_label}}} {sum(self.duration_buckets.get(route, []))}"]
        name = "resnet_edge_batch_size"
        family(name, "histogram", "Requests per model call (dynamic batching).")
        for edge in BATCH_BUCKETS:
            below = sum(count for size, count in self.batch_sizes.items() if size <= edge)
            lines.append(f'{name}_bucket{{le="{float(edge)!r}"}} {below}')
        calls = sum(self.batch_sizes.values())
        lines += [f'{name}_bucket{{le="+Inf"}} {calls}',
                  f"{name}_sum {sum(size * count for size, count in self.batch_sizes.items())}",
                  f"{name}_count {calls}"]
        family("resnet_edge_replicas", "gauge", "Model replicas whose counts are included.")
        lines.append(f"resnet_edge_replicas {len(self.replicas)}")
        return "\n".join(lines) + "\n"


class MetricsCollector:
    """A Serve deployment of one replica (no CPU reserved) that adds up every model replica's counts, so a
    scrape of ``/metrics`` sees the whole application, whichever replica answers it."""

    def __init__(self) -> None:
        self.metrics = Metrics()

    def add(self, delta: Metrics) -> None:
        self.metrics.add(delta)

    def render(self, delta: Metrics | None = None) -> str:
        if delta is not None:
            self.metrics.add(delta)
        return self.metrics.render()


class ModelReplica:
    """One Serve replica: one Predictor, one batch queue, the HTTP routes (``ROUTES``: path -> method, handler).

    Its counts go to ``collector`` (the ``MetricsCollector`` deployment's handle) every ``METRICS_FLUSH_S`` and
    before each ``/metrics`` answer; without one (a replica built outside Serve) ``/metrics`` shows its own.
    """

    ROUTES: Mapping[str, tuple[str, str]] = {"/predict": ("POST", "_predict"), "/embed": ("POST", "_embed"),
                                             "/features": ("POST", "_features"), "/health": ("GET", "_health"),
                                             "/metrics": ("GET", "_metrics")}
    TASK_ROUTES: Mapping[str, str] = {"classifier": "/predict", "embedding": "/embed", "features": "/features"}

    def __init__(self, options: ServeOptions, collector: Any = None) -> None:
        from ray import serve

        from ..predictor import load

        self.options = options
        self.predictor = load(options.artifact, device=options.device, threads=options.threads)
        self.size = self.predictor.input_spec.size
        self.policy = self.predictor.resize_policy
        self.metrics = Metrics(replicas={f"{socket.gethostname()}:{os.getpid()}:{id(self)}"})
        self.collector = collector
        self._flusher: asyncio.Task[None] | None = None

        @serve.batch(max_batch_size=options.max_batch, batch_wait_timeout_s=options.batch_wait_s)
        async def classify(items: list[tuple[np.ndarray, int]]) -> list[dict[str, Any]]:
            self.metrics.batch(len(items))
            return await asyncio.to_thread(self._classify, items)

        self.classify = classify

    def _classify(self, items: list[tuple[np.ndarray, int]]) -> list[dict[str, Any]]:
        """One model call for the batch, answered by the model's task: a classifier's top-k (each request its own
        cut of the largest asked for), an embedding's vector, a backbone's feature maps (shape and values)."""
        task = self.predictor.task
        if task == "embedding":
            vectors = self.predictor.embed(np.stack([image for image, _ in items]))
            return [{"source": SOURCE, "embedding": vector.tolist()} for vector in vectors]
        if task == "features":
            maps = self.predictor.features(np.stack([image for image, _ in items]))
            return [{"source": SOURCE, "features": {name: {"shape": list(values.shape[1:]),
                                                           "values": values[index].ravel().tolist()}
                                                    for name, values in maps.items()}}
                    for index in range(len(items))]
        widest = max(top_k for _, top_k in items)
        batch = np.stack([image for image, _ in items])
        predictions = self.predictor.classify(batch, widest, [SOURCE] * len(items))
        return [{"source": p.source, "labels": p.labels[:k], "indices": p.indices[:k], "scores": p.scores[:k]}
                for p, (_, k) in zip(predictions, items, strict=True)]

    async def __call__(self, request: Any) -> Any:
        started = time.perf_counter()
        path = request.url.path.rstrip("/") or "/"
        response = await self._answer(request, path)
        self.metrics.request(path if path in self.ROUTES else "other", response.status_code,
                             time.perf_counter() - started)
        if self.collector is not None and self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_every(METRICS_FLUSH_S))
        return response

    async def _answer(self, request: Any, path: str) -> Any:
        if path not in self.ROUTES:
            listed = ", ".join(f"{method} {route}" for route, (method, _) in self.ROUTES.items())
            return _error(404, f"no route {path}: {listed}")
        method, handler = self.ROUTES[path]
        if request.method != method and not (method == "GET" and request.method == "HEAD"):
            return _error(405, f"{path} takes {method}, not {request.method}", {"Allow": method})
        try:
            return await getattr(self, handler)(request)
        except RequestError as exc:  # refused before the model: 4xx with its one-line reason
            return _error(exc.status, str(exc))
        except Exception as exc:  # the replica answers 500 and keeps serving
            logger.exception("request to %s failed", path)
            return _error(500, f"{type(exc).__name__}: {first_line(exc)}")

    async def read_image(self, request: Any) -> np.ndarray:
        """The request's image decoded and fitted to the model's input, for any route that takes one: the body
        (size-capped) as raw bytes, multipart/form-data or base64 JSON (``image_bytes``), its pixels capped
        too; ``RequestError`` (400, 413) otherwise, before anything reaches the model."""
        body = await _read_body(request, self.options.max_body_bytes)
        content_type = request.headers.get("content-type")
        from ..preprocess import decode_image

        def decode() -> np.ndarray:
            data = image_bytes(body, content_type)
            try:
                return decode_image(data, self.size, self.policy, "uploaded image", self.options.max_pixels)
            except DataError as exc:
                raise RequestError(str(exc)) from None

        return await asyncio.to_thread(decode)

    async def _flush_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            await self._flush()

    async def _flush(self, render: bool = False) -> str | None:
        """Send the counts since the last flush to the collector (and, with ``render``, return its text); counts
        that could not be sent are kept for the next flush."""
        delta = self.metrics.take()
        if not render and not delta.requests and not delta.batch_sizes:
            return None
        try:
            if render:
                return await self.collector.render.remote(delta)
            await self.collector.add.remote(delta)
        except Exception as exc:
            self.metrics.add(delta)
            if render:
                raise
            logger.warning("metrics not sent to the collector: %s", first_line(exc))
        return None

    async def _metrics(self, request: Any) -> Any:
        from starlette.responses import Response

        text = self.metrics.render() if self.collector is None else await self._flush(render=True)
        return Response(text, media_type=METRICS_TYPE)

    async def _health(self, request: Any) -> Any:
        return _json({"status": "ok", "artifact": Path(self.options.artifact).name, "task": self.predictor.task,
                      "route": self.TASK_ROUTES[self.predictor.task],
                      "backend": self.predictor.backend.name, "device": self.predictor.device,
                      "input_size": list(self.size), "max_batch": self.options.max_batch})

    def _require(self, route: str) -> None:
        """A route of another task is a 400 that names the right one (an embedding is not 512 classes)."""
        task = self.predictor.task
        if self.TASK_ROUTES[task] != route:
            article = "an" if task[0] in "aeiou" else "a"
            raise RequestError(f"{Path(self.options.artifact).name} is {article} {task} model: "
                               f"POST {self.TASK_ROUTES[task]}")

    async def _predict(self, request: Any) -> Any:
        self._require("/predict")
        top_k = _top_k(request.query_params.get("top_k"), self.options.top_k)
        image = await self.read_image(request)
        prediction = await self.classify((image, top_k))
        return _json({"predictions": [prediction], "skipped": []})

    async def _embed(self, request: Any) -> Any:
        """``POST /embed``: the image's vector (an embedding model), ``{"embeddings": [{"source", "embedding"}]}``."""
        self._require("/embed")
        answer = await self.classify((await self.read_image(request), 1))
        return _json({"embeddings": [answer], "skipped": []})

    async def _features(self, request: Any) -> Any:
        """``POST /features``: the image's feature maps by name, each ``{"shape": [H, W, C], "values": [...]}``."""
        self._require("/features")
        answer = await self.classify((await self.read_image(request), 1))
        return _json({"features": [answer], "skipped": []})


def _top_k(text: str | None, default: int) -> int:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise RequestError(f"top_k must be an integer from 1 to {MAX_TOP_K}, not {text[:40]!r}") from None
    if not 1 <= value <= MAX_TOP_K:
        raise RequestError(f"top_k must be an integer from 1 to {MAX_TOP_K}, not {value}")
    return value


async def _read_body(request: Any, limit: int) -> bytes:
    """The body, refused by its declared length before any is read, and cut off once past ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise RequestError(f"bad Content-Length {declared[:40]!r}") from None
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
    collector = serve.deployment(
        MetricsCollector, name="MetricsCollector", num_replicas=1, ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=1000, logging_config={"enable_access_log": False, "log_level": "WARNING"},
    )
    return deployment.bind(options, collector.bind())


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
    on_message: Callable[[str], None] | None = None, on_up: Callable[[str], None] | None = None,
) -> str:
    """Serve ``artifact`` over HTTP on ``host:port`` and return its base URL once ``/health`` answers.

    Connects to Ray (``address``; None starts a local one on loopback), starts Serve's proxy on the address and
    deploys the app; :func:`stop` undoes it. A host other than loopback is reachable by anyone on the network.
    ``on_up`` is called with the URL the moment ``/health`` answers, still inside this call: from then on the
    server is up and only :func:`stop` takes it down (an interruption before it, this call undoes itself).
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
        _running.url = url
        if on_up is not None:
            on_up(url)
    except BaseException:
        with contextlib.suppress(Exception):
            stop()
        if owns_ray and "ray" in sys.modules:  # also after an interrupted ray.init, whose threads crash the exit
            sys.modules["ray"].shutdown()
        raise
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

    ``options`` are :func:`start`'s keywords; ``on_ready`` gets the base URL once it answers. A signal while
    starting interrupts the start (``KeyboardInterrupt``, what was started undone); from the moment ``/health``
    answers (inside :func:`start`) it means "stop", so a Ctrl-C then shuts down cleanly and returns.
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
        url = start(artifact, on_message=on_message, on_up=lambda _: started.set(), **options)
        for sig in handlers:  # ray.init replaces the SIGTERM handler
            signal.signal(sig, on_signal)
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


__all__ = ["MAX_BODY_BYTES", "MAX_PIXELS", "Metrics", "MetricsCollector", "ModelReplica", "RequestError",
           "ServeOptions", "build_app", "image_bytes", "is_loopback", "run_server", "start", "stop"]
