"""Hypothesis fuzzing of the infer and classify endpoints (in-process app, real ONNX Runtime backend): whatever the
body, headers or image, the answer is a JSON error below 500 or a valid result, valid requests of the model's real
size get the backend's answer, and the server keeps serving."""
import io
import json
import struct
import time
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploy.backends import OnnxRuntimeBackend
from deploy.serve.app import ServeConfig, create_app
from export import ExportOptions, export
from helpers import requires

pytestmark = requires("ort_ops")
SIZE = 32
FUZZ_CASES = 400
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
tensors = st.fixed_dictionaries({
    "name": st.sampled_from(["input", "logits", "x", ""]) | st.text(max_size=5),
    "datatype": st.sampled_from(["FP32", "FP16", "INT64", "BYTES", ""]),
    "shape": st.lists(st.integers(-2, 70), max_size=5) | json_values,
}, optional={"data": st.lists(st.floats(width=32), max_size=50) | json_values,
             "parameters": st.fixed_dictionaries({"binary_data_size": st.integers(-5, 100_000)}) | json_values})
requests = st.fixed_dictionaries({"inputs": st.lists(tensors, max_size=2) | json_values},
                                 optional={"outputs": json_values, "parameters": json_values, "id": json_values})


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    return export(ExportOptions("rednet26", input_size=SIZE), tmp_path_factory.mktemp("fuzz") / "m.onnx")


@pytest.fixture(scope="module")
def direct(onnx_path):
    return OnnxRuntimeBackend(onnx_path, intra_op_threads=1)


@pytest.fixture(scope="module")
def client(onnx_path):
    app = create_app(ServeConfig("rednet26", onnx=str(onnx_path), max_batch=4, max_delay_ms=0, threads=1,
                                 max_body_bytes=1 << 20, max_image_pixels=1 << 20, workers=1))
    with TestClient(app) as c:
        deadline = time.time() + 60
        while c.get("/v2/health/ready").status_code != 200 and time.time() < deadline:
            time.sleep(0.1)
        yield c


def _check(response):
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert isinstance(response.json()["error"], str) and response.json()["error"]


# valid requests of the model's real size: any batch up to the limit, FP32 or FP16, JSON or binary
valid_requests = st.fixed_dictionaries({
    "batch": st.integers(1, 4), "datatype": st.sampled_from(["FP32", "FP16"]), "binary_in": st.booleans(),
    "binary_out": st.booleans(), "seed": st.integers(0, 2**32 - 1), "scale": st.sampled_from([1e-3, 1.0, 30.0])})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(case=valid_requests)
def test_valid_requests_get_the_backends_answer(client, direct, case):
    dtype = np.float16 if case["datatype"] == "FP16" else np.float32
    x = (np.random.default_rng(case["seed"]).standard_normal((case["batch"], 3, SIZE, SIZE)) * case["scale"]).astype(dtype)
    tensor = {"name": "input", "datatype": case["datatype"], "shape": list(x.shape)}
    header = {"inputs": [tensor], "outputs": [{"name": "logits", "parameters": {"binary_data": case["binary_out"]}}]}
    if case["binary_in"]:
        tensor["parameters"] = {"binary_data_size": x.nbytes}
        head = json.dumps(header).encode()
        r = client.post("/v2/models/rednet26/infer", content=head + x.tobytes(),
                        headers={"Inference-Header-Content-Length": str(len(head))})
    else:
        tensor["data"] = x.ravel().tolist()
        r = client.post("/v2/models/rednet26/infer", content=json.dumps(header).encode())
    expected = direct(x.astype(np.float32))
    if not np.isfinite(expected).all():  # the (randomly initialised) model overflows: refused, never a bare NaN
        assert r.status_code == 400 and "not finite" in r.json()["error"], r.text
        return
    assert r.status_code == 200, r.text
    if case["binary_out"]:
        n = int(r.headers["inference-header-content-length"])
        meta = json.loads(r.content[:n])["outputs"][0]
        y = np.frombuffer(r.content[n:], np.float32).reshape(meta["shape"])
    else:
        meta = r.json()["outputs"][0]
        y = np.asarray(meta["data"], np.float32).reshape(meta["shape"])
    assert meta["datatype"] == "FP32" and meta["shape"] == [case["batch"], 1000]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()))


def _png(width, height, bit_depth, color_type, payload):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(payload)) + chunk(b"IEND", b"")


def _small_jpeg():
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


SMALL_JPEG = _small_jpeg()
SOF = SMALL_JPEG.index(b"\xff\xc0") + 5  # height, width (16 bits each) of the baseline frame header
dimensions = st.integers(0, 70_000) | st.sampled_from([1, 2**31 - 1, 2**32 - 1])
png_images = st.builds(_png, dimensions, dimensions, st.sampled_from([1, 2, 4, 8, 16, 0, 3]),
                       st.sampled_from([0, 2, 3, 4, 6, 1, 7]), st.binary(max_size=512))
jpeg_images = st.builds(lambda h, w, cut: (SMALL_JPEG[:SOF] + struct.pack(">HH", h, w) + SMALL_JPEG[SOF + 4:])[:cut],
                        st.integers(0, 65535), st.integers(0, 65535), st.integers(2, len(SMALL_JPEG)))
mutated_images = st.builds(lambda data, edits: bytes(
    b ^ edits.get(i, 0) for i, b in enumerate(data)), st.sampled_from([SMALL_JPEG, _png(16, 16, 8, 2, bytes(16 * 49))]),
    st.dictionaries(st.integers(0, 200), st.integers(1, 255), max_size=6))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(image=png_images | jpeg_images | mutated_images, multipart=st.booleans())
def test_images_with_random_headers_never_fail_the_server(client, image, multipart):
    if multipart:
        r = client.post("/v2/models/rednet26/classify", files={"image": ("x", image, "application/octet-stream")})
    else:
        r = client.post("/v2/models/rednet26/classify", content=image)
    _check(r)
    if r.status_code == 200:
        assert len(r.json()["top_k"]) == 5


@settings(max_examples=FUZZ_CASES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                          HealthCheck.too_slow])
@given(body=requests | json_values, binary=st.binary(max_size=256), header=st.none() | st.integers(-3, 400) | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=4))
def test_infer_never_fails_the_server(client, body, binary, header):
    payload = json.dumps(body).encode()
    headers = {}
    if header is not None:
        headers["Inference-Header-Content-Length"] = str(header)
        payload += binary
    _check(client.post("/v2/models/rednet26/infer", content=payload, headers=headers))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=2048))
def test_raw_bytes_never_fail_the_server(client, raw):
    _check(client.post("/v2/models/rednet26/infer", content=raw))
    _check(client.post("/v2/models/rednet26/classify", content=raw))


def test_not_ready_until_loaded_and_warmed(onnx_path, monkeypatch):
    import threading

    from deploy.serve import app as app_module
    release = threading.Event()
    original = app_module.ModelService.load

    def slow_load(self):
        release.wait(30)
        original(self)
    monkeypatch.setattr(app_module.ModelService, "load", slow_load)
    with TestClient(create_app(ServeConfig("rednet26", onnx=str(onnx_path), threads=1, workers=1))) as c:
        assert c.get("/v2/health/live").status_code == 200
        assert c.get("/v2/health/ready").status_code == 503
        r = c.post("/v2/models/rednet26/infer", content=b"{}")
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and "not ready" in r.json()["error"]
        release.set()
        deadline = time.time() + 60
        while c.get("/v2/health/ready").status_code != 200 and time.time() < deadline:
            time.sleep(0.05)
        assert c.get("/v2/models/rednet26/ready").json() == {"name": "rednet26", "ready": True}


def test_still_serving_after_the_fuzz(client):
    x = np.zeros((1, 3, SIZE, SIZE), np.float32)
    r = client.post("/v2/models/rednet26/infer", json={"inputs": [{"name": "input", "datatype": "FP32",
                                                                   "shape": list(x.shape), "data": x.ravel().tolist()}]})
    assert r.status_code == 200 and r.json()["outputs"][0]["shape"] == [1, 1000]
    assert client.get("/v2/health/ready").status_code == 200
