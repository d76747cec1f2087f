"""ResNet as a feature extractor: backbones (named c-levels) and embeddings through build, export to every CPU
format, parity (per level, and what an image search sees), predict and its files, Ray."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from resnet_edge.registry import FORMATS, cpu_formats

SIZE = (64, 64)
# a backbone goes to every CPU format (the multi-output case every runtime must get right: order, names, levels); an
# embedding to one file of each precision and quantizer family (its one flat output is the classifier's case)
EMBEDDING_FORMATS = ("onnx", "onnx-int8", "tflite-fp16", "tflite-int8", "openvino-int8")
FORMATS_OF = {"features": cpu_formats(), "embedding": [f for f in cpu_formats() if f in EMBEDDING_FORMATS]}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "resnet_edge.cli", *args], capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A c3-c5 backbone and an L2-normalised 512-d embedding, resnet18 at 64x64, built by the CLI."""
    folder = tmp_path_factory.mktemp("feature_models")
    backbone, embedding = folder / "backbone.keras", folder / "embedding.keras"
    for path, extra in ((backbone, ["--features", "c3,c4,c5"]), (embedding, ["--pooling", "avg", "--normalize"])):
        built = cli("build", "resnet18", "--input-size", "64", *extra, "--out", str(path), "--json")
        assert built.returncode == 0, built.stderr
    return {"features": backbone, "embedding": embedding}


@pytest.fixture(scope="module")
def exported(models, tmp_path_factory):
    """Every CPU format of both models, calibrated on photo crops (checked by the tests, not at export)."""
    from resnet_edge.exporter import export_formats

    folder = tmp_path_factory.mktemp("feature_artifacts")
    results = {}
    for kind, path in models.items():
        for result in export_formats(path, FORMATS_OF[kind], folder / kind, calib_data="photos", calib_count=64,
                                     verify=False):
            results[(kind, result.format)] = result
    return results


def test_build_makes_backbones_and_embeddings(models) -> None:
    from resnet_edge.artifact import read_metadata

    backbone, embedding = read_metadata(models["features"]), read_metadata(models["embedding"])
    assert backbone.task == "features" and not backbone.labels
    assert [(o.name, o.shape, o.stride) for o in backbone.outputs] == [
        ("c3", (8, 8, 128), 8), ("c4", (4, 4, 256), 16), ("c5", (2, 2, 512), 32)]
    assert embedding.task == "embedding" and embedding.normalized and not embedding.labels
    assert [(o.name, o.shape) for o in embedding.outputs] == [("embedding", (512,))]


@pytest.mark.parametrize(("args", "message"), [
    (["--features", "c3,c9"], "feature levels must be among"),
    (["--features", "c3,c3"], "feature levels repeat"),
    (["--features", "c3", "--pooling", "avg"], "no classifier head and no pooling"),
    (["--normalize"], "L2 normalisation applies to an embedding"),
    (["--pooling", "mean"], "pooling must be one of"),
    (["--pooling", "avg", "--labels", "labels.txt"], "a backbone or an embedding has none"),
])
def test_bad_build_requests_are_one_line(args, message, tmp_path) -> None:
    (tmp_path / "labels.txt").write_text("a\nb\n")
    result = subprocess.run([sys.executable, "-m", "resnet_edge.cli", "build", "resnet18", "--input-size", "64",
                             *args, "--out", str(tmp_path / "m.keras")], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "m.keras").exists()


def test_a_classifier_s_weights_go_into_a_backbone(tmp_path) -> None:
    """train a classifier, then build --weights it.keras --features ...: the backbone computes what the classifier's
    layers compute."""
    import keras

    from resnet_edge.models import build_resnet
    from resnet_edge.models.io import describe, save_model

    keras.utils.set_random_seed(1)
    classifier = build_resnet("resnet18", (64, 64, 3), num_classes=3)
    save_model(classifier, tmp_path / "c.keras", describe(classifier))
    result = cli("build", "resnet18", "--input-size", "64", "--features", "c5", "--weights", str(tmp_path / "c.keras"),
                 "--out", str(tmp_path / "b.keras"))
    assert result.returncode == 0, result.stderr
    from resnet_edge.models.io import load_model

    backbone = load_model(tmp_path / "b.keras")[0]
    for name in ("conv1_conv", "conv5_block2_2_conv"):
        for mine, theirs in zip(backbone.get_layer(name).get_weights(), classifier.get_layer(name).get_weights(),
                                strict=True):
            assert np.array_equal(mine, theirs)


def test_a_model_built_elsewhere_gets_its_task_from_its_outputs() -> None:
    import keras

    from resnet_edge.models.io import describe

    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3)(inputs))
    assert describe(keras.Model(inputs, pooled)).task == "embedding"
    assert describe(keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(pooled))).task == "classifier"
    logits = keras.Model(inputs, keras.layers.Dense(4)(pooled))
    assert describe(logits).task == "embedding"  # no softmax, no labels: say --task classifier (or give --labels)
    assert describe(logits, task="classifier").labels == ("0", "1", "2", "3")
    assert describe(logits, labels=["a", "b", "c", "d"]).task == "classifier"


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "fmt"), [(kind, fmt) for kind, formats in FORMATS_OF.items() for fmt in formats])
def test_every_cpu_format_keeps_every_output_in_order(kind, fmt, exported, models) -> None:
    """TFLite reorders a backbone's outputs (c4, c3, c5); every artifact returns them as built, each level checked
    against Keras by name with the precision's tolerance."""
    from resnet_edge.parity import check_artifacts

    results = exported
    artifact = results[(kind, fmt)].path
    (report,) = check_artifacts(models[kind], [artifact], "photos", count=120)
    assert report.passed, report.line()
    assert report.task == kind and report.compared == ("feature maps" if kind == "features" else "embeddings")
    names = ["c3", "c4", "c5"] if kind == "features" else ["embedding"]
    assert [level["name"] for level in report.levels] == names
    floor = report.tolerance.min_map_cosine
    assert all(level["cosine"] >= floor for level in report.levels)
    if kind == "embedding":
        assert report.recall_at_1 >= report.tolerance.min_recall1 and report.recall_at_5 is not None
        assert "recall@1" in report.line()
    else:
        assert f"(worst {report.worst_level})" in report.line()


@pytest.mark.slow
def test_the_predictor_gives_maps_and_vectors_of_any_frame(exported) -> None:
    from resnet_edge.errors import InvalidArgumentError
    from resnet_edge.predictor import load

    results = exported
    frame = np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    with load(results[("features", "tflite")].path) as backbone:
        maps = backbone.features([frame, frame[:500, :700]], color="bgr")
        assert list(maps) == ["c3", "c4", "c5"] and maps["c4"].shape == (2, 4, 4, 256)
        with pytest.raises(InvalidArgumentError, match="is a features model, not a classifier"):
            backbone.predict(frame)
    with load(results[("embedding", "onnx")].path) as embedder:
        vectors = embedder.embed([frame, frame])
        assert vectors.shape == (2, 512) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
        with pytest.raises(InvalidArgumentError, match="is an embedding model, not a classifier"):
            embedder.classify(embedder.prepare(frame))


def test_retrieval_agreement_counts_ties_within_the_margin() -> None:
    from resnet_edge.parity import retrieval_agreement

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(60, 16))
    assert retrieval_agreement(vectors, vectors, 0.0) == (1.0, 1.0, 1.0)
    recall1, recall5, exact = retrieval_agreement(vectors, rng.normal(size=(60, 16)), 1e-3)
    assert recall1 < 0.3 and recall5 < 0.4 and exact < 0.3  # an artifact that lost the geometry fails
    noisy = vectors + rng.normal(scale=1e-6, size=vectors.shape)
    assert retrieval_agreement(vectors, noisy, 1e-3)[:2] == (1.0, 1.0)


def test_a_broken_embedding_fails_parity_by_its_neighbours() -> None:
    from resnet_edge.parity import reduce_stats, row_stats

    rng = np.random.default_rng(1)
    reference = np.abs(rng.normal(size=(80, 32))).astype(np.float32)
    shuffled = reference[rng.permutation(80)]
    stats = row_stats([reference], [shuffled], task="embedding", names=["embedding"])
    report = reduce_stats(stats, "int8")
    assert not report.passed and any("recall@1" in f for f in report.failures)
    assert report.to_dict()["recall_at_1"] < 0.5


def test_feature_parity_names_the_worst_level_and_budget_speaks_its_language() -> None:
    from resnet_edge.fallback import AccuracyBudget
    from resnet_edge.parity import reduce_stats, row_stats

    rng = np.random.default_rng(2)
    levels = [rng.normal(size=(20, 4, 4, 8)).astype(np.float32), rng.normal(size=(20, 2, 2, 16)).astype(np.float32)]
    damaged = [levels[0], levels[1] + rng.normal(scale=0.5, size=levels[1].shape).astype(np.float32)]
    report = reduce_stats(row_stats(levels, damaged, task="features", names=["c3", "c4"]), "int8")
    assert not report.passed and report.worst_level == "c4" and "on c4" in report.line()
    budget = AccuracyBudget(max_drop=1.0)
    assert budget.drop(report) == pytest.approx(100 * (1 - report.cosine))
    assert "feature loss (1 - cos on c4)" in budget.describe(report)


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "fmt", "out"), [("embedding", "tflite-int8", "e.parquet"),
                                                  ("embedding", "onnx", "e.npy"),
                                                  ("features", "ncnn", "maps/"),
                                                  ("features", "onnx-int8", "f.npz")])
def test_predict_writes_what_a_pipeline_reads(kind, fmt, out, exported, photo_folder, tmp_path) -> None:
    results = exported
    target = f"{tmp_path}/{out}"  # keeps the trailing / of a folder
    result = cli("predict", str(results[(kind, fmt)].path), str(photo_folder), "--out", target, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["images"] == 160
    if out.endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.read_table(target)
        assert table.num_rows == 160 and len(table["embedding"][0]) == 512
        assert json.loads(table.schema.metadata[b"resnet_edge"])["task"] == "embedding"
    elif out.endswith(".npy"):
        assert np.load(target).shape == (160, 512)
        assert len((tmp_path / "e.paths.txt").read_text().splitlines()) == 160
    elif out.endswith("/"):
        files = sorted((tmp_path / "maps").glob("*.npz"))
        assert len(files) == 160 and set(np.load(files[0]).files) == {"source", "c3", "c4", "c5"}
    else:
        arrays = np.load(target)
        assert arrays["c3"].shape == (160, 8, 8, 128) and len(arrays["paths"]) == 160


@pytest.mark.slow
def test_predict_prints_vectors_as_json_and_refuses_the_wrong_file(exported, photo_folder, tmp_path) -> None:
    results = exported
    embedding = str(results[("embedding", "onnx")].path)
    small = cli("predict", embedding, str(next(photo_folder.rglob("*.png"))), "--json")
    vectors = json.loads(small.stdout)["embeddings"]
    assert small.returncode == 0 and len(vectors) == 1 and len(vectors[0]["vector"]) == 512
    wrong = cli("predict", embedding, str(photo_folder), "--out", str(tmp_path / "x.csv"))
    assert wrong.returncode == 2 and "an embedding model's answers go to .parquet, .npy, .npz" in wrong.stderr
    assert not (tmp_path / "x.csv").exists()
    table = cli("predict", embedding, str(photo_folder))
    assert table.returncode == 0 and "embedding (512 values)" in table.stdout and "|v| 1.000" in table.stdout


@pytest.mark.slow
def test_ray_scoring_writes_embeddings(exported, photo_folder, tmp_path, ray_local) -> None:
    import pyarrow.parquet as pq

    from resnet_edge.scale.score import score

    results = exported
    summary = score(results[("embedding", "onnx-int8")].path, [str(photo_folder)], tmp_path / "scores",
                    workers=1, shard_size=100)
    assert summary.scored == 160
    table = pq.read_table([str(p) for p in sorted((tmp_path / "scores").glob("part-*.parquet"))])
    assert "embedding" in table.column_names and "labels" not in table.column_names
    assert all(len(v) == 512 for v in table["embedding"].to_pylist())


def test_old_artifacts_without_a_task_stay_classifiers() -> None:
    from resnet_edge.metadata import ModelMetadata

    old = ModelMetadata.from_json(json.dumps({"model": "m", "input_shape": [32, 32, 3], "labels": ["a", "b"]}))
    assert old.task is None and old.kind == "classifier"
    bad = json.dumps({"model": "m", "input_shape": [32, 32, 3], "task": "segmentation"})
    from resnet_edge.errors import ModelFileError

    with pytest.raises(ModelFileError, match="task must be one of"):
        ModelMetadata.from_json(bad)
    assert FORMATS  # rows read


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["embedding", "features"])
def test_serving_answers_by_the_model_s_task(kind, exported, photo_folder, ray_local) -> None:
    """POST /embed gives the vector, /features the maps; /predict on such a model names the route to use."""
    import asyncio

    from test_serve import _request

    from resnet_edge.scale.serve import ModelReplica, ServeOptions

    results = exported
    replica = ModelReplica(ServeOptions(str(results[(kind, "onnx")].path), max_body_bytes=2**20))

    async def classify(item):  # stands in for the @serve.batch queue, which needs a live replica context
        return (await asyncio.to_thread(replica._classify, [item]))[0]

    replica.classify = classify
    image = next(photo_folder.rglob("*.png")).read_bytes()

    def call(path: str):
        response = asyncio.run(replica(_request("POST", path, image)))
        return response.status_code, json.loads(response.body)

    route = "/embed" if kind == "embedding" else "/features"
    status, body = call(route)
    assert status == 200
    if kind == "embedding":
        vector = np.array(body["embeddings"][0]["embedding"])
        assert vector.shape == (512,) and abs(np.linalg.norm(vector) - 1) < 1e-4
    else:
        maps = body["features"][0]["features"]
        assert list(maps) == ["c3", "c4", "c5"] and maps["c4"]["shape"] == [4, 4, 256]
        assert len(maps["c4"]["values"]) == 4 * 4 * 256
    status, body = call("/predict")
    assert status == 400 and f"POST {route}" in body["error"]


@pytest.mark.slow
def test_the_image_search_example_runs(exported, models, photo_folder) -> None:
    from pathlib import Path

    tool = Path(__file__).resolve().parents[1] / "tools" / "image_search.py"
    query = next(photo_folder.rglob("*.png"))
    result = subprocess.run([sys.executable, str(tool), str(exported[("embedding", "tflite-int8")].path),
                             str(photo_folder), str(query), "--reference", str(models["embedding"]), "--top", "3"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "indexed 160 images (512-d vectors)" in result.stdout
    assert f"1. {query}" in result.stdout  # the query itself is the most similar image
    assert "recall@3 of the int8 search against the float one" in result.stdout
