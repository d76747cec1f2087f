"""Dynamic batching against none: the same server with ``--max-batch 16`` and with ``--max-batch 1``, each loaded by
``serve_load.py`` (a separate process, so the client's event loop does not share the driver's) from 16 clients.

    python benchmarks/serve_bench.py ARTIFACT IMAGE [--clients 16 --requests 2000 --duration-s 20]

Prints one JSON line (the last line of stdout): both runs (requests/s, p50/p90/p99 ms) and the throughput ratio batched / unbatched.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

LOAD_CLIENT = Path(__file__).with_name("serve_load.py")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _load(url: str, image_file: str | os.PathLike[str], clients: int, requests: int, duration_s: float) -> dict[str, Any]:
    command = [sys.executable, str(LOAD_CLIENT), url, str(image_file), "--clients", str(clients),
               "--requests", str(requests), "--duration-s", str(duration_s)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration_s * 2 + 120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_serve(
    artifact: str | os.PathLike[str], image_file: str | os.PathLike[str], *, clients: int = 16, requests: int = 2000,
    duration_s: float = 20.0, port: int | None = None, replicas: int = 1, batch_wait_ms: float = 5.0,
    batch_sizes: tuple[int, int] = (16, 1), address: str | None = None,
) -> dict[str, Any]:
    """Serve ``artifact`` with each of ``batch_sizes`` in turn (all else equal), load it, and compare throughput."""
    from resnet_edge.scale.cluster import import_ray, session
    from resnet_edge.scale.serve import start, stop

    runs: dict[str, Any] = {}
    with session(address):
        resources = import_ray().cluster_resources()
        for max_batch in batch_sizes:
            url = start(artifact, port=port or _free_port(), replicas=replicas, max_batch=max_batch,
                        batch_wait_ms=batch_wait_ms, address=address)
            try:
                runs[f"max_batch_{max_batch}"] = _load(url, image_file, clients, requests, duration_s)
            finally:
                stop()
    batched, single = (runs[f"max_batch_{b}"] for b in batch_sizes)
    return {"artifact": Path(artifact).name, "cpus": resources.get("CPU"), "replicas": replicas,
            "batch_wait_ms": batch_wait_ms, **runs,
            "throughput_ratio": round(batched["requests_per_s"] / max(single["requests_per_s"], 1e-9), 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact")
    parser.add_argument("image")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    args = parser.parse_args(argv)
    result = bench_serve(args.artifact, args.image, clients=args.clients, requests=args.requests,
                         duration_s=args.duration_s, replicas=args.replicas, batch_wait_ms=args.batch_wait_ms)
    sys.stdout.write(json.dumps(result) + "\n")  # one line, last: Ray prints its own notices to stdout too


if __name__ == "__main__":
    main()
