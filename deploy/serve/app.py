"""The HTTP service (FastAPI on uvicorn): KServe v2 REST routes, an image classification route, Prometheus
metrics, bearer-token access, body size limit, dynamic batching, readiness after load + warm-up, graceful drain."""
from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

import rednet

from ..backends import create_backend
from .batcher import BackendError, DynamicBatcher, QueueFull
from .protocol import BINARY_HEADER, ProtocolError, TensorSpec, infer_response, parse_infer

log = logging.getLogger("rednet.serve")
OPEN_ROUTES = ("/v2/health/live", "/v2/health/ready")


class BodyTooLarge(Exception):
    pass


@dataclass
class ServeConfig:
    model: str
    backend: str = "onnxruntime"
    onnx: str | None = None            # default artifacts/<model>.onnx
    engine: str | None = None          # tensorrt: default artifacts/<model>.fp32.plan
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 8
    max_delay_ms: float = 5.0
    max_queue: int = 256
    timeout_ms: float = 30000.0
    max_body_bytes: int = 64 << 20
    token: str | None = None
    threads: int | None = None
    labels: str | None = None          # a text file, one class name per line

    def validate(self) -> None:
        rednet.get_entry(self.model)
        if self.backend not in ("onnxruntime", "tensorrt"):
            raise ValueError(f"backend '{self.backend}' is not one of onnxruntime, tensorrt")
        for name in ("max_batch", "max_queue", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.max_delay_ms < 0 or self.timeout_ms <= 0:
            raise ValueError(f"max_delay_ms={self.max_delay_ms} must be >= 0 and timeout_ms={self.timeout_ms} > 0")

    @property
    def engine_path(self) -> Path:
        return Path(self.engine or f"artifacts/{self.model}.fp32.plan")

    @property
    def onnx_path(self) -> Path:
        """The exported file that gives the model's signature; for a TensorRT engine, the one it was built from."""
        if self.onnx:
            return Path(self.onnx)
        sidecar = Path(str(self.engine_path) + ".json")
        if self.backend == "tensorrt" and sidecar.is_file():
            return Path(json.loads(sidecar.read_text())["onnx"])
        return Path(f"artifacts/{self.model}.onnx")


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("rednet_requests", "HTTP requests by route and status code", ["route", "code"],
                                registry=self.registry)
        self.latency = Histogram("rednet_request_latency_seconds", "request latency", ["route"],
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10),
                                 registry=self.registry)
        self.batch_size = Histogram("rednet_batch_size", "samples per backend call",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)
        self.backend_seconds = Histogram("rednet_backend_seconds", "backend time per batch", registry=self.registry)
        self.queue_depth = Gauge("rednet_queue_depth", "requests waiting for the backend", registry=self.registry)
        self.backend_errors = Counter("rednet_backend_errors", "backend failures", registry=self.registry)


class ModelService:
    """The served model: backend, signature, preprocessing, batcher; ready once loaded and warmed up."""

    def __init__(self, config: ServeConfig, metrics: Metrics):
        self.config, self.metrics = config, metrics
        self.ready = False
        self.load_error: str | None = None
        proto = onnx.load(str(config.onnx_path), load_external_data=False)
        meta = {p.key: p.value for p in proto.metadata_props}
        dims = lambda v: [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]  # noqa: E731
        elem = proto.graph.input[0].type.tensor_type.elem_type
        self.input = TensorSpec(proto.graph.input[0].name, "FP16" if elem == onnx.TensorProto.FLOAT16 else "FP32",
                                [-1, *dims(proto.graph.input[0])[1:]])
        self.output = TensorSpec(proto.graph.output[-1].name, self.input.datatype, [-1, *dims(proto.graph.output[-1])[1:]])
        self.preprocess = json.loads(meta.get("rednet.preprocess", "null")) or dict(rednet.get_entry(config.model).preprocess)
        self.labels = Path(config.labels).read_text().splitlines() if config.labels else None
        self.backend = None
        self.batcher = DynamicBatcher(self._run, config.max_batch, config.max_delay_ms, config.max_queue,
                                      on_batch=self._observe)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self.backend(batch)
        except Exception:
            self.metrics.backend_errors.inc()
            raise

    def _observe(self, size: int, seconds: float) -> None:
        self.metrics.batch_size.observe(size)
        self.metrics.backend_seconds.observe(seconds)

    def load(self) -> None:
        """Blocking: build the backend and run one warm-up batch."""
        c = self.config
        if c.backend == "onnxruntime":
            self.backend = create_backend("onnxruntime", onnx_model=c.onnx_path, intra_op_threads=c.threads)
        else:
            self.backend = create_backend("tensorrt", engine=c.engine_path)
        h, w = (d if d > 0 else self.preprocess["input_size"] for d in self.input.shape[2:])
        self.backend(np.zeros((1, 3, h, w), dtype=np.float16 if self.input.datatype == "FP16" else np.float32))

    def metadata(self) -> dict:
        return {"name": self.config.model, "versions": ["1"], "platform": f"rednet_{self.config.backend}",
                "inputs": [self.input.metadata()], "outputs": [self.output.metadata()],
                "parameters": {"preprocess": self.preprocess}}

    def image_to_input(self, data: bytes) -> np.ndarray:
        """Decode, resize the shorter side, centre-crop and normalise as recorded at export."""
        from PIL import Image, UnidentifiedImageError
        p = self.preprocess
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise ProtocolError(f"the upload is not a readable image (JPEG/PNG): {e}") from None
        if image.width * image.height > 50_000_000:
            raise ProtocolError(f"image of {image.width}×{image.height} pixels is too large")
        image = image.convert(p.get("color", "RGB"))
        crop = p["input_size"] if self.input.shape[2] <= 0 else self.input.shape[2]
        resize = round(p["resize"] * crop / p["input_size"])
        scale = resize / min(image.size)
        image = image.resize((max(crop, round(image.width * scale)), max(crop, round(image.height * scale))),
                             Image.BILINEAR)
        left, top = (image.width - crop) // 2, (image.height - crop) // 2
        pixels = np.asarray(image.crop((left, top, left + crop, top + crop)), dtype=np.float32)
        pixels = (pixels - np.array(p["mean"], np.float32)) / np.array(p["std"], np.float32)
        return pixels.transpose(2, 0, 1)[None].astype(np.float16 if self.input.datatype == "FP16" else np.float32)


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(config: ServeConfig) -> FastAPI:
    config.validate()
    metrics = Metrics()
    service = ModelService(config, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.batcher.start()

        async def load():
            try:
                await asyncio.get_running_loop().run_in_executor(None, service.load)
                service.ready = True
                log.info(json.dumps({"event": "ready", "model": config.model, "backend": config.backend}))
            except Exception as e:  # noqa: BLE001 - reported by readiness and the log
                service.load_error = f"{type(e).__name__}: {e}"
                log.error(json.dumps({"event": "load_failed", "error": service.load_error}))
        loader = asyncio.create_task(load())
        yield
        service.ready = False
        await service.batcher.stop()  # uvicorn has finished in-flight requests; drain what is queued
        loader.cancel()
        log.info(json.dumps({"event": "stopped"}))

    app = FastAPI(title="rednet-deploy inference service (KServe v2)", version=rednet.__version__, lifespan=lifespan)
    app.state.service, app.state.metrics = service, metrics

    @app.middleware("http")
    async def guard(request: Request, call_next):
        t0 = time.perf_counter()
        path = request.url.path
        route = path if path.startswith(("/v2/health", "/metrics")) else path.rsplit("/", 1)[-1] or "/"
        if config.token and path not in OPEN_ROUTES and \
                request.headers.get("authorization", "") != f"Bearer {config.token}":
            response = _error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        else:
            length = request.headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > config.max_body_bytes):
                response = _error(413, f"request body of {length} bytes exceeds the limit of {config.max_body_bytes}")
            else:
                response = await call_next(request)
        metrics.requests.labels(route, str(response.status_code)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - t0)
        metrics.queue_depth.set(service.batcher.depth)
        log.info(json.dumps({"event": "request", "method": request.method, "path": path,
                             "status": response.status_code, "ms": round((time.perf_counter() - t0) * 1e3, 2)}))
        return response

    async def read_body(request: Request) -> bytes:
        body = bytearray()
        async for chunk in request.stream():  # chunked uploads carry no Content-Length: count as they come
            body += chunk
            if len(body) > config.max_body_bytes:
                raise BodyTooLarge(f"request body exceeds the limit of {config.max_body_bytes} bytes")
        return bytes(body)

    def check_model(name: str) -> JSONResponse | None:
        if name != config.model:
            return _error(404, f"unknown model '{name}'; this server serves '{config.model}'")
        if not service.ready:
            return _error(503, "model is not ready yet" if not service.load_error else
                          f"model failed to load: {service.load_error}", {"Retry-After": "1"})
        return None

    async def run(batch: np.ndarray) -> np.ndarray | JSONResponse:
        try:
            return await service.batcher.submit(batch, config.timeout_ms / 1000)
        except QueueFull as e:
            return _error(503, str(e), {"Retry-After": "1"})
        except asyncio.TimeoutError:
            return _error(504, f"inference did not finish within {config.timeout_ms:.0f} ms")
        except BackendError as e:
            return _error(500, f"backend error: {e}")

    @app.get("/v2/health/live")
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready():
        return JSONResponse({"ready": service.ready}, status_code=200 if service.ready else 503)

    @app.get("/v2")
    async def server_metadata():
        return {"name": "rednet-deploy", "version": rednet.__version__, "extensions": ["binary_tensor_data"]}

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str = "1"):
        if name != config.model:
            return _error(404, f"unknown model '{name}'; this server serves '{config.model}'")
        return service.metadata()

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str = "1"):
        if name != config.model:
            return _error(404, f"unknown model '{name}'; this server serves '{config.model}'")
        return JSONResponse({"name": name, "ready": service.ready}, status_code=200 if service.ready else 503)

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str = "1"):
        if (problem := check_model(name)) is not None:
            return problem
        try:
            body = await read_body(request)
            parsed = parse_infer(body, request.headers.get(BINARY_HEADER), service.input, service.output.name,
                                 config.max_batch * 8)
        except BodyTooLarge as e:
            return _error(413, str(e))
        except ProtocolError as e:
            return _error(400, str(e))
        result = await run(parsed.array)
        if isinstance(result, JSONResponse):
            return result
        content, headers = infer_response(name, parsed, service.output.name, result)
        return Response(content, headers=headers)

    @app.post("/v2/models/{name}/classify")
    async def classify(name: str, request: Request, top_k: int = 5):
        """An image (multipart field 'image' / 'file', or the raw body) in; top-k classes with scores out."""
        if (problem := check_model(name)) is not None:
            return problem
        if not 1 <= top_k <= 100:
            return _error(400, f"top_k={top_k} must be between 1 and 100")
        try:
            if request.headers.get("content-type", "").startswith("multipart/form-data"):
                form = await request.form()
                upload = form.get("image") or form.get("file")
                if upload is None or isinstance(upload, str):
                    raise ProtocolError("multipart upload needs a file field named 'image' (or 'file')")
                data = await upload.read()
            else:
                data = await read_body(request)
            if not data:
                raise ProtocolError("empty upload: send a JPEG or PNG")
            batch = service.image_to_input(data)
        except BodyTooLarge as e:
            return _error(413, str(e))
        except ProtocolError as e:
            return _error(400, str(e))
        result = await run(batch)
        if isinstance(result, JSONResponse):
            return result
        logits = result[0].astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        best = np.argsort(-probs)[:top_k]
        return {"model_name": name, "top_k": [
            {"class_id": int(i), "label": service.labels[i] if service.labels and i < len(service.labels) else str(int(i)),
             "score": float(probs[i])} for i in best]}

    @app.get("/metrics")
    async def prometheus():
        metrics.queue_depth.set(service.batcher.depth)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
