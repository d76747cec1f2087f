"""A bounded HTTP load client for ``resnet-edge serve``: N keep-alive clients POST one image until a request count
or a duration is reached, then one JSON line: requests, errors, seconds, requests_per_s, p50/p90/p99 latency (ms).

    python benchmarks/serve_load.py http://127.0.0.1:8000 image.png --clients 16 --requests 2000 --duration-s 20

Raw asyncio streams (HTTP/1.1, one connection per client) keep the client's own cost per request small, since on
a small machine it shares the cores with the server it measures. Only loopback targets unless ``--allow-remote``.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return status, bytes(body)
            body += chunk[:-2]
    return status, await reader.read()


async def _client(host: str, port: int, request: bytes, budget: list[int], deadline: float,
                  latencies: list[float], errors: list[str]) -> None:
    reader = writer = None
    while budget[0] > 0 and time.perf_counter() < deadline:
        budget[0] -= 1
        started = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            await writer.drain()
            status, _ = await asyncio.wait_for(_read_response(reader), timeout=30)
            if status != 200:
                errors.append(f"HTTP {status}")
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as exc:
            errors.append(type(exc).__name__)
            if writer is not None:
                writer.close()
            reader = writer = None
            continue
        latencies.append(time.perf_counter() - started)
    if writer is not None:
        writer.close()


async def run_load(url: str, body: bytes, clients: int, requests: int, duration_s: float,
                   path: str = "/predict") -> dict[str, float | int]:
    """``requests`` POSTs of ``body`` from ``clients`` concurrent connections, stopping at ``duration_s`` at the latest."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/octet-stream\r\n"
               f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n").encode() + body
    budget, latencies, errors = [requests], [], []
    started = time.perf_counter()
    deadline = started + duration_s
    await asyncio.gather(*(_client(host, port, request, budget, deadline, latencies, errors) for _ in range(clients)))
    seconds = time.perf_counter() - started
    ms = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return {"requests": len(latencies) + len(errors), "ok": len(latencies), "errors": len(errors),
            "first_error": errors[0] if errors else None, "clients": clients, "seconds": round(seconds, 3),
            "requests_per_s": round(len(latencies) / seconds, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p90_ms": round(float(np.percentile(ms, 90)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="base URL of the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("image", type=Path, help="image file sent as every request's body")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--duration-s", type=float, default=20.0, help="stop after this long even if requests remain")
    parser.add_argument("--warmup", type=int, default=50, help="requests sent first and not counted")
    parser.add_argument("--allow-remote", action="store_true", help="allow a host other than loopback")
    args = parser.parse_args(argv)
    host = urlsplit(args.url).hostname or ""
    if not args.allow_remote and not _is_loopback(host):
        parser.error(f"{host} is not loopback; pass --allow-remote to load another machine")
    if args.clients < 1 or args.requests < 1 or args.duration_s <= 0:
        parser.error("--clients and --requests must be at least 1, --duration-s above 0")
    body = args.image.read_bytes()
    if args.warmup:
        asyncio.run(run_load(args.url, body, min(args.clients, args.warmup), args.warmup, args.duration_s))
    result = asyncio.run(run_load(args.url, body, args.clients, args.requests, args.duration_s))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
