"""The serve command: an artifact behind HTTP on Ray Serve."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import ArtifactArgument, DeviceOption, RayOption, app, say, warn


@app.command()
def serve(
    model: ArtifactArgument,
    host: Annotated[str, typer.Option(help="Address to listen on. Anything but loopback exposes the model to the "
                                           "network with no authentication.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    replicas: Annotated[int, typer.Option(min=1, help="Model replicas; the cluster's CPUs are shared among them.")] = 1,
    max_batch: Annotated[int, typer.Option(min=1, help="Most requests one model call takes.")] = 16,
    batch_wait_ms: Annotated[float, typer.Option(min=0.0, help="How long a batch waits to fill.")] = 5.0,
    top_k: Annotated[int, typer.Option(min=1, help="Labels per answer (a request may ask ?top_k=N).")] = 5,
    device: DeviceOption = "auto",
    max_body_mb: Annotated[float, typer.Option(min=0.001, help="Largest request body; bigger ones get 413.")] = 10.0,
    ray: RayOption = None,
) -> None:
    """Serve a model over HTTP on Ray Serve: POST /predict (image bytes) gives top-k JSON, GET /health; Ctrl-C stops."""
    from ..scale.serve import run_server

    def ready(url: str) -> None:
        say(f"serving {Path(model).name} at {url} (max batch {max_batch}, wait {batch_wait_ms:g} ms, {replicas} "
            "replica(s)); Ctrl-C stops")
        say(f"  curl --data-binary @image.jpg {url}/predict")

    def message(text: str) -> None:
        if text.startswith("warning: "):
            warn(text.removeprefix("warning: "))
        else:
            say(text)

    run_server(model, host=host, port=port, replicas=replicas, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
               top_k=top_k, device=device, max_body_bytes=int(max_body_mb * 2**20), address=ray,
               on_ready=ready, on_message=message)
    say("stopped")
