"""Online serving: decoding uploads, argument checks, the request handler, and a served model under concurrent load."""

from __future__ import annotations

import asyncio
import base64
import http.client
import io
import json
import re
import shutil
import socket
import struct
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from resnet_edge.errors import DataError, InvalidArgumentError

MAX_BODY = 64 * 1024


def encode(image: np.ndarray, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, fmt, **options)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header declaring ``width`` x ``height`` pixels, with almost no data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# decode_image: the same pixels as load_image, and untrusted bytes refused with one line ---------------------------

def _photo(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(0).integers(0, 40, (height, width, 3))
    return np.clip(np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], -1) + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("fmt", "shape", "size", "policy"), [
    ("PNG", (40, 50), None, "squash"),
    ("PNG", (40, 50), (32, 32), "letterbox"),
    ("JPEG", (600, 800), (32, 32), "squash"),  # decoded at reduced scale (draft mode) on both paths
    ("JPEG", (600, 800), (224, 224), "center-crop"),
])
def test_decode_image_matches_load_image(tmp_path, fmt, shape, size, policy) -> None:
    from resnet_edge.preprocess import decode_image, load_image

    data = encode(_photo(*shape), fmt)
    path = tmp_path / f"photo.{fmt.lower()}"
    path.write_bytes(data)
    np.testing.assert_array_equal(decode_image(data, size, policy), load_image(path, size, policy))


@pytest.mark.parametrize(("data", "message"), [
    (b"", "upload: empty image data"),
    (b"not an image at all", "upload: cannot decode image (UnidentifiedImageError: cannot identify image file)"),
    (encode(_photo(20, 20))[:60], "upload: cannot decode image"),
])
def test_decode_image_refuses_bad_bytes_in_one_line(data, message) -> None:
    from resnet_edge.preprocess import decode_image

    with pytest.raises(DataError) as caught:
        decode_image(data, (32, 32), name="upload")
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    assert "BytesIO" not in str(caught.value)


def test_decode_image_refuses_too_many_pixels_before_decoding() -> None:
    from resnet_edge.preprocess import decode_image

    with pytest.raises(DataError, match=r"image too large: 3000x2000 pixels \(limit 1000000\)"):
        decode_image(png_claiming(3000, 2000), (32, 32), max_pixels=1_000_000)
    with pytest.raises(DataError, match=r"image too large: 900000000 pixels \(limit 1000000\)"):
        decode_image(png_claiming(30000, 30000), (32, 32), max_pixels=1_000_000)  # past Pillow's own bomb check
    assert decode_image(encode(_photo(20, 30)), max_pixels=600).shape == (20, 30, 3)


# Uploads: raw bytes, multipart/form-data and base64 JSON all come down to the image's bytes ------------------------

IMAGE = bytes(range(256)) * 4 + b"\r\n--not-the-boundary\r\n"  # bytes any byte-level parser could trip on


def multipart(files: dict, data: dict | None = None) -> tuple[bytes, str]:
    """(body, Content-Type) as the ``requests`` client encodes a form upload (what ``curl -F`` sends)."""
    import requests

    prepared = requests.Request("POST", "http://host/predict", files=files, data=data or {}).prepare()
    return prepared.body, prepared.headers["Content-Type"]


def as_json(value: str) -> bytes:
    return json.dumps({"image": value}).encode()


@pytest.mark.parametrize(("body", "content_type"), [
    (IMAGE, None),
    (IMAGE, "application/x-www-form-urlencoded"),  # curl --data-binary's default header: still the raw body
    (IMAGE, "image/png"),
    multipart({"file": ("photo.png", IMAGE, "image/png")}),
    multipart({"file": ("photo.png", IMAGE, "image/png")}, {"top_k": "3", "note": "a field before it"}),
    multipart({"upload": ("photo.png", IMAGE, "application/octet-stream")}, {"note": "x"}),  # the part with a file name
    multipart({"image": ("", IMAGE)}),
    (as_json(base64.b64encode(IMAGE).decode()), "application/json"),
    (as_json(base64.b64encode(IMAGE).decode()), None),  # a JSON body without its header
    (as_json("data:image/png;base64," + base64.b64encode(IMAGE).decode()), "application/json; charset=utf-8"),
    (as_json(base64.urlsafe_b64encode(IMAGE).decode().rstrip("=")), "application/json"),  # URL-safe, unpadded
    (as_json(base64.encodebytes(IMAGE).decode()), "application/json"),  # wrapped over lines
], ids=["raw", "raw-form-header", "raw-png", "multipart", "multipart-fields", "multipart-other-name",
        "multipart-no-filename", "json", "json-no-header", "json-data-url", "json-urlsafe", "json-wrapped"])
def test_any_accepted_upload_gives_the_image_bytes(body: bytes, content_type: str | None) -> None:
    from resnet_edge.scale.serve import image_bytes

    assert image_bytes(body, content_type) == IMAGE


@pytest.mark.parametrize(("body", "content_type", "message"), [
    (b"x", "multipart/form-data", "without a boundary"),
    (b"--b\r\nContent-Disposition: form-data; name=file\r\n\r\nxx", "multipart/form-data; boundary=b",
     "no closing boundary"),
    (multipart({"file": ("a.png", IMAGE)})[0], "multipart/form-data; boundary=other", "no closing boundary"),
    (b"--b\r\nno blank line--b--", "multipart/form-data; boundary=b", "no blank line"),
    (b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--b\r\nContent-Disposition: form-data; "
     b'name="b"\r\n\r\n2\r\n--b--\r\n', "multipart/form-data; boundary=b", "no file field (fields: a, b)"),
    (b'{"image": ', "application/json", "body is not valid JSON"),
    (b'{"picture": "AAAA"}', "application/json", 'no "image" string'),
    (b'["AAAA"]', "application/json", 'no "image" string'),
    (b'{"image": "not base64!"}', "application/json", '"image" is not valid base64'),
    (b'{"image": "data:image/png,AAAA"}', "application/json", "a data: URL must hold base64"),
])
def test_malformed_uploads_are_refused_in_one_line(body: bytes, content_type: str | None, message: str) -> None:
    from resnet_edge.scale.serve import RequestError, image_bytes

    with pytest.raises(RequestError, match=re.escape(message)) as caught:
        image_bytes(body, content_type)
    assert caught.value.status == 400 and "\n" not in str(caught.value)


def scrape(text: str) -> dict[tuple[str, tuple], float]:
    """Prometheus text parsed by the reference parser: {(sample name, sorted labels): value}."""
    parser = pytest.importorskip("prometheus_client.parser")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in parser.text_string_to_metric_families(text) for sample in family.samples}


def test_metrics_add_up_across_replicas_and_render_as_prometheus_text() -> None:
    from resnet_edge.scale.serve import Metrics

    replicas = [Metrics(replicas={"one"}), Metrics(replicas={"two"})]
    for metrics in replicas:
        metrics.request("/predict", 200, 0.004)
        metrics.request("/predict", 413, 0.0005)
        metrics.request("other", 404, 0.0001)
        metrics.batch(3)
    replicas[0].batch(1)
    total = Metrics()
    for metrics in replicas:
        total.add(metrics.take())
        assert not metrics.requests and not metrics.batch_sizes  # a delta is handed over once
    samples = scrape(total.render())
    predict = (("route", "/predict"),)
    assert samples["resnet_edge_requests_total", (*predict, ("status", "200"))] == 2
    assert samples["resnet_edge_errors_total", (*predict, ("status", "413"))] == 2
    assert ("resnet_edge_errors_total", (*predict, ("status", "200"))) not in samples
    assert samples["resnet_edge_errors_total", (("route", "other"), ("status", "404"))] == 2
    assert samples["resnet_edge_request_duration_seconds_bucket", (("le", "0.001"), *predict)] == 2
    assert samples["resnet_edge_request_duration_seconds_bucket", (("le", "+Inf"), *predict)] == 4
    assert samples["resnet_edge_request_duration_seconds_sum", predict] == pytest.approx(0.009)
    assert samples["resnet_edge_request_latency_seconds", (("quantile", "0.99"), *predict)] == pytest.approx(0.004,
                                                                                                             rel=0.02)
    assert samples["resnet_edge_batch_size_bucket", (("le", "2.0"),)] == 1
    assert samples["resnet_edge_batch_size_count", ()] == 3 and samples["resnet_edge_batch_size_sum", ()] == 7
    assert samples["resnet_edge_replicas", ()] == 2


# Argument checks: one-line errors before Ray is touched ----------------------------------------------------------

@pytest.fixture
def fake_artifact(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"not loaded by the argument checks")
    return path


@pytest.mark.parametrize(("options", "message"), [
    ({"replicas": 0}, "replicas must be at least 1"),
    ({"max_batch": 0}, "max batch must be at least 1"),
    ({"batch_wait_ms": -1}, "batch wait must be 0 ms or more"),
    ({"top_k": 0}, "top-k must be from 1"),
    ({"device": "tpu"}, "unknown device 'tpu'"),
    ({"max_body_bytes": 0}, "max body size must be at least 1 byte"),
])
def test_build_app_and_start_check_their_arguments(fake_artifact, options, message) -> None:
    from resnet_edge.scale.serve import build_app, start

    with pytest.raises(InvalidArgumentError, match=message):
        build_app(fake_artifact, **options)
    with pytest.raises(InvalidArgumentError, match=message):
        start(fake_artifact, port=free_port(), **options)


def test_start_checks_artifact_port_and_host(tmp_path, fake_artifact) -> None:
    from resnet_edge.scale.serve import start

    for artifact, message in [(tmp_path / "missing.tflite", "no such model file"),
                              (tmp_path / "model.txt", "unknown model suffix")]:
        with pytest.raises(InvalidArgumentError, match=message):
            start(artifact)
    for port in (0, 70000):
        with pytest.raises(InvalidArgumentError, match="port must be from 1 to 65535"):
            start(fake_artifact, port=port)
    with pytest.raises(InvalidArgumentError, match="bad host"):
        start(fake_artifact, host="http://example.com")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(InvalidArgumentError, match="is in use"):
            start(fake_artifact, port=busy.getsockname()[1])


def test_only_loopback_counts_as_private() -> None:
    from resnet_edge.scale.serve import is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.10", "example.com"))


def test_importing_serve_does_not_import_ray() -> None:
    code = "import sys, resnet_edge.cli, resnet_edge.scale.serve; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# The request handler in-process: routes, limits, and a failing model answered with 500 ---------------------------

def _request(method: str, path: str, body: bytes = b"", query: str = "", length: bool = True,
             content_type: str | None = None):
    from starlette.requests import Request

    chunks = [body[i : i + 4096] for i in range(0, len(body), 4096)] or [b""]

    async def receive():
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    headers = [(b"content-length", str(len(body)).encode())] if length else []
    if content_type is not None:
        headers.append((b"content-type", content_type.encode()))
    return Request({"type": "http", "method": method, "path": path, "query_string": query.encode(),
                    "headers": headers}, receive)


def test_handler_answers_bad_requests_and_model_failures_and_keeps_serving(ray_local, artifacts, digits) -> None:
    from resnet_edge.scale.serve import ModelReplica, ServeOptions

    replica = ModelReplica(ServeOptions(str(artifacts["tflite-int8"]), max_body_bytes=MAX_BODY))
    batches: list[int] = []
    failing = [False]

    async def classify(item):  # stands in for the @serve.batch queue, which needs a live replica context
        batches.append(1)
        if failing[0]:
            raise RuntimeError("model exploded")
        return (await asyncio.to_thread(replica._classify, [item]))[0]

    replica.classify = classify
    good = encode(digits.images[0])

    def call(*args, **kwargs):
        response = asyncio.run(replica(_request(*args, **kwargs)))
        return response.status_code, json.loads(response.body)

    status, body = call("POST", "/predict", good, "top_k=3")
    assert status == 200 and len(body["predictions"][0]["labels"]) == 3 and body["skipped"] == []
    for args, kwargs, expected, text in [
        (("POST", "/predict", b"garbage"), {}, 400, "cannot decode image"),
        (("POST", "/predict", b""), {}, 400, "empty image data"),
        (("POST", "/predict", png_claiming(30000, 30000)), {}, 400, "image too large"),
        (("POST", "/predict", b"x" * (MAX_BODY + 1)), {}, 413, "over the limit"),
        (("POST", "/predict", b"x" * (MAX_BODY + 1)), {"length": False}, 413, "over the limit"),
        (("POST", "/predict", good, "top_k=zero"), {}, 400, "top_k must be an integer"),
        (("POST", "/predict", good, "top_k=0"), {}, 400, "top_k must be an integer"),
        (("GET", "/predict"), {}, 405, "takes POST"),
        (("GET", "/nowhere"), {}, 404, "no route /nowhere"),
    ]:
        status, body = call(*args, **kwargs)
        assert status == expected and text in body["error"] and "\n" not in body["error"], (args, body)
    assert len(batches) == 1, "bad requests must not reach the model"
    failing[0] = True
    status, body = call("POST", "/predict", good)
    assert status == 500 and "model exploded" in body["error"]
    failing[0] = False
    assert call("POST", "/predict", good)[0] == 200
    status, body = call("GET", "/health")
    assert status == 200 and body["status"] == "ok" and body["backend"] == "tflite"


def test_handler_takes_multipart_and_base64_uploads_and_counts_requests(ray_local, artifacts, digits) -> None:
    from resnet_edge.scale.serve import METRICS_TYPE, ModelReplica, ServeOptions

    replica = ModelReplica(ServeOptions(str(artifacts["tflite-int8"]), max_body_bytes=MAX_BODY))
    reached: list[int] = []

    async def classify(item):
        reached.append(1)
        replica.metrics.batch(1)
        return (await asyncio.to_thread(replica._classify, [item]))[0]

    replica.classify = classify
    image = encode(digits.images[3])

    def call(body: bytes, content_type: str | None = None, method: str = "POST", path: str = "/predict"):
        response = asyncio.run(replica(_request(method, path, body, "top_k=3", content_type=content_type)))
        return response.status_code, response

    answers = []
    for body, content_type in [(image, None), multipart({"file": ("digit.png", image, "image/png")}),
                               (as_json(base64.b64encode(image).decode()), "application/json")]:
        status, response = call(body, content_type)
        assert status == 200, response.body
        answers.append(json.loads(response.body)["predictions"][0])
    assert answers[0] == answers[1] == answers[2] and len(answers[0]["labels"]) == 3
    for body, content_type, expected in [(*multipart({"file": ("x.png", b"garbage")}), "cannot decode image"),
                                         (b'{"image": "%%%"}', "application/json", "not valid base64"),
                                         (*multipart({"file": ("x.png", b"x" * MAX_BODY)}), "over the limit")]:
        status, response = call(body, content_type)
        error = json.loads(response.body)["error"]
        assert status in (400, 413) and expected in error and "\n" not in error
    assert len(reached) == 3, "refused uploads must not reach the model"
    status, response = call(b"", method="GET", path="/metrics")
    assert status == 200 and response.media_type == METRICS_TYPE
    samples = scrape(response.body.decode())
    predict = (("route", "/predict"),)
    assert samples["resnet_edge_requests_total", (*predict, ("status", "200"))] == 3
    assert samples["resnet_edge_errors_total", (*predict, ("status", "400"))] == 2
    assert samples["resnet_edge_errors_total", (*predict, ("status", "413"))] == 1
    assert samples["resnet_edge_batch_size_count", ()] == 3


# A served model: 100 concurrent requests, bad requests, and it keeps serving ----------------------------------

@pytest.fixture(scope="module")
def server(ray_local, artifacts):
    from resnet_edge.scale.serve import start, stop

    url = start(artifacts["tflite-int8"], port=free_port(), max_batch=16, batch_wait_ms=5, max_body_bytes=MAX_BODY)
    yield url
    stop()


def call_server(url: str, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.slow
def test_served_model_answers_100_concurrent_requests_like_predict(server, artifacts, digits) -> None:
    from resnet_edge.predictor import load
    from resnet_edge.preprocess import decode_image

    bodies = [encode(image) for image in digits.images[:100]]
    with ThreadPoolExecutor(100) as pool:
        answers = list(pool.map(lambda body: call_server(server, "POST", "/predict", body), bodies))
    with load(artifacts["tflite-int8"]) as predictor:
        expected = predictor.predict(np.stack([decode_image(body) for body in bodies]), top_k=5).predictions
    for (status, answer), want in zip(answers, expected, strict=True):
        assert status == 200, answer
        assert answer["skipped"] == [] and len(answer["predictions"]) == 1
        got = answer["predictions"][0]
        assert set(got) == {"source", "labels", "indices", "scores"}
        assert got["labels"] == want.labels and got["indices"] == want.indices
        np.testing.assert_allclose(got["scores"], want.scores, atol=1e-6)


@pytest.mark.slow
def test_served_model_refuses_bad_requests_and_keeps_serving(server, digits) -> None:
    status, body = call_server(server, "GET", "/health")
    assert status == 200 and body["status"] == "ok" and body["artifact"].endswith(".tflite")
    for payload, expected in [(b"\x00garbage\xff" * 10, 400), (b"x" * (MAX_BODY + 1), 413)]:
        status, body = call_server(server, "POST", "/predict", payload)
        assert status == expected and list(body) == ["error"] and "\n" not in body["error"]
    assert call_server(server, "GET", "/elsewhere")[0] == 404
    status, body = call_server(server, "POST", "/predict?top_k=2", encode(digits.images[5]))
    assert status == 200 and len(body["predictions"][0]["indices"]) == 2


@pytest.mark.slow
def test_served_model_takes_uploads_as_clients_send_them_and_exposes_metrics(server, digits, tmp_path) -> None:
    import requests

    before = scrape(requests.get(f"{server}/metrics", timeout=60).text)
    image = encode(digits.images[7])
    raw = requests.post(f"{server}/predict?top_k=2", data=image, timeout=60)
    form = requests.post(f"{server}/predict?top_k=2", files={"file": ("digit.png", image, "image/png")}, timeout=60)
    encoded = requests.post(f"{server}/predict?top_k=2", json={"image": base64.b64encode(image).decode()}, timeout=60)
    for response in (raw, form, encoded):
        assert response.status_code == 200, response.text
    assert raw.json() == form.json() == encoded.json()
    bad = requests.post(f"{server}/predict", files={"file": ("x.png", b"not an image")}, timeout=60)
    assert bad.status_code == 400 and "cannot decode image" in bad.json()["error"]
    if shutil.which("curl"):  # the issue's own example
        path = tmp_path / "photo.png"
        path.write_bytes(image)
        done = subprocess.run(["curl", "-s", "-F", f"file=@{path}", f"{server}/predict?top_k=2"], capture_output=True,
                              text=True, timeout=60)
        assert json.loads(done.stdout) == raw.json(), done.stdout
    response = requests.get(f"{server}/metrics", timeout=60)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain; version=0.0.4")
    after = scrape(response.text)

    def grew(name: str, *labels: tuple[str, str]) -> float:
        key = (name, tuple(sorted(labels)))
        return after.get(key, 0) - before.get(key, 0)

    posted = 4 if shutil.which("curl") else 3
    assert grew("resnet_edge_requests_total", ("route", "/predict"), ("status", "200")) == posted
    assert grew("resnet_edge_errors_total", ("route", "/predict"), ("status", "400")) == 1
    assert grew("resnet_edge_requests_total", ("route", "/metrics"), ("status", "200")) == 1  # the first scrape
    assert grew("resnet_edge_batch_size_sum") == posted and grew("resnet_edge_batch_size_count") >= 1
    assert after["resnet_edge_request_latency_seconds", (("quantile", "0.5"), ("route", "/predict"))] > 0
    assert after["resnet_edge_replicas", ()] == 1


SIGNAL_CHECK = """
import os, signal
import pytest
from resnet_edge.scale import serve as serve_module

stopped = []
serve_module.stop = lambda: stopped.append(True)

def start_up_then_interrupted(artifact, on_message=None, on_up=None, **options):
    on_up("http://127.0.0.1:1")
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C right after /health answered, before start returns
    return "http://127.0.0.1:1"

serve_module.start = start_up_then_interrupted
ready = []
serve_module.run_server("model.tflite", on_ready=ready.append)  # returns: no KeyboardInterrupt
assert stopped == [True] and ready == [], (stopped, ready)

def interrupted_while_starting(artifact, on_message=None, on_up=None, **options):
    os.kill(os.getpid(), signal.SIGINT)
    raise AssertionError("the signal should have interrupted the start")

serve_module.start = interrupted_while_starting
with pytest.raises(KeyboardInterrupt):
    serve_module.run_server("model.tflite")
assert stopped == [True], "an interrupted start undoes itself; run_server does not stop a server never up"
print("ok")
"""


def test_a_signal_once_the_server_answers_stops_it_cleanly() -> None:
    """From the moment /health answers (inside start), Ctrl-C means stop: run_server returns and stops the server;
    before that, the start is interrupted and undoes itself. In a fresh interpreter of its own, as a user's Ctrl-C
    meets it: a SIGINT sent to this test process, which holds a Ray driver and TensorFlow, has killed it."""
    done = subprocess.run([sys.executable, "-c", SIGNAL_CHECK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


# CLI ----------------------------------------------------------------------------------------------------------

def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "resnet_edge.cli", *args], capture_output=True, text=True, timeout=120)


def test_serve_help_lists_its_options() -> None:
    result = cli("serve", "--help")
    assert result.returncode == 0, result.stderr
    for option in ("--host", "--port", "--replicas", "--max-batch", "--batch-wait-ms", "--max-body-mb", "--ray"):
        assert option in result.stdout


def test_serve_missing_artifact_is_one_line_exit_2() -> None:
    result = cli("serve", "/nonexistent/model.tflite", "--port", str(free_port()))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no such model file" in lines[0]
