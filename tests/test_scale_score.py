"""Batch scoring on Ray: the same answers as the in-process Predictor, resumable, exactly once under worker loss."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from resnet_edge.errors import DataError, DeviceError, InvalidArgumentError
from resnet_edge.scale.cluster import plan_workers
from resnet_edge.scale.sources import image_paths

IMAGES = 256


@pytest.fixture(scope="module")
def image_folder(digit_folder) -> Path:
    """256 digits as PNG files in class folders, plus one file that is not an image."""
    return digit_folder("score_images", IMAGES, "broken.png")


@pytest.fixture(scope="module")
def in_process(artifacts, image_folder):
    from resnet_edge.predictor import load

    with load(artifacts["tflite-int8"]) as predictor:
        run = predictor.predict(image_folder, top_k=3)
    return {p.source: p for p in run.predictions}, run.skipped


def read_rows(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(out).sort_by("row").to_pylist()


def kill_one_actor() -> bool:
    """SIGKILL one scoring actor's process, as a node failure would."""
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().decode(errors="ignore")
        except OSError:
            continue
        if "MapBatches(ScoreActor)" in command:
            os.kill(int(proc.name), signal.SIGKILL)
            return True
    return False


def test_scores_match_in_process_and_resume_adds_nothing(ray_local, artifacts, image_folder, in_process, tmp_path):
    from resnet_edge.scale.score import score

    expected, skipped = in_process
    out = tmp_path / "scores"
    summary = score(artifacts["tflite-int8"], image_folder, out, top_k=3, shard_size=64, batch_size=32, task_rows=32)
    assert (summary.scored, summary.unreadable, summary.shards, summary.shards_written) == (IMAGES, 1, 5, 5)
    assert "broken.png" in summary.first_unreadable and "cannot decode" in summary.first_unreadable
    rows = read_rows(out)
    assert [r["row"] for r in rows] == list(range(IMAGES + 1))
    for row in rows:
        if row["error"] is not None:
            assert row["path"] in skipped and row["labels"] == []
            continue
        mine = expected[row["path"]]
        assert (row["labels"], row["indices"]) == (mine.labels, mine.indices)
        np.testing.assert_allclose(row["scores"], mine.scores, atol=1e-6)

    (out / "part-00002.parquet").unlink()
    resumed = score(artifacts["tflite-int8"], image_folder, out, top_k=3, shard_size=64, batch_size=32, task_rows=32)
    assert (resumed.shards_skipped, resumed.shards_written, resumed.processed) == (4, 1, 64)
    assert read_rows(out) == rows


def test_a_killed_worker_loses_and_duplicates_no_row(ray_local, artifacts, image_folder, tmp_path):
    from resnet_edge.scale.score import score

    killed = []

    def kill_after_first_shard(message: str) -> None:
        if not killed:
            killed.append(kill_one_actor())

    out = tmp_path / "scores"
    summary = score(artifacts["tflite-int8"], image_folder, out, top_k=1, shard_size=16, batch_size=8, task_rows=8,
                    progress=kill_after_first_shard)
    assert killed == [True]
    assert summary.scored + summary.unreadable == IMAGES + 1
    assert [r["row"] for r in read_rows(out)] == list(range(IMAGES + 1))


def test_another_run_into_the_same_folder_is_refused(artifacts, image_folder, tmp_path):
    from resnet_edge.scale.score import MANIFEST, score

    out = tmp_path / "scores"
    out.mkdir()
    (out / MANIFEST).write_text(json.dumps({"schema": 1, "artifact": "other.tflite"}))
    with pytest.raises(InvalidArgumentError, match="holds results of another run"):
        score(artifacts["tflite-int8"], image_folder, out)


@pytest.mark.parametrize("kwargs", [{"top_k": 0}, {"shard_size": 0}, {"batch_size": 0}, {"task_rows": 0}])
def test_bad_arguments_are_one_line_errors(artifacts, image_folder, tmp_path, kwargs):
    from resnet_edge.scale.score import score

    with pytest.raises(InvalidArgumentError):
        score(artifacts["tflite-int8"], image_folder, tmp_path / "scores", **kwargs)


def test_sources_folders_globs_and_path_tables(image_folder, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from_folder = image_paths(image_folder)
    assert len(from_folder) == IMAGES + 1 and from_folder == sorted(from_folder)
    assert image_paths(str(image_folder / "3" / "*.png")) == [p for p in from_folder if "/3/" in p]
    relative = [os.path.relpath(p, tmp_path) for p in from_folder[:5]] + ["missing.png"]
    (tmp_path / "list.csv").write_text("path,label\n" + "".join(f"{p},x\n" for p in relative))
    pq.write_table(pa.table({"path": relative}), tmp_path / "list.parquet")
    for table in ("list.csv", "list.parquet"):
        listed = image_paths(tmp_path / table)
        assert listed[:5] == from_folder[:5] and listed[5] == str(tmp_path / "missing.png")
    (tmp_path / "two.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="no 'path' column"):
        image_paths(tmp_path / "two.csv")
    with pytest.raises(DataError, match="no image file matches"):
        image_paths(str(tmp_path / "nothing" / "*.png"))


@pytest.mark.parametrize(
    ("artifact", "resources", "device", "expected"),
    [
        ("m.tflite", {"CPU": 2.0}, "auto", (2, 0, 1, "cpu")),
        ("m.onnx", {"CPU": 16.0, "GPU": 2.0}, "auto", (2, 1, 1, "auto")),
        ("m.onnx", {"CPU": 16.0, "GPU": 2.0}, "cuda", (2, 1, 1, "cuda")),
        ("m.tflite", {"CPU": 16.0, "GPU": 2.0}, "auto", (16, 0, 1, "cpu")),
        ("m.onnx", {"CPU": 16.0, "GPU": 2.0}, "cpu", (16, 0, 1, "cpu")),
    ],
)
def test_workers_follow_the_cluster(artifact, resources, device, expected):
    plan = plan_workers(artifact, device, resources=resources)
    assert (plan.actors, plan.num_gpus, plan.threads, plan.device) == expected


def test_a_gpu_device_without_a_gpu_is_refused():
    with pytest.raises(DeviceError, match="needs a GPU"):
        plan_workers("m.onnx", "cuda", resources={"CPU": 2.0})


def test_predict_does_not_import_ray(artifacts, image_folder):
    script = ("import sys\nfrom resnet_edge.cli import main\n"
              f"try:\n    main(['predict', {str(artifacts['tflite-int8'])!r}, {str(image_folder / '0')!r}, '--json'])\n"
              "except SystemExit as exit:\n    assert exit.code == 0, exit.code\n"
              "sys.stderr.write('RAY' if 'ray' in sys.modules else 'NO-RAY')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.stderr.endswith("NO-RAY"), result.stderr[-500:]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ray", "127.0.0.1:1"], "cannot reach Ray at 127.0.0.1:1"),
        (["--out", "scores"], "scores: a classifier model's answers go to .parquet, .csv, .jsonl, .npz"),
        (["--out", "scores/"], "a classifier's answers go to a .parquet, .csv, .jsonl or .npz file, not a folder"),
        (["--ray", "--csv"], "--csv cannot be combined with --ray"),
        (["--threads", "2", "--ray"], "--threads cannot be combined with --ray"),
    ],
)
def test_bad_ray_arguments_are_one_line_errors(artifacts, image_folder, tmp_path, extra, message):
    result = subprocess.run([sys.executable, "-m", "resnet_edge.cli", "predict", str(artifacts["tflite-int8"]),
                             str(image_folder), *extra], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert list(tmp_path.iterdir()) == []  # no half-made output folder


def test_a_path_after_ray_is_not_taken_for_an_address(image_folder):
    from resnet_edge.scale.cluster import connect

    with pytest.raises(InvalidArgumentError, match="write --ray=ADDRESS"):
        connect(str(image_folder))


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["predict", "m", "x", "--ray"], ["predict", "m", "x", "--ray=local"]),
        (["predict", "m", "x", "--ray", "--json"], ["predict", "m", "x", "--ray=local", "--json"]),
        (["predict", "m", "x", "--ray", "auto"], ["predict", "m", "x", "--ray", "auto"]),
    ],
)
def test_ray_takes_an_optional_address(argv, expected):
    from resnet_edge.cli import fill_optional_values

    assert fill_optional_values(argv) == expected


# A broken model: one line, no Ray traceback, no output folder; a rerun with the right model then works ---------------

def tiny_onnx(path: Path, size: int = 8) -> Path:
    """An NHWC classifier of 3 'classes' (mean colour through a softmax): loads and scores in milliseconds."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x", "axes"], ["mean"], keepdims=0), helper.make_node("Softmax", ["mean"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", size, size, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path.write_bytes(model.SerializeToString())
    return path


def test_a_broken_model_fails_in_the_driver_before_ray_starts(image_folder, tmp_path):
    from resnet_edge.errors import ModelFileError
    from resnet_edge.scale.score import score

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(tiny_onnx(tmp_path / "good.onnx").read_bytes()[:40])
    with pytest.raises(ModelFileError, match="onnxruntime cannot load it") as info:
        score(broken, image_folder, tmp_path / "scores", address="127.0.0.1:1")  # an address nothing listens at
    assert "\n" not in str(info.value) and not (tmp_path / "scores").exists()


def test_an_actor_dying_in_its_constructor_is_one_line_and_leaves_no_folder(ray_local, image_folder, tmp_path,
                                                                             monkeypatch, capfd):
    from resnet_edge.errors import ModelFileError
    from resnet_edge.scale import score as score_module

    monkeypatch.setattr(score_module, "check_loads", lambda *args, **kwargs: None)  # let the workers find out
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08garbage" * 10)
    out = tmp_path / "scores"
    with pytest.raises(ModelFileError, match="onnxruntime cannot load it") as info:
        score_module.score(broken, image_folder, out)
    assert "\n" not in str(info.value) and not out.exists()
    assert "Full stack trace" not in capfd.readouterr().err  # Ray Data's report of its own internals is quiet
    summary = score_module.score(tiny_onnx(tmp_path / "good.onnx"), image_folder, out)  # the rerun is not refused
    assert summary.scored == IMAGES and summary.unreadable == 1 and (out / score_module.MANIFEST).is_file()


def test_worker_errors_are_rebuilt_from_what_ray_delivers():
    pytest.importorskip("ray")
    from ray.exceptions import ActorDiedError, RayTaskError

    from resnet_edge.errors import ModelFileError
    from resnet_edge.scale.cluster import worker_error

    def died(traceback_text: str, cause: BaseException) -> ActorDiedError:
        task = RayTaskError("__init__", traceback_text, cause, proctitle="ray::ScoreActor", pid=1, ip="127.0.0.1")
        return ActorDiedError(task)

    ours = died('Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n'
                "resnet_edge.errors.ModelFileError: m.onnx: onnxruntime cannot load it (bad)", ModelFileError("x"))
    chained = RuntimeError("wrapped")
    chained.__cause__ = ours
    for raised in (ours, chained):
        found = worker_error(raised)
        assert type(found) is ModelFileError and str(found) == "m.onnx: onnxruntime cannot load it (bad)"
    foreign = worker_error(died("Traceback:\nModuleNotFoundError: No module named 'onnxruntime'", ImportError()))
    assert isinstance(foreign, DeviceError) and "ModuleNotFoundError: No module named 'onnxruntime'" in str(foreign)
    task = RayTaskError("__call__", "Traceback: ...", DataError("a.png: bad"), proctitle="ray::x", pid=1, ip="1.2.3.4")
    assert str(worker_error(task)) == "a.png: bad"
    assert worker_error(ValueError("not from a worker")) is None


def test_a_run_that_starts_its_own_ray_says_only_what_the_user_needs(artifacts, image_folder, tmp_path):
    """Ray's token-authentication notice (said once in the README) and its progress output stay off the terminal;
    what remains is our progress and summary, and the one native line the README explains."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run([sys.executable, "-m", "resnet_edge.cli", "predict", str(artifacts["onnx"]),
                             str(image_folder), "--ray", "--out", str(tmp_path / "scores")], capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Token authentication" not in result.stderr and "Traceback" not in result.stderr
    unexplained = [line for line in result.stderr.splitlines()
                   if not line.startswith(("1/1 shards written", "warning: 1 unreadable image(s)"))
                   and "core_worker.cc" not in line]  # broken.png is unreadable on purpose
    assert unexplained == [], result.stderr
    assert result.stdout.startswith("scored ")
