"""The inference service as a real process on loopback: KServe v2 with tritonclient (JSON and binary, FP32 and
FP16), batching under concurrency, bad input, tokens, image classification against an independent preprocessing,
metrics and graceful shutdown. (Attacks on memory, latency and limits: test_serve_attacks.py.)"""
import io
import json
import random
import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from PIL import Image

from deploy.backends import OnnxRuntimeBackend
from export import ExportOptions, export
from deploy.serve.process import ServerProcess
from helpers import requires

pytestmark = requires("ort_ops")
SIZE = 64
RSS_BOUND = 200 << 20  # what any attack may add to the server's resident memory (server + worker processes)


def exported(tmp_path_factory, **options) -> Path:
    """rednet26 at SIZE, exported once per option set per session (the service test modules share them)."""
    opts = ExportOptions("rednet26", input_size=SIZE, **options)
    path = tmp_path_factory.getbasetemp() / "serve-models" / f"rednet26.{opts.precision}.{opts.dynamic}.onnx"
    if not path.is_file():
        path.parent.mkdir(exist_ok=True)
        export(opts, path)
    return path


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    return exported(tmp_path_factory)


class MemoryWatch:
    """Samples the server's RSS every 20 ms; over the bound it kills the server and remembers why."""

    def __init__(self, server: ServerProcess, bound: int = RSS_BOUND):
        self.server, self.base = server, server.rss_bytes()
        self.limit, self.peak, self.exceeded = self.base + bound, self.base, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self):
        while not self._stop.wait(0.02):
            rss = self.server.rss_bytes()
            self.peak = max(self.peak, rss)
            if rss > self.limit and not self.exceeded:
                self.exceeded = True
                self.server.proc.kill()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        assert not self.exceeded, (f"server RSS went from {self.base >> 20} MB to over {self.limit >> 20} MB "
                                   f"(bound +{RSS_BOUND >> 20} MB); killed")


def _strict_json(response: httpx.Response):
    """The body as JSON, refusing the NaN/Infinity that Python's json would accept."""
    def refuse(constant):
        raise ValueError(f"invalid JSON constant {constant}")
    return json.loads(response.text, parse_constant=refuse)


def assert_error(response: httpx.Response, status: int, *needles: str):
    assert response.status_code == status, (response.status_code, response.text[:500])
    error = _strict_json(response)["error"]
    assert isinstance(error, str) and all(n in error for n in needles), error


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
def test_classify_images_multipart_or_raw(server, fmt):
    url = f"{server.url}/v2/models/rednet26/classify?top_k=3"
    raw = httpx.post(url, content=_image(fmt)).json()
    multipart = httpx.post(url, files={"image": ("x." + fmt.lower(), _image(fmt), f"image/{fmt.lower()}")}).json()
    assert raw == multipart and len(raw["top_k"]) == 3
    scores = [t["score"] for t in raw["top_k"]]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1


def test_non_image_upload_is_400(server):
    r = httpx.post(f"{server.url}/v2/models/rednet26/classify", content=b"GIF89a not really")
    assert r.status_code == 400 and "not a readable image (JPEG or PNG)" in r.json()["error"]
    r = httpx.post(f"{server.url}/v2/models/rednet26/classify", files={"other": ("a.txt", b"hi")})
    assert r.status_code == 400 and "named 'image'" in r.json()["error"]


@pytest.fixture(scope="module")
def token_server(onnx_path):
    with ServerProcess(onnx_path, env={"REDNET_SERVE_TOKEN": "s3cret"}) as s:
        yield s


def test_token_required_except_health(token_server):
    s = token_server
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


def test_token_scheme_is_case_insensitive_and_token_exact(token_server):
    s = token_server
    for scheme in ("Bearer", "bearer", "BEARER"):
        assert httpx.get(f"{s.url}/v2/models/rednet26", headers={"Authorization": f"{scheme} s3cret"}).status_code == 200
    for header in ("Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "Bearer", "s3cret"):
        assert_error(httpx.get(f"{s.url}/v2/models/rednet26", headers={"Authorization": header}), 401, "token")


def _series(text: str) -> set[str]:
    return {line.split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_metrics_series_do_not_grow_with_random_paths(token_server):
    with MemoryWatch(token_server), httpx.Client(base_url=token_server.url, timeout=30) as client:
        auth = {"Authorization": "Bearer s3cret"}
        rng = random.Random(0)

        def attack(n):
            for _ in range(n):
                path = "/" + "/".join("".join(rng.choices("abcdefghij0123456789%", k=8)) for _ in range(rng.randint(1, 4)))
                method = rng.choice(["GET", "POST", "DELETE"])
                client.request(method, rng.choice(["", "/v2/models/", "/v2/models/rednet26/"]) + path.lstrip("/"),
                               headers=rng.choice([{}, auth]))
        attack(300)  # every (route template, code) pair this mix can produce, seeded so the same each run
        client.get("/metrics", headers=auth)  # a scrape's own series appear from the next scrape on
        first = _series(client.get("/metrics", headers=auth).text)
        attack(1000)
        after = client.get("/metrics", headers=auth).text
        assert _series(after) == first, sorted(_series(after) - first)[:10]
        assert len(after) < 20_000, len(after)
        routes = {line.split('route="')[1].split('"')[0] for line in after.splitlines() if 'route="' in line}
        assert routes <= {"unmatched", "/v2/health/ready", "/v2/health/live", "/v2/models/{name}", "/v2/models/{name}/ready", "/v2/models/{name}/config",
                          "/v2/models/{name}/infer", "/v2/models/{name}/classify", "/metrics",
                          "/v2/models/{name}/versions/{version}"}, routes


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


def independent_preprocess(image: Image.Image, crop: int) -> np.ndarray:
    """mmcls's ImageNet test pipeline written out directly: shorter side to 256·crop/224 (bilinear) on the whole
    image, centre crop, (x − mean)/std per RGB channel, HWC → NCHW. The service instead resizes only the crop's
    source region (bounded memory); the two must agree."""
    resize = round(256 * crop / 224)
    scale = resize / min(image.size)
    w, h = max(crop, round(image.width * scale)), max(crop, round(image.height * scale))
    full = np.asarray(image.convert("RGB").resize((w, h), Image.BILINEAR), dtype=np.float64)
    top, left = (h - crop) // 2, (w - crop) // 2
    pixels = full[top:top + crop, left:left + crop]
    pixels = (pixels - [123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375]
    return pixels.transpose(2, 0, 1)[None].astype(np.float32)


def log_softmax(logits):
    logits = logits.astype(np.float64)
    return logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())


@pytest.mark.parametrize("size", [(300, 200), (97, 211), (64, 64)], ids=["landscape", "portrait", "exact"])
def test_classify_equals_independent_preprocessing_and_direct_backend(server, direct, size):
    rng = np.random.default_rng(size[0])
    # distinct channel statistics, so a BGR order or a wrong mean/std shows in the logits
    pixels = np.stack([rng.integers(0, 90, size[::-1]), rng.integers(80, 170, size[::-1]),
                       rng.integers(160, 256, size[::-1])], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    r = httpx.post(f"{server.url}/v2/models/rednet26/classify?top_k=1000", content=buf.getvalue())
    assert r.status_code == 200, r.text
    expected = log_softmax(direct(independent_preprocess(Image.fromarray(pixels), SIZE))[0])
    got = np.full(1000, np.nan)
    for entry in r.json()["top_k"]:
        got[entry["class_id"]] = np.log(entry["score"])
    # the same arithmetic up to float32 rounding of the two preprocessing paths, amplified by the network
    # (measured: 2.4e-6 in log-probability on the landscape image, 1.07e-5 on the exact crop with the BatchNorms
    # folded into the involutions); the randomly initialised model is insensitive (logits spread over ~0.05), yet a
    # channel swap, a crop one pixel off or a mean one grey level off moves them by 7e-5 or more
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=0)
    labels = (Path(__file__).parents[1] / "deploy/serve/imagenet_classes.txt").read_text().splitlines()
    assert all(e["label"] == labels[e["class_id"]] for e in r.json()["top_k"]) and labels[0] == "tench"


def test_model_config_for_tritonclient(server):
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    config = client.get_model_config("rednet26")
    assert config["max_batch_size"] == 8 and config["platform"] == "onnxruntime_onnx"
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [3, SIZE, SIZE],
                                "format": "FORMAT_NCHW"}]
    assert config["output"] == [{"name": "logits", "data_type": "TYPE_FP32", "dims": [1000]}]
    with pytest.raises(triton.InferenceServerException):
        client.get_model_config("resnet50")


# --- FP16: an fp16 model answers FP16 and FP32 requests; an fp32 model answers FP16 requests ----------------------

@pytest.fixture(scope="module")
def fp16_onnx(tmp_path_factory):
    return exported(tmp_path_factory, precision="fp16", dynamic="all")  # also the DYNAMIC=all case


@pytest.fixture(scope="module")
def fp16_server(fp16_onnx):
    with ServerProcess(fp16_onnx, "--max-batch", "8") as s:
        yield s


def _infer_as(client, x, datatype, binary):
    inp = triton.InferInput("input", list(x.shape), datatype)
    inp.set_data_from_numpy(x.astype(np.float16 if datatype == "FP16" else np.float32), binary_data=binary)
    return client.infer("rednet26", [inp], outputs=[triton.InferRequestedOutput("logits", binary_data=binary)]
                        ).as_numpy("logits")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", ["FP16", "FP32"])
def test_fp16_model_answers_fp16_and_fp32_requests(fp16_server, fp16_onnx, datatype, binary):
    client = triton.InferenceServerClient(fp16_server.url.removeprefix("http://"))
    assert client.get_model_metadata("rednet26")["inputs"][0]["datatype"] == "FP16"
    x = sample(11, batch=3)
    y = _infer_as(client, x, datatype, binary)
    expected = OnnxRuntimeBackend(fp16_onnx, intra_op_threads=1)(x.astype(np.float16))
    assert y.dtype == np.float16 and y.shape == (3, 1000)
    # the server converts to the model's FP16 exactly as astype does, so only batch composition could differ:
    # allow 4 fp16 ulps of the largest logit
    np.testing.assert_allclose(y.astype(np.float32), expected.astype(np.float32), rtol=0,
                               atol=4 * float(np.spacing(np.abs(expected).max())))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_fp32_model_answers_fp16_requests(server, direct, binary):
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    x16 = sample(12, batch=2).astype(np.float16)
    np.testing.assert_allclose(_infer_as(client, x16, "FP16", binary), direct(x16.astype(np.float32)),
                               rtol=1e-5, atol=1e-6)


def test_zero_or_tiny_spatial_size_on_a_dynamic_model_is_400(fp16_server):
    with httpx.Client(base_url=fp16_server.url, timeout=60) as client:
        for h, w in ((0, 0), (SIZE, 0), (8, 8)):
            body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, h, w],
                                           "data": [0.0] * (3 * h * w)}]})
            assert_error(client.post("/v2/models/rednet26/infer", content=body), 400, f"[1, 3, {h}, {w}]", "at least 32")
        body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 40, 48],
                                       "data": [0.0] * (3 * 40 * 48)}]})
        assert client.post("/v2/models/rednet26/infer", content=body).json()["outputs"][0]["shape"] == [1, 1000]


# --- graceful shutdown ------------------------------------------------------------------------------------------

def test_sigterm_drains_and_every_accepted_request_gets_a_response(onnx_path):
    """After SIGTERM: readiness false at once, in-flight requests finish with 200, a request arriving on an open
    keep-alive connection gets 503 + Connection: close (never a reset), then the server stops. A client that sent
    a request and got no response fails the test; only a refused connection (never accepted) is not a failure."""
    s = ServerProcess(onnx_path, "--max-batch", "4", "--max-delay-ms", "10", drain_s=3.0).wait_ready()
    results, failures, sigterm = [], [], threading.Event()

    def work(seed):
        x = sample(seed)
        body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                                       "data": x.ravel().tolist()}]}).encode()
        with httpx.Client(timeout=60) as client:
            while True:
                try:
                    r = client.post(f"{s.url}/v2/models/rednet26/infer", content=body)
                except httpx.ConnectError:
                    return  # refused: the listener was closed, the request never reached the server
                except httpx.HTTPError as e:
                    failures.append(repr(e))  # accepted, no response
                    return
                results.append((seed, sigterm.is_set(), r.status_code, r.headers.get("connection")))
                if r.status_code == 503:
                    return  # told to go elsewhere
    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    while len(results) < 40 and not failures:
        time.sleep(0.05)
    sigterm.set()  # before the signal, so that every response the drain produced is seen after it
    s.proc.send_signal(signal.SIGTERM)
    ready, live = None, None
    while ready != 503:  # the drain starts as soon as the signal is handled
        ready = httpx.get(f"{s.url}/v2/health/ready", timeout=30).status_code
    live = httpx.get(f"{s.url}/v2/health/live", timeout=30).status_code
    for t in threads:
        t.join(120)
    code = s.stop(signal.SIGTERM)
    assert not failures, failures
    assert (ready, live) == (503, 200)
    assert all(after for _, after, status, _ in results if status == 503)  # no 503 before the signal
    assert {status for *_, status, _ in results} <= {200, 503}
    assert all(conn == "close" for *_, status, conn in results if status == 503)
    last = {seed: status for seed, _, status, _ in results}
    assert sorted(last) == list(range(8)) and set(last.values()) == {503}, last  # every client was told, none cut
    # uvicorn re-raises SIGTERM after its graceful shutdown, so the exit status is the signal's
    assert code in (0, -signal.SIGTERM) and '"event": "stopped"' in s.output()
