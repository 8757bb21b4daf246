"""The HTTP service (FastAPI on uvicorn): KServe v2 REST routes, an image classification route, Prometheus
metrics, bearer-token access, one body limit, dynamic batching, readiness after load + warm-up, graceful drain.

The event loop only moves bytes: parsing and image decoding run in a bounded pool of worker processes
(workers.py), the backend on its own thread (batcher.py), so liveness and readiness answer while the server works."""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

import rednet
from export.exporter import MIN_DYNAMIC_SIZE

from ..backends import create_backend
from .batcher import BackendError, DynamicBatcher, QueueFull
from .images import image_to_input
from .protocol import BINARY_HEADER, ProtocolError, TensorSpec, infer_response, parse_infer
from .workers import WorkerCrashed, WorkerPool

log = logging.getLogger("rednet.serve")
OPEN_ROUTES = ("/v2/health/live", "/v2/health/ready")
UNMATCHED_ROUTE = "unmatched"  # the metrics label of every path no route template matches
IMAGENET_LABELS = Path(__file__).with_name("imagenet_classes.txt")  # where it comes from: imagenet_classes.md


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
    max_request_samples: int | None = None  # samples one request may carry; default max_batch
    max_image_pixels: int = 40_000_000     # decoded pixels of one upload (checked from the header)
    workers: int = 2                       # worker processes for parsing and image decoding
    drain_s: float = 2.0                   # after SIGTERM: not ready, 503 + Connection: close, then stop
    token: str | None = None
    threads: int | None = None
    labels: str | None = None          # a text file, one class name per line (default: ImageNet-1k for 1000 classes)

    def __post_init__(self):
        if self.max_request_samples is None:
            self.max_request_samples = self.max_batch

    def validate(self) -> None:
        rednet.get_entry(self.model)
        if self.backend not in ("onnxruntime", "tensorrt"):
            raise ValueError(f"backend '{self.backend}' is not one of onnxruntime, tensorrt")
        for name in ("max_batch", "max_queue", "max_body_bytes", "max_request_samples", "max_image_pixels",
                     "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.max_delay_ms < 0 or self.timeout_ms <= 0 or self.drain_s < 0:
            raise ValueError(f"max_delay_ms={self.max_delay_ms} and drain_s={self.drain_s} must be >= 0 and "
                             f"timeout_ms={self.timeout_ms} > 0")

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
        self.requests = Counter("rednet_requests", "HTTP requests by route template and status code",
                                ["route", "code"], registry=self.registry)
        self.latency = Histogram("rednet_request_latency_seconds", "request latency by route template", ["route"],
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10),
                                 registry=self.registry)
        self.batch_size = Histogram("rednet_batch_size", "samples per backend call",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)
        self.backend_seconds = Histogram("rednet_backend_seconds", "backend time per batch", registry=self.registry)
        self.queue_depth = Gauge("rednet_queue_depth", "requests waiting for the backend", registry=self.registry)
        self.backend_errors = Counter("rednet_backend_errors", "backend failures", registry=self.registry)
        self.samples_computed = Counter("rednet_samples_computed", "samples run by the backend",
                                        registry=self.registry)
        self.samples_delivered = Counter("rednet_samples_delivered",
                                         "computed samples whose caller was still waiting", registry=self.registry)


def _labels(config: ServeConfig, classes: int) -> list[str] | None:
    if config.labels:
        return Path(config.labels).read_text().splitlines()
    default = IMAGENET_LABELS.read_text().splitlines()
    return default if rednet.get_entry(config.model).task == "classification" and classes == len(default) else None


class ModelService:
    """The served model: backend, signature, preprocessing, batcher; ready once loaded and warmed up."""

    def __init__(self, config: ServeConfig, metrics: Metrics):
        self.config, self.metrics = config, metrics
        self.ready = False
        self.draining = False
        self.load_error: str | None = None
        proto = onnx.load(str(config.onnx_path), load_external_data=False)
        meta = {p.key: p.value for p in proto.metadata_props}
        dims = lambda v: [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]  # noqa: E731
        elem = proto.graph.input[0].type.tensor_type.elem_type
        self.input = TensorSpec(proto.graph.input[0].name, "FP16" if elem == onnx.TensorProto.FLOAT16 else "FP32",
                                [-1, *dims(proto.graph.input[0])[1:]], min_size=MIN_DYNAMIC_SIZE)
        self.output = TensorSpec(proto.graph.output[-1].name, self.input.datatype, [-1, *dims(proto.graph.output[-1])[1:]])
        self.preprocess = json.loads(meta.get("rednet.preprocess", "null")) or dict(rednet.get_entry(config.model).preprocess)
        self.labels = _labels(config, self.output.shape[-1])
        self.backend = None
        self.pool = WorkerPool(config.workers)
        self.batcher = DynamicBatcher(self._run, config.max_batch, config.max_delay_ms, config.max_queue,
                                      on_batch=self._observe)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self.backend(batch)
        except Exception:
            self.metrics.backend_errors.inc()
            raise

    def _observe(self, computed: int, delivered: int, seconds: float) -> None:
        self.metrics.batch_size.observe(computed)
        self.metrics.backend_seconds.observe(seconds)
        self.metrics.samples_computed.inc(computed)
        self.metrics.samples_delivered.inc(delivered)

    def load(self) -> None:
        """Blocking: start the worker processes, build the backend and run one warm-up batch."""
        c = self.config
        self.pool.warm_up()
        if c.backend == "onnxruntime":
            self.backend = create_backend("onnxruntime", onnx_model=c.onnx_path, intra_op_threads=c.threads)
        else:
            self.backend = create_backend("tensorrt", engine=c.engine_path)
        h, w = (d if d > 0 else self.preprocess["input_size"] for d in self.input.shape[2:])
        self.backend(np.zeros((1, 3, h, w), dtype=self.input.dtype))

    @property
    def serving(self) -> bool:
        """Readiness: loaded, warmed up and not draining."""
        return self.ready and not self.draining

    def metadata(self) -> dict:
        return {"name": self.config.model, "versions": ["1"], "platform": f"rednet_{self.config.backend}",
                "inputs": [self.input.metadata()], "outputs": [self.output.metadata()],
                "parameters": {"preprocess": self.preprocess}}

    def model_config(self) -> dict:
        """Triton's model configuration (what tritonclient's get_model_config reads)."""
        tensor = lambda spec: {"name": spec.name, "data_type": f"TYPE_{spec.datatype}", "dims": spec.shape[1:]}  # noqa: E731
        return {"name": self.config.model, "versions": ["1"],
                "platform": "onnxruntime_onnx" if self.config.backend == "onnxruntime" else "tensorrt_plan",
                "max_batch_size": self.config.max_request_samples,
                "input": [{**tensor(self.input), "format": "FORMAT_NCHW"}], "output": [tensor(self.output)],
                "dynamic_batching": {"max_queue_delay_microseconds": round(self.config.max_delay_ms * 1000),
                                     "preferred_batch_size": [self.config.max_batch]},
                "parameters": {"preprocess": {"string_value": json.dumps(self.preprocess)}}}

    @property
    def crop(self) -> int:
        return self.preprocess["input_size"] if self.input.shape[2] <= 0 else self.input.shape[2]


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class BodyTooLarge(Exception):
    pass


class Guard:
    """Pure ASGI middleware in front of every route: route-template metrics, the bearer token, the one body
    limit (Content-Length and the bytes actually received, whatever the route or encoding) and the drain."""

    def __init__(self, app, router, config: ServeConfig, service: ModelService, metrics: Metrics):
        self.app, self.router, self.config, self.service, self.metrics = app, router, config, service, metrics
        self.token = config.token.encode() if config.token else None

    def route_template(self, scope) -> str:
        partial = None
        for route in self.router.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route.path
            if match is Match.PARTIAL and partial is None:
                partial = route.path  # right path, wrong method (405)
        return partial or UNMATCHED_ROUTE

    def authorised(self, headers: dict) -> bool:
        scheme, _, credentials = headers.get(b"authorization", b"").partition(b" ")
        # the scheme is case-insensitive (RFC 7235); the token is compared in constant time
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self.token)

    def refusal(self, scope, headers: dict) -> JSONResponse | None:
        path = scope["path"]
        if self.token and path not in OPEN_ROUTES and not self.authorised(headers):
            return _error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        if self.service.draining and path not in OPEN_ROUTES:
            return _error(503, "the server is shutting down", {"Retry-After": "1"})
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.config.max_body_bytes):
            return _error(413, f"request body of {length.decode('latin-1')!r} bytes exceeds the limit of "
                               f"{self.config.max_body_bytes} bytes (--max-body-mb)")
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        route, status, received = self.route_template(scope), 500, 0
        limit = self.config.max_body_bytes

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(f"request body exceeds the limit of {limit} bytes (--max-body-mb)")
            return message

        async def send_with_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if self.service.draining:  # the client should not send more on this connection
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        refusal = self.refusal(scope, dict(scope["headers"]))
        try:
            if refusal is not None:
                await refusal(scope, receive, send_with_status)
            else:
                await self.app(scope, limited_receive, send_with_status)
        finally:  # also when an unexpected error escapes (the outer middleware answers it with a 500)
            seconds = time.perf_counter() - t0
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(seconds)
            log.info(json.dumps({"event": "request", "method": scope["method"], "route": route, "status": status,
                                 "ms": round(seconds * 1e3, 2)}))


def _validation_message(exc: RequestValidationError) -> str:
    return "; ".join(f"{' '.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')} (got {e.get('input')!r})"
                     for e in exc.errors())


async def _wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


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
        service.pool.shutdown()
        log.info(json.dumps({"event": "stopped"}))

    app = FastAPI(title="rednet-deploy inference service (KServe v2)", version=rednet.__version__, lifespan=lifespan)
    app.state.service, app.state.metrics = service, metrics

    # every error, the framework's included, is {"error": ...}
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return _error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}", exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return _error(422, _validation_message(exc))

    @app.exception_handler(ProtocolError)
    async def protocol_error(request: Request, exc: ProtocolError):
        return _error(exc.status, str(exc))

    @app.exception_handler(BodyTooLarge)
    async def body_too_large(request: Request, exc: BodyTooLarge):
        return _error(413, str(exc), {"Connection": "close"})

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect):
        return _error(499, "client closed the request")  # nobody reads it; keeps the log free of tracebacks

    @app.exception_handler(WorkerCrashed)
    async def worker_crashed(request: Request, exc: WorkerCrashed):
        return _error(500, str(exc))

    def require_model(name: str) -> None:
        if name != config.model:
            raise HTTPException(404, f"unknown model '{name}'; this server serves '{config.model}'")

    def check_model(name: str) -> None:
        require_model(name)
        if not service.ready:
            raise HTTPException(503, "model is not ready yet" if not service.load_error else
                                f"model failed to load: {service.load_error}", {"Retry-After": "1"})

    async def run(request: Request, batch: np.ndarray) -> np.ndarray | JSONResponse:
        """The batch's outputs, or the error response; a client that disconnects takes its request out of the
        queue (uvicorn does not cancel the handler, so the disconnect is watched here)."""
        result = asyncio.ensure_future(service.batcher.submit(batch, config.timeout_ms / 1000))
        gone = asyncio.ensure_future(_wait_for_disconnect(request))
        try:
            await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not result.done():
                result.cancel()
        if result.cancelled():
            return _error(499, "client closed the request")
        try:
            return result.result()
        except QueueFull as e:
            return _error(503, str(e), {"Retry-After": "1"})
        except asyncio.TimeoutError:
            return _error(504, f"inference did not finish within {config.timeout_ms:.0f} ms (--timeout-ms)")
        except BackendError as e:
            log.error(json.dumps({"event": "backend_error", "error": str(e)}))
            return _error(500, "the backend failed on this batch (details in the server log)")

    @app.get("/v2/health/live")
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready():
        return JSONResponse({"ready": service.serving}, status_code=200 if service.serving else 503)

    @app.get("/v2")
    async def server_metadata():
        return {"name": "rednet-deploy", "version": rednet.__version__, "extensions": ["binary_tensor_data"]}

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str = "1"):
        require_model(name)
        return service.metadata()

    @app.get("/v2/models/{name}/config")
    @app.get("/v2/models/{name}/versions/{version}/config")
    async def model_config(name: str, version: str = "1"):
        require_model(name)
        return service.model_config()

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str = "1"):
        require_model(name)
        return JSONResponse({"name": name, "ready": service.serving}, status_code=200 if service.serving else 503)

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str = "1"):
        check_model(name)
        parsed = await service.pool.run(parse_infer, await request.body(), request.headers.get(BINARY_HEADER),
                                        service.input, service.output.name, config.max_request_samples)
        result = await run(request, parsed.array)
        if isinstance(result, JSONResponse):
            return result
        content, headers = infer_response(name, parsed, service.output.name, result)
        return Response(content, headers=headers)

    @app.post("/v2/models/{name}/classify")
    async def classify(name: str, request: Request, top_k: int = 5):
        """An image (multipart field 'image' / 'file', or the raw body) in; top-k classes with scores out."""
        check_model(name)
        classes = service.output.shape[-1]
        if not 1 <= top_k <= classes:
            raise ProtocolError(f"top_k={top_k} must be between 1 and {classes}")
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form(max_files=1, max_fields=8)
            upload = form.get("image") or form.get("file")
            if upload is None or isinstance(upload, str):
                raise ProtocolError("multipart upload needs a file field named 'image' (or 'file')")
            data = await upload.read()
        else:
            data = await request.body()
        batch = await service.pool.run(image_to_input, data, service.preprocess, service.crop,
                                       config.max_image_pixels, service.input.dtype.name)
        result = await run(request, batch)
        if isinstance(result, JSONResponse):
            return result
        logits = result[0].astype(np.float64)
        if not np.isfinite(logits).all():
            raise ProtocolError("the model's output for this image is not finite")
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        best = np.argsort(-probs, kind="stable")[:top_k]
        return {"model_name": name, "top_k": [
            {"class_id": int(i), "label": service.labels[i] if service.labels and i < len(service.labels) else str(int(i)),
             "score": float(probs[i])} for i in best]}

    @app.get("/metrics")
    async def prometheus():
        metrics.queue_depth.set(service.batcher.depth)
        text = await asyncio.to_thread(generate_latest, metrics.registry)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(Guard, router=app.router, config=config, service=service, metrics=metrics)
    return app
