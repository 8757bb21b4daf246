"""The service under attack, as a real process started like `make serve` (the CLI in a subprocess): memory stays
within a stated bound, liveness keeps answering, metrics do not grow with user-controlled text, overload does
not compute work nobody waits for, and every bad input gets a 4xx JSON error while the server keeps serving.

Memory bound: every attack here must keep the server's resident memory (server + worker processes) within
RSS_BOUND (+200 MB) of what it used before (test_serve.MemoryWatch: it kills the server the moment it goes over,
so a regression fails fast instead of taking the machine's memory). The metrics-cardinality, token and
dynamic-size cases live in test_serve.py beside the servers they share."""
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image

from deploy.backends import create_backend
from deploy.serve.process import ServerProcess
from test_serve import RSS_BOUND, SIZE, MemoryWatch, assert_error, exported
from helpers import requires

pytestmark = requires("ort_ops")
MAX_BATCH = 4
BODY_MB = 16
MAX_PIXELS = 4_000_000
LIVENESS_BOUND_S = 0.1
INFER = "/v2/models/rednet26/infer"
CLASSIFY = "/v2/models/rednet26/classify"


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    return exported(tmp_path_factory)


@pytest.fixture(scope="module")
def server(onnx_path):
    with ServerProcess(onnx_path, "--max-batch", str(MAX_BATCH), "--max-delay-ms", "2", "--max-body-mb", str(BODY_MB),
                       "--max-image-pixels", str(MAX_PIXELS), "--workers", "2") as s:
        warm = _image("JPEG", (300, 200))
        assert httpx.post(s.url + CLASSIFY, content=warm, timeout=60).status_code == 200
        assert httpx.post(s.url + INFER, content=_json_body(3 * SIZE * SIZE), timeout=60).status_code == 200
        s.rss_after_warm_up = s.rss_bytes()
        yield s


def _image(fmt, size, seed=0):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


def png(width, height, bit_depth=8, color_type=2, rows: bytes | None = b""):
    """A PNG built by hand: any header, whatever pixel data (None: exactly the rows the header asks for, zeros)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
    if rows is None:
        channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
        rows = (b"\0" + bytes(width * channels * bit_depth // 8)) * height
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _json_body(values: int, shape=(1, 3, SIZE, SIZE)) -> bytes:
    return json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(shape),
                                   "data": [0.5] * values}]}).encode()


def _metric(server, name) -> float:
    text = httpx.get(server.url + "/metrics", timeout=30).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


# --- 1. images ------------------------------------------------------------------------------------------------

def test_image_attacks_are_refused_from_the_header_or_done_in_bounded_memory(server):
    with MemoryWatch(server), httpx.Client(base_url=server.url, timeout=120) as client:
        thin = io.BytesIO()
        Image.new("RGB", (1, 40000)).save(thin, "PNG")  # ~150 bytes; a resize of the whole image needs gigabytes
        r = client.post(CLASSIFY, content=thin.getvalue())
        assert r.status_code == 200 and len(r.json()["top_k"]) == 5, r.text
        assert_error(client.post(CLASSIFY, content=png(30000, 30000, 8, 0)), 413,
                     "30000×30000", f"limit of {MAX_PIXELS} pixels", "--max-image-pixels")
        assert_error(client.post(CLASSIFY, content=png(2001, 2000, 8, 2, rows=None)), 413, "2001×2000")
        jpeg_header = _image("JPEG", (8, 8)).replace(b"\xff\xc0\x00\x11\x08\x00\x08\x00\x08",
                                                     b"\xff\xc0\x00\x11\x08\xfd\xe8\xfd\xe8")  # SOF0: 65000×65000
        assert_error(client.post(CLASSIFY, content=jpeg_header), 413, "65000×65000")
        grey16 = io.BytesIO()
        Image.fromarray(np.full((40, 40), 60000, np.uint16)).save(grey16, "PNG")
        assert_error(client.post(CLASSIFY, content=grey16.getvalue()), 400, "16-bit", "I;16")
        assert_error(client.post(CLASSIFY, content=_image("GIF", (20, 20))), 400, "JPEG or PNG")
        assert_error(client.post(CLASSIFY, content=png(50, 50, 8, 2, rows=b"\1" * 10)), 400, "could not be decoded")
        assert_error(client.post(CLASSIFY, content=b""), 400, "empty upload")
    assert httpx.get(server.url + "/v2/health/ready").status_code == 200


def test_sixteen_bit_rgb_png_is_converted_not_clipped(server):
    rgb8 = np.random.default_rng(3).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    rows16 = b"".join(b"\0" + (row.astype(">u2") * 257).tobytes() for row in rgb8)  # v16 = v8·257 keeps the value
    buf8 = io.BytesIO()
    Image.fromarray(rgb8).save(buf8, "PNG")
    url = server.url + CLASSIFY + "?top_k=10"
    as16, as8 = httpx.post(url, content=png(40, 48, 16, 2, rows16)).json(), httpx.post(url, content=buf8.getvalue()).json()
    assert as16 == as8


# --- 2. nothing slow on the event loop ----------------------------------------------------------------------

PROBE = r"""
import http.client, json, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
conn, latencies = http.client.HTTPConnection(host, port, timeout=60), []
end = time.monotonic() + seconds
while time.monotonic() < end:
    t0 = time.perf_counter()
    conn.request("GET", "/v2/health/live")
    response = conn.getresponse()
    response.read()
    latencies.append(time.perf_counter() - t0)
    assert response.status == 200, response.status
    time.sleep(0.02)
print(json.dumps(latencies))
"""


def liveness_under_flood(server, path: str, body: bytes, senders: int = 3, seconds: float = 4.0):
    """p90 of liveness latency measured by a separate probe process (not slowed by this process's GIL) while
    `senders` clients post `body` back to back; also how many flood requests were answered meanwhile."""
    stop, answered = threading.Event(), []

    def flood():
        with httpx.Client(base_url=server.url, timeout=120) as client:
            while not stop.is_set():
                answered.append(client.post(path, content=body).status_code)
    threads = [threading.Thread(target=flood) for _ in range(senders)]
    for t in threads:
        t.start()
    try:
        while len(answered) < senders:  # the flood is under way
            time.sleep(0.05)
        before = len(answered)
        probe = subprocess.run([sys.executable, "-c", PROBE, "127.0.0.1", str(server.port), str(seconds)],
                               capture_output=True, text=True, timeout=seconds + 120)
        during = len(answered) - before
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert probe.returncode == 0, probe.stderr
    latencies = sorted(json.loads(probe.stdout))
    return latencies[int(0.9 * (len(latencies) - 1))], len(latencies), during, answered


@pytest.mark.parametrize("attack", ["image", "json"])
def test_liveness_answers_within_100_ms_during_a_flood(server, attack):
    """The one timing bound of the suite. The statistic is the 90th percentile of the probe's own latency over a
    4 s flood that keeps the server busy all along (a decode or parse on the event loop stalls most probes for
    hundreds of ms); on a loaded machine the whole measurement is taken up to three times and the best counts."""
    if attack == "image":
        path, body, status = CLASSIFY, _image("JPEG", (2000, 1500), seed=1), 200  # a real 3 MP photo-sized upload
    else:
        path, body, status = INFER, _json_body((BODY_MB - 1) * 50_000), 400  # ~15 MB of JSON, wrong length
    attempts = []
    with MemoryWatch(server):
        for _ in range(3):
            p90, probes, during, answered = liveness_under_flood(server, path, body)
            assert set(answered) == {status}, set(answered)
            assert probes >= 20 and during >= 2, (probes, during)  # the probe ran and the server was busy meanwhile
            attempts.append(p90)
            if p90 < LIVENESS_BOUND_S:
                break
    print(f"\nliveness p90 during the {attack} flood, per attempt: {[f'{a * 1e3:.1f} ms' for a in attempts]}")
    assert min(attempts) < LIVENESS_BOUND_S, f"liveness p90 per attempt (s): {attempts}"


# --- 4. one body limit, 5. bounded work per request -----------------------------------------------------------

def test_chunked_multipart_upload_cannot_bypass_the_body_limit(server):
    boundary = b"rednetboundary"

    def chunks():  # no Content-Length: the limit must count what arrives
        yield b"--" + boundary + b'\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n' \
              b"Content-Type: image/png\r\n\r\n"
        for _ in range(3 * BODY_MB * 16):
            yield b"\0" * 65536
        yield b"\r\n--" + boundary + b"--\r\n"
    with MemoryWatch(server):
        r = httpx.post(server.url + CLASSIFY, content=chunks(), timeout=120,
                       headers={"Content-Type": f"multipart/form-data; boundary={boundary.decode()}"})
    assert_error(r, 413, f"limit of {BODY_MB << 20} bytes", "--max-body-mb")
    assert httpx.get(server.url + "/v2/health/ready").status_code == 200


@pytest.mark.parametrize("encoding", ["binary", "json"])
def test_one_request_cannot_carry_more_than_the_sample_limit(server, encoding):
    n = 8 * MAX_BATCH
    x = np.zeros((n, 3, SIZE, SIZE), np.float32)
    if encoding == "binary":
        header = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                                         "parameters": {"binary_data_size": x.nbytes}}]}).encode()
        r = httpx.post(server.url + INFER, content=header + x.tobytes(),
                       headers={"Inference-Header-Content-Length": str(len(header))}, timeout=60)
    else:
        r = httpx.post(server.url + INFER, content=_json_body(x.size, x.shape), timeout=60)
    assert_error(r, 413, f"batch {n}", f"limit of {MAX_BATCH} samples", "--max-request-samples")


# --- 6. timeouts cancel work ----------------------------------------------------------------------------------

def backend_ms_per_request(onnx_path) -> float:
    """Median time of one request's inference on this machine now (the server's backend: our op library, ONNX
    Runtime's default threads), so the overload below is an overload however fast or loaded the machine is."""
    backend = create_backend("onnxruntime", onnx_model=onnx_path)
    x = np.full((1, 3, SIZE, SIZE), 0.5, np.float32)
    for _ in range(3):
        backend(x)
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        backend(x)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2] * 1e3


def test_timed_out_requests_are_not_computed(onnx_path):
    """Overload: 64 clients keep the queue ~63 requests deep at --max-batch 1 while each request may wait only ~20
    inference times (the issue's --timeout-ms 300 is no overload on a fast machine). Requests that time out leave
    the queue before the backend sees them, so computed samples exceed delivered ones by at most the few that
    timed out during their own backend call."""
    timeout_ms = max(20, round(20 * backend_ms_per_request(onnx_path)))
    with ServerProcess(onnx_path, "--max-batch", "1", "--max-delay-ms", "0", "--timeout-ms", str(timeout_ms),
                       "--max-queue", "1024") as s:
        # binary tensors: parsing is negligible, so the backend time the timeout is sized by is the server's too
        x = np.full((1, 3, SIZE, SIZE), 0.5, np.float32)
        header = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                                         "parameters": {"binary_data_size": x.nbytes}}]}).encode()
        statuses = []

        def client():
            with httpx.Client(base_url=s.url, timeout=60) as c:
                for _ in range(3):
                    statuses.append(c.post(INFER, content=header + x.tobytes(), headers={
                        "Inference-Header-Content-Length": str(len(header))}).status_code)
        threads = [threading.Thread(target=client) for _ in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        depth = _metric(s, "rednet_queue_depth")
        computed, delivered = _metric(s, "rednet_samples_computed_total"), _metric(s, "rednet_samples_delivered_total")
    print(f"\ntimeout {timeout_ms} ms, {len(statuses)} requests: {statuses.count(200)} answered, {statuses.count(504)} timed out; "
          f"{computed:.0f} samples computed, {delivered:.0f} delivered")
    assert 504 in statuses and 200 in statuses and set(statuses) <= {200, 504}, set(statuses)
    assert delivered == statuses.count(200)  # the warm-up at load calls the backend directly
    assert depth == 0
    # Timed-out requests leave the queue uncomputed. Only those whose deadline passes during their own backend
    # call (or while the result is handed over on a busy loop) are computed in vain: a minority of the timed-out
    # ones on a shared 2-core machine. Main computed every one of them (the issue: 596 computed, 12 delivered).
    assert computed - delivered <= max(3, 0.25 * statuses.count(504)), (computed, delivered, statuses.count(504))


def test_requests_whose_client_disconnected_are_not_computed(onnx_path):
    """Clients that send a request and hang up while the queue is long: their requests leave the queue when the
    connection closes, so the backend computes exactly the requests of the clients that stayed."""
    with ServerProcess(onnx_path, "--max-batch", "1", "--max-delay-ms", "0") as s:
        body = _json_body(3 * SIZE * SIZE)
        request = (f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        statuses, started = [], threading.Event()

        def stay():
            with httpx.Client(base_url=s.url, timeout=120) as c:
                for _ in range(4):
                    started.set()
                    statuses.append(c.post(INFER, content=body).status_code)
        threads = [threading.Thread(target=stay) for _ in range(24)]
        for t in threads:
            t.start()
        started.wait(60)
        deadline = time.monotonic() + 60
        while _metric(s, "rednet_queue_depth") < 8:  # a queue for the hung-up requests to wait in
            assert time.monotonic() < deadline, "the staying clients never built a queue of 8"
        for _ in range(8):
            with socket.create_connection(("127.0.0.1", s.port)) as sock:
                sock.sendall(request)  # and hang up at once
        for t in threads:
            t.join()
        computed = _metric(s, "rednet_samples_computed_total")
    print(f"\n{len(statuses)} requests stayed, 8 hung up; {computed:.0f} samples computed")
    assert statuses == [200] * 96 and computed == 96


# --- 7. every bad input is a 4xx JSON error -------------------------------------------------------------------

def _tensor_request(**extra):
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 3, SIZE, SIZE], "data": [0.0] * (3 * SIZE * SIZE)}
    return json.dumps({"inputs": [tensor], **extra}).encode()


def test_bad_inputs_that_were_500s_are_4xx_json(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        bad_output = _tensor_request(outputs=[{"name": "logits", "parameters": "binary"}])
        assert_error(client.post(INFER, content=bad_output), 400, "parameters must be an object")
        assert_error(client.post(INFER, content=_tensor_request(parameters=[1])), 400, "'parameters'")
        deep = b"[" * 100_000 + b"]" * 100_000
        assert_error(client.post(INFER, content=deep), 400, "nested too deeply")
        # the same keep-alive connection still serves
        assert client.post(INFER, content=_tensor_request()).status_code == 200
        huge = np.full((1, 3, SIZE, SIZE), 3e38, np.float32)
        for binary in (False, True):
            extra = {"parameters": {"binary_data_output": binary}}
            r = client.post(INFER, content=json.dumps({"inputs": [{"name": "input", "datatype": "FP32",
                                                                   "shape": list(huge.shape),
                                                                   "data": huge.ravel().tolist()}], **extra}))
            assert_error(r, 400, "not finite")  # never a bare NaN in the JSON
        assert_error(client.get("/no/such/route"), 404, "Not Found", "/no/such/route")
        r = client.get(INFER)
        assert_error(r, 405, "Method Not Allowed") and "POST" in r.headers["allow"]
        assert_error(client.post(CLASSIFY + "?top_k=abc", content=b"x"), 422, "top_k", "'abc'")
        assert_error(client.post(CLASSIFY + "?top_k=0", content=b"x"), 400, "top_k=0")
        assert_error(client.post(INFER.replace("rednet26", "resnet50"), content=b"{}"), 404, "unknown model")
    assert httpx.get(server.url + "/v2/health/ready").status_code == 200


# --- 9 + 12: `make serve` itself ------------------------------------------------------------------------------

def _all_cmdlines() -> list[str]:
    lines = []
    for proc in os.listdir("/proc"):
        if proc.isdigit():
            try:
                with open(f"/proc/{proc}/cmdline", "rb") as f:
                    lines.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                pass
    return lines


def test_make_serve_prints_its_address_and_keeps_the_token_off_command_lines(onnx_path, tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    token = "tok-" + os.urandom(8).hex()
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen(["make", "--no-print-directory", "serve", "MODEL=rednet26", f"ONNX={onnx_path}",
                             f"PORT={port}"], cwd=root, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "TOKEN": token, "REDNET_SERVE_THREADS": "1"}, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, open(tmp_path / "serve.log").read()
            time.sleep(0.2)
        assert httpx.get(url + "/v2/models/rednet26", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert httpx.get(url + "/v2/models/rednet26").status_code == 401
        assert not [c for c in _all_cmdlines() if token in c]  # in no process's argv (make, sh, the server)
        log.seek(0)
        assert f'"url": "{url}"' in log.read()
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(60)
    refused = subprocess.run(["make", "-n", "serve", "MODEL=rednet26", f"TOKEN={token}"], cwd=root,
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "visible in ps" in refused.stderr


def test_memory_after_the_attack_suite_is_back_within_bound(server):
    """Runs last in this module: what the attacks above left behind in the shared server."""
    rss = server.rss_bytes()
    print(f"\nserver RSS after warm-up {server.rss_after_warm_up / 2**20:.0f} MiB, after the attack suite "
          f"{rss / 2**20:.0f} MiB")
    assert rss - server.rss_after_warm_up < RSS_BOUND
    assert httpx.get(server.url + "/v2/health/ready").status_code == 200
