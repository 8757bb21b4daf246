"""The inference service as a real process on loopback: KServe v2 with tritonclient (JSON and binary), batching
under concurrency, bad input, tokens, image classification, metrics and graceful shutdown."""
import io
import json
import signal
import threading
import time

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from PIL import Image

from deploy.backends import OnnxRuntimeBackend
from deploy.native import find_library
from export import ExportOptions, export
from deploy.serve.process import ServerProcess

pytestmark = pytest.mark.skipif(find_library("ort_ops", required=False) is None,
                                reason="librednet_ort_ops.so not built (make plugins)")
SIZE = 64


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    return export(ExportOptions("rednet26", input_size=SIZE), tmp_path_factory.mktemp("serve") / "rednet26.onnx")


@pytest.fixture(scope="module")
def direct(onnx_path):
    return OnnxRuntimeBackend(onnx_path, intra_op_threads=1)


@pytest.fixture(scope="module")
def server(onnx_path):
    with ServerProcess(onnx_path, "--max-batch", "8", "--max-delay-ms", "20", "--max-body-mb", "1") as s:
        yield s


def sample(seed, batch=1):
    return np.random.default_rng(seed).standard_normal((batch, 3, SIZE, SIZE), dtype=np.float32)


def triton_infer(client, x, binary=True):
    inp = triton.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = triton.InferRequestedOutput("logits", binary_data=binary)
    return client.infer("rednet26", [inp], outputs=[out]).as_numpy("logits")


def test_health_metadata_ready(server):
    assert httpx.get(f"{server.url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    meta = httpx.get(f"{server.url}/v2/models/rednet26").json()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, SIZE, SIZE]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 1000]}]
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("rednet26")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_equals_direct_backend(server, direct, binary):
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    x = sample(1, batch=3)
    np.testing.assert_allclose(triton_infer(client, x, binary), direct(x), rtol=1e-5, atol=1e-6)


def test_default_tritonclient_request(server, direct):
    """tritonclient's defaults: binary input, no explicit outputs (binary_data_output request parameter)."""
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    x = sample(2)
    inp = triton.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    np.testing.assert_allclose(client.infer("rednet26", [inp]).as_numpy("logits"), direct(x), rtol=1e-5, atol=1e-6)


def test_32_clients_x_20_requests_batched_none_lost(server, direct):
    clients, per_client = 32, 20
    inputs = {(c, i): sample(1000 * c + i) for c in range(clients) for i in range(per_client)}
    expected = {k: direct(v) for k, v in inputs.items()}
    results, errors = {}, []

    def work(c):
        client = triton.InferenceServerClient(server.url.removeprefix("http://"))
        for i in range(per_client):
            try:
                results[(c, i)] = triton_infer(client, inputs[(c, i)])
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))
    threads = [threading.Thread(target=work, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == clients * per_client
    for key, y in results.items():
        np.testing.assert_allclose(y, expected[key], rtol=1e-4, atol=1e-5, err_msg=str(key))
    metrics = httpx.get(f"{server.url}/metrics").text
    count = float(next(l.split()[-1] for l in metrics.splitlines() if l.startswith("rednet_batch_size_count")))
    singles = float(next(l.split()[-1] for l in metrics.splitlines() if l.startswith('rednet_batch_size_bucket{le="1.0"}')))
    assert singles < count, "no request was batched with another"
    assert 'rednet_requests_total{code="200",route="/v2/models/{name}/infer"}' in metrics


def _infer_raw(server, body, headers=None):
    return httpx.post(f"{server.url}/v2/models/rednet26/infer", content=body, headers=headers or {}, timeout=30)


def _json_request(**tensor):
    base = {"name": "input", "datatype": "FP32", "shape": [1, 3, SIZE, SIZE], "data": [0.0] * (3 * SIZE * SIZE)}
    base.update(tensor)
    return json.dumps({"inputs": [base]}).encode()


BAD = {
    "malformed JSON": (b'{"inputs": [', {}, 400, "not valid JSON"),
    "not an object": (b"[1, 2]", {}, 400, "JSON object"),
    "no inputs": (b"{}", {}, 400, "'inputs' must be a list"),
    "wrong tensor name": (_json_request(name="image"), {}, 400, "unknown input tensor 'image'"),
    "wrong datatype": (_json_request(datatype="INT64"), {}, 400, "datatype 'INT64'"),
    "wrong rank": (_json_request(shape=[1, 3, SIZE]), {}, 400, "does not match [-1, 3, 64, 64]"),
    "wrong size": (_json_request(shape=[1, 3, SIZE, SIZE + 1]), {}, 400, "dimension 3"),
    "data length": (_json_request(data=[0.0] * 10), {}, 400, "'data' has 10 values"),
    "non-numeric data": (_json_request(data=["a"] * (3 * SIZE * SIZE)), {}, 400, "must be numbers"),
    "NaN": (_json_request(data=[float("nan")] * (3 * SIZE * SIZE)), {}, 400, "NaN"),
    "binary size mismatch": (json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, SIZE, SIZE],
                                                     "parameters": {"binary_data_size": 12}}]}).encode() + b"\0" * 12,
                             "hdr", 400, "binary_data_size 12 does not match"),
    "bad header length": (b"{}", {"Inference-Header-Content-Length": "99"}, 400, "outside the body"),
    "unknown output": (json.dumps({"inputs": json.loads(_json_request())["inputs"],
                                   "outputs": [{"name": "probs"}]}).encode(), {}, 400, "unknown output 'probs'"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_requests_are_4xx_json_and_server_stays_healthy(server, direct, case):
    body, headers, status, needle = BAD[case]
    if headers == "hdr":
        headers = {"Inference-Header-Content-Length": str(len(body) - 12)}
    response = _infer_raw(server, body, headers)
    assert response.status_code == status and needle in response.json()["error"], response.text
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


def test_unknown_model_and_oversized_bodies(server):
    r = httpx.post(f"{server.url}/v2/models/resnet50/infer", content=_json_request())
    assert r.status_code == 404 and "unknown model 'resnet50'" in r.json()["error"]
    r = _infer_raw(server, b"x" * (2 << 20))
    assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]

    def chunks():  # no Content-Length: counted while streaming
        for _ in range(40):
            yield b"x" * 65536
    r = _infer_raw(server, chunks())
    assert r.status_code == 413
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


def _image(fmt, size=(200, 150)):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_classify_images(server, fmt):
    url = f"{server.url}/v2/models/rednet26/classify?top_k=3"
    raw = httpx.post(url, content=_image(fmt)).json()
    multipart = httpx.post(url, files={"image": ("x." + fmt.lower(), _image(fmt), f"image/{fmt.lower()}")}).json()
    assert raw == multipart and len(raw["top_k"]) == 3
    scores = [t["score"] for t in raw["top_k"]]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1


def test_non_image_upload_is_400(server):
    r = httpx.post(f"{server.url}/v2/models/rednet26/classify", content=b"GIF89a not really")
    assert r.status_code == 400 and "not a readable image" in r.json()["error"]
    r = httpx.post(f"{server.url}/v2/models/rednet26/classify", files={"other": ("a.txt", b"hi")})
    assert r.status_code == 400 and "named 'image'" in r.json()["error"]


def test_token_required_except_health(onnx_path):
    with ServerProcess(onnx_path, env={"REDNET_SERVE_TOKEN": "s3cret"}) as s:
        assert httpx.get(f"{s.url}/v2/health/live").status_code == 200
        assert httpx.get(f"{s.url}/v2/health/ready").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            r = httpx.get(f"{s.url}/v2/models/rednet26", headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert httpx.get(f"{s.url}/metrics", headers=headers).status_code == 401
        ok = {"Authorization": "Bearer s3cret"}
        assert httpx.get(f"{s.url}/v2/models/rednet26", headers=ok).status_code == 200
        client = triton.InferenceServerClient(s.url.removeprefix("http://"))
        inp = triton.InferInput("input", [1, 3, SIZE, SIZE], "FP32")
        inp.set_data_from_numpy(sample(5))
        assert client.infer("rednet26", [inp], headers=ok).as_numpy("logits").shape == (1, 1000)


def test_tensorrt_service_takes_its_signature_from_the_engine_sidecar(tmp_path):
    from deploy.serve.app import ServeConfig
    plan = tmp_path / "m.fp16.plan"
    (tmp_path / "m.fp16.plan.json").write_text(json.dumps({"onnx": "artifacts/m.fp16.onnx"}))
    config = ServeConfig("rednet50", backend="tensorrt", engine=str(plan))
    assert config.onnx_path.as_posix() == "artifacts/m.fp16.onnx"
    assert ServeConfig("rednet50").onnx_path.as_posix() == "artifacts/rednet50.onnx"


def test_binds_loopback_unless_told():
    from deploy.cli import build_parser
    from deploy.serve.app import ServeConfig
    assert ServeConfig("rednet26").host == "127.0.0.1"
    assert build_parser().parse_args(["serve", "rednet26"]).host == "127.0.0.1"


def test_graceful_shutdown_finishes_in_flight_requests(onnx_path):
    s = ServerProcess(onnx_path, "--max-batch", "4", "--max-delay-ms", "10").wait_ready()
    statuses, stop = [], threading.Event()

    def work(seed):
        with httpx.Client(timeout=60) as client:
            x = sample(seed)
            body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                                           "data": x.ravel().tolist()}]}).encode()
            while not stop.is_set():
                try:
                    statuses.append(client.post(f"{s.url}/v2/models/rednet26/infer", content=body).status_code)
                except httpx.HTTPError:
                    return  # the server stopped accepting: expected after SIGTERM
    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    in_flight_before = len(statuses)
    code = s.stop(signal.SIGTERM)
    stop.set()
    for t in threads:
        t.join()
    # uvicorn re-raises SIGTERM after its graceful shutdown, so the exit status is the signal's
    assert code in (0, -signal.SIGTERM) and '"event": "stopped"' in s.output()
    assert in_flight_before > 0 and statuses and all(c == 200 for c in statuses), statuses[-20:]
