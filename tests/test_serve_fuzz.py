"""Hypothesis fuzzing of the infer endpoint (in-process app, real ONNX Runtime backend): whatever the body and
headers, the answer is a JSON error below 500 or a valid result, and the server keeps serving."""
import json
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploy.native import find_library
from deploy.serve.app import ServeConfig, create_app
from export import ExportOptions, export

pytestmark = pytest.mark.skipif(find_library("ort_ops", required=False) is None,
                                reason="librednet_ort_ops.so not built (make plugins)")
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
def client(tmp_path_factory):
    path = export(ExportOptions("rednet26", input_size=SIZE), tmp_path_factory.mktemp("fuzz") / "m.onnx")
    app = create_app(ServeConfig("rednet26", onnx=str(path), max_batch=4, max_delay_ms=0, threads=1,
                                 max_body_bytes=1 << 20))
    with TestClient(app) as c:
        deadline = time.time() + 60
        while c.get("/v2/health/ready").status_code != 200 and time.time() < deadline:
            time.sleep(0.1)
        yield c


def _check(response):
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert isinstance(response.json()["error"], str) and response.json()["error"]


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


def test_not_ready_until_loaded_and_warmed(tmp_path, monkeypatch):
    import threading

    from deploy.serve import app as app_module
    release = threading.Event()
    original = app_module.ModelService.load

    def slow_load(self):
        release.wait(30)
        original(self)
    monkeypatch.setattr(app_module.ModelService, "load", slow_load)
    path = export(ExportOptions("rednet26", input_size=SIZE), tmp_path / "m.onnx")
    with TestClient(create_app(ServeConfig("rednet26", onnx=str(path), threads=1))) as c:
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
