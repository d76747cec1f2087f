"""`make bench-scale`: batch scoring on Ray against in-process predict, 1 and 2 workers, and Ray Serve's dynamic
batching against --max-batch 1 under 16 concurrent clients.

ResNet-18 on digits, tflite-int8, 5,000 PNG files. Ray is started once, on loopback, before anything is timed (a
cluster outlives a job); each scoring run includes starting its actors and loading the model in them. Writes
``<out>/scale/scale.json`` and ``scale.md``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench_models import FULL, QUICK, digits_model, say

from resnet_edge.atomic import atomic_path
from resnet_edge.report import machine_description

FORMAT = "tflite-int8"
TARGET_BATCH = 0.8
TARGET_SERVE = 1.5


def artifact_and_images(out: Path, count: int, quick: bool) -> tuple[Path, Path]:
    """The int8 digits model and ``count`` PNG files of digits (reused when present)."""
    from PIL import Image

    from resnet_edge.calibration import CalibrationSet
    from resnet_edge.data import load_digits
    from resnet_edge.exporter import export

    folder = out / "scale"
    artifact = folder / "resnet18_digits_int8.tflite"
    if not artifact.exists():
        model = digits_model(out, QUICK if quick else FULL, quick)
        say(f"exporting {model.name} to {FORMAT}")
        export(model, FORMAT, artifact, calibration=CalibrationSet.from_source("digits", (32, 32), 300), verify=True)
    images = folder / f"digits_{count}"
    if not images.exists() or len(list(images.iterdir())) != count:
        shutil.rmtree(images, ignore_errors=True)
        images.mkdir(parents=True)
        digits = load_digits((32, 32))
        for index in range(count):
            Image.fromarray(digits.images[index % len(digits)]).save(images / f"{index:05d}.png")
    return artifact, images


def in_process(artifact: Path, images: Path | list[str], repeats: int) -> dict[str, Any]:
    """``predict`` in this process on every usable core: the model loaded once, then every image."""
    from resnet_edge.predictor import load

    rates = []
    with load(artifact) as predictor:
        for _ in range(repeats):
            started = time.perf_counter()
            run = predictor.predict(images, top_k=5, batch_size=64)
            rates.append(len(run.predictions) / (time.perf_counter() - started))
    return {"images_per_s": statistics.median(rates), "runs": rates}


def on_ray(artifact: Path, images: Path | list[str], workers: int, repeats: int, scratch: Path) -> dict[str, Any]:
    """``scale.score`` with ``workers`` actors, end to end: starting the actors and loading the model included."""
    from resnet_edge.scale.score import score

    rates = []
    for _ in range(repeats):
        shutil.rmtree(scratch, ignore_errors=True)
        rates.append(score(artifact, images, scratch, top_k=5, workers=workers, batch_size=64).images_per_s)
    shutil.rmtree(scratch, ignore_errors=True)
    return {"workers": workers, "images_per_s": statistics.median(rates), "runs": rates}


class Passthrough:
    """A Ray Data actor that does nothing: what a job costs before any model runs."""

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return batch


def ray_data_floor(rows: int, repeats: int) -> float:
    """Seconds for an empty Ray Data job of ``rows`` rows on a 2-actor pool, as ``score`` runs one."""
    from resnet_edge.scale.cluster import import_ray, quiet_data
    from resnet_edge.scale.score import TASK_ROWS

    ray = import_ray()
    quiet_data(ray)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        dataset = ray.data.from_items([{"row": i} for i in range(rows)], override_num_blocks=-(-rows // TASK_ROWS))
        passed = dataset.map_batches(Passthrough, batch_size=TASK_ROWS, num_cpus=1,
                                     compute=ray.data.ActorPoolStrategy(size=2))
        sum(len(block["row"]) for block in passed.iter_batches(batch_size=None))
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def batch_scoring(artifact: Path, images: Path, repeats: int, scratch: Path, long_images: int) -> dict[str, Any]:
    """5,000 images in-process and on 1 and 2 workers; then ``long_images`` (the same files over again) in-process
    and on 2 workers, to show the fixed cost of starting a Ray Data job spread over a longer one."""
    local = in_process(artifact, images, repeats)
    say(f"in-process predict: {local['images_per_s']:.0f} images/s")
    ray = {}
    for workers in (1, 2):
        ray[workers] = on_ray(artifact, images, workers, repeats, scratch)
        say(f"Ray, {workers} worker(s): {ray[workers]['images_per_s']:.0f} images/s end to end")
    two = ray[2]
    files = sorted(str(p) for p in images.iterdir())
    longer = (files * (long_images // len(files) + 1))[:long_images]
    long_local = in_process(artifact, longer, 1)
    long_one, long_ray = on_ray(artifact, longer, 1, 1, scratch), on_ray(artifact, longer, 2, 1, scratch)
    say(f"{long_images} images: in-process {long_local['images_per_s']:.0f}/s, Ray 1 worker "
        f"{long_one['images_per_s']:.0f}/s, 2 workers {long_ray['images_per_s']:.0f}/s end to end")
    floor = ray_data_floor(len(files), repeats)
    say(f"an empty Ray Data job of {len(files)} rows on 2 actors: {floor:.2f} s")
    return {"images": len(files), "in_process": local, "ray_1": ray[1], "ray_2": two, "empty_job_s": floor,
            "ratio_end_to_end": two["images_per_s"] / local["images_per_s"],
            "scaling_1_to_2": two["images_per_s"] / ray[1]["images_per_s"],
            "long": {"images": long_images, "in_process": long_local, "ray_1": long_one, "ray_2": long_ray,
                     "ratio_end_to_end": long_ray["images_per_s"] / long_local["images_per_s"],
                     "scaling_1_to_2": long_ray["images_per_s"] / long_one["images_per_s"]}}


def serving(artifact: Path, images: Path, out: Path, requests: int) -> dict[str, Any]:
    """Batched against unbatched serving of the digits model, and of ResNet-50 @224 when ``make bench`` made it."""
    import sklearn
    from serve_bench import bench_serve

    photo = Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg"
    cases = {"resnet18_digits_int8": (artifact, next(images.iterdir()))}
    resnet50 = out / "artifacts" / "resnet50_224" / "resnet50_224_photos_int8.tflite"
    if resnet50.exists():
        cases["resnet50_224_int8"] = (resnet50, photo)
    results = {}
    for name, (model, image) in cases.items():
        say(f"serving {model.name}: max batch 16, then 1, 16 clients, {requests} requests each")
        results[name] = bench_serve(model, image, clients=16, requests=requests)
        say(f"{name}: {results[name]['throughput_ratio']:.2f}x the requests/s of max batch 1")
    return results


def markdown(result: dict[str, Any]) -> str:
    machine, scoring, serve = result["machine"], result["batch"], result.get("serve")
    lines = [f"# Scale-out on Ray ({machine['cpu']}, {machine['usable_cores']} usable cores)", "",
             f"`{result['command']}`", "",
             f"## Batch scoring: ResNet-18 digits {FORMAT}, {scoring['images']} PNG files, local Ray (2 CPUs, loopback)",
             "", "| | images/s | vs in-process |", "|---|---:|---:|",
             f"| in-process `predict` (every core) | {scoring['in_process']['images_per_s']:.0f} | 1.00× |"]
    for key in ("ray_1", "ray_2"):
        row = scoring[key]
        lines.append(f"| Ray, {row['workers']} worker(s) | {row['images_per_s']:.0f} "
                     f"| {row['images_per_s'] / scoring['in_process']['images_per_s']:.2f}× |")
    long = scoring["long"]
    lines += ["", f"Target ≥ {TARGET_BATCH}× in-process with 2 workers: {scoring['ratio_end_to_end']:.2f}×. "
                  f"Scaling 1 → 2 workers: {scoring['scaling_1_to_2']:.2f}×. Ray's figures are end to end: starting "
                  "the job's actors and loading the model in them included (Ray itself was started before). "
                  f"An empty Ray Data job of the same {scoring['images']} rows on 2 actors takes "
                  f"{scoring['empty_job_s']:.2f} s here, while in-process `predict` scores them all in "
                  f"{scoring['images'] / scoring['in_process']['images_per_s']:.2f} s. Over a "
                  f"longer job that start is spread thinner: {long['images']} images (the same files again) ran at "
                  f"{long['in_process']['images_per_s']:.0f}/s in-process, {long['ray_1']['images_per_s']:.0f}/s on "
                  f"1 worker and {long['ray_2']['images_per_s']:.0f}/s on 2 workers: {long['ratio_end_to_end']:.2f}× "
                  f"in-process, and {long['scaling_1_to_2']:.2f}× from 1 to 2 workers."]
    for name, run in (serve or {}).items():
        lines += ["", f"## Serving {name} ({run['artifact']}): Ray Serve, 1 replica, 16 concurrent clients on 127.0.0.1",
                  "", "| max batch | requests/s | p50 ms | p90 ms | p99 ms | errors |", "|---:|---:|---:|---:|---:|---:|"]
        for batch in (16, 1):
            row = run[f"max_batch_{batch}"]
            lines.append(f"| {batch} | {row['requests_per_s']:.0f} | {row['p50_ms']:.1f} | {row['p90_ms']:.1f} | "
                         f"{row['p99_ms']:.1f} | {row['errors']} |")
        lines += ["", f"Target ≥ {TARGET_SERVE}× the requests/s of max batch 1: {run['throughput_ratio']:.2f}×."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--long-images", type=int, default=50000, help="Images of the longer job (files repeated).")
    parser.add_argument("--requests", type=int, default=3000, help="Requests per serving configuration.")
    parser.add_argument("--quick", action="store_true", help="Fewer images and requests: a smoke run.")
    args = parser.parse_args()
    if args.quick:
        args.images, args.repeats, args.requests, args.long_images = 1000, 1, 500, 5000
    from resnet_edge.scale.cluster import session

    artifact, images = artifact_and_images(args.out, args.images, args.quick)
    result: dict[str, Any] = {"machine": machine_description(),
                              "command": "python benchmarks/scale.py " + shlex.join(sys.argv[1:])}
    with session(num_cpus=2):
        result["batch"] = batch_scoring(artifact, images, args.repeats, args.out / "scale" / "scores", args.long_images)
    result["serve"] = serving(artifact, images, args.out, args.requests)
    folder = args.out / "scale"
    with atomic_path(folder / "scale.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    with atomic_path(folder / "scale.md") as tmp:
        tmp.write_text(markdown(result), encoding="utf-8")
    sys.stdout.write(markdown(result))


if __name__ == "__main__":
    main()
