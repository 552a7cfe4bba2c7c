"""The server: loads the model once, then answers TEI, OpenAI and Hugging Face Inference API routes.

    create_app(Settings(model="./distilbert-onnx"))   # a FastAPI app, the model loaded
    run(settings, host, port, workers)                # uvicorn, with graceful shutdown on SIGTERM / SIGINT

Handlers only validate, tokenise (the pipeline's `preprocess`), await the batching worker (`forward`),
then `postprocess` and serialise. A gate in front of every route answers what needs no route: 503 while
shutting down, 401 without the API key, 413 for a body over the payload limit. No torch is imported here:
with the ONNX backend the server runs in the torch-free install.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from .. import tasks
from ..errors import UserError
from ..pipelines.base import Job
from .batcher import Batcher, Timing
from .metrics import Metrics
from .schemas import ApiError, validation_message

log = logging.getLogger("distilbert.serve")
SETTINGS_ENV = "DISTILBERT_SERVE_SETTINGS"  # how `run` hands the settings to worker processes
UNCOUNTED = ("/metrics", "/health", "/docs", "/openapi.json", "/docs/oauth2-redirect")
FORM = b"application/x-www-form-urlencoded"  # what curl -d calls a body
DTYPES = {"fp32": "float32", "int8": "int8", "bf16": "bfloat16"}


@dataclass
class Settings:
    model: str
    task: str | None = None  # default: the head the checkpoint carries
    backend: str | None = None
    precision: str = "fp32"
    compile: bool = False  # torch backend: torch.compile the network at start-up
    threads: int | None = None
    max_batch_tokens: int = 1024
    max_concurrent_requests: int = 512
    max_client_batch_size: int = 32
    payload_limit: int = 2_000_000
    api_key: str | None = None
    pooling: str | None = None  # embeddings: default the model's sentence-transformers pooling, else mean
    graceful_timeout: float = 30.0  # seconds in-flight requests get to finish after SIGTERM


@dataclass
class Meta:
    """What TEI reports about a request in its response headers."""

    start: float
    tokenization: float
    timing: Timing
    tokens: int
    characters: int

    def headers(self) -> dict[str, str]:
        total = str(int((time.perf_counter() - self.start) * 1000))
        return {
            "x-compute-type": "cpu",
            "x-compute-time": total,
            "x-compute-characters": str(self.characters),
            "x-compute-tokens": str(self.tokens),
            "x-total-time": total,
            "x-tokenization-time": str(int(self.tokenization * 1000)),
            "x-queue-time": str(int(self.timing.queue * 1000)),
            "x-inference-time": str(int(self.timing.inference * 1000)),
        }


class Server:
    """The model, its batching worker, the limits and the counters: one per process."""

    def __init__(self, settings: Settings):
        from ..backends import load_backend
        from ..tokenizer import Tokenizer

        if settings.pooling not in (None, "cls", "mean", "max"):
            raise UserError(f"unknown pooling {settings.pooling!r}; expected one of cls, mean, max")
        self.settings = settings
        # Every PyTorch operation runs on this one thread, loading included. An OpenMP runtime (PyTorch's libgomp)
        # keeps a team of threads for each thread that has run a parallel region; with more of those threads
        # than cores, its workers sleep between regions instead of spinning: a PyTorch forward then made about
        # 200 sleeps and wake-ups and took 5 ms longer than in a process that had one team.
        self.inference = ThreadPoolExecutor(1, thread_name_prefix="distilbert-inference")
        try:
            engine = self.inference.submit(load_backend, settings.model, settings.task, settings.backend,
                                           threads=settings.threads, precision=settings.precision,
                                           compile=settings.compile).result()
        except BaseException:
            self.inference.shutdown()
            raise
        self.task = engine.task
        tokenizer = Tokenizer.from_pretrained(engine.folder, config=engine.config)
        # The batcher groups; the pipeline's own grouping must then keep each group whole.
        self.pipe = tasks.TASKS[self.task].pipeline_class()(
            engine, tokenizer, batch_size=settings.max_batch_tokens, max_batch_tokens=settings.max_batch_tokens)
        self.pooling = settings.pooling or getattr(self.pipe, "pooling", None) or "mean"
        self.name = str(settings.model)
        self.metrics = Metrics()
        self.batcher = Batcher(self.pipe, settings.max_batch_tokens, self.inference, self.metrics)
        self.inputs_in_flight = 0
        self.requests_in_flight = 0
        self.draining = False
        self.paths: set[str] = set()

    # --- what handlers call -------------------------------------------------------------------

    def require(self, task: str, route: str) -> None:
        """A route that does not fit the model answers 424, as TEI answers /predict on an embedding model."""
        if self.task != task:
            raise ApiError(424, "Backend", f"{route} needs a {task} model, and this server runs {self.name} as "
                           f"{self.task}: use POST / (the Hugging Face Inference API) or start the server with a "
                           f"{task} model", "model_type")

    def check_batch(self, inputs: list, field: str = "inputs") -> None:
        if not inputs:
            raise ApiError(400, "Empty", f"`{field}` cannot be empty", "validation")
        limit = self.settings.max_client_batch_size
        if len(inputs) > limit:
            raise ApiError(413, "Validation", f"batch size {len(inputs)} > maximum allowed batch size {limit} "
                           "(--max-client-batch-size): send fewer inputs per request", "batch_size")

    def check_length(self, texts: list[str], pairs: list[str | None] | None = None) -> None:
        """With truncate: false, a text over the model's maximum is refused (413) instead of cut."""
        limit = self.pipe.max_length
        pairs = pairs or [None] * len(texts)
        for i, (text, pair) in enumerate(zip(texts, pairs)):
            enc = self.pipe.tokenizer(text, pair, truncation=True, max_length=limit + 1)
            if len(enc["input_ids"]) > limit:
                raise ApiError(413, "Validation", f"input {i} is longer than the model's maximum of {limit} tokens: "
                               "shorten it, or send truncate: true to have it cut", "validation")

    async def run(self, count: int, characters: int, preprocess: Callable[[], Job]) -> tuple[Any, Meta]:
        """Admit `count` inputs, tokenise them, wait for the model, post-process: the pipeline's answer."""
        limit = self.settings.max_concurrent_requests
        if self.inputs_in_flight + count > limit:
            raise ApiError(429, "Overloaded", f"model is overloaded: {self.inputs_in_flight} inputs in flight and "
                           f"the limit is {limit} (--max-concurrent-requests); retry later", "overloaded")
        self.inputs_in_flight += count
        self.metrics.in_flight.inc(count)
        start = time.perf_counter()
        try:
            try:
                job = preprocess()
            except UserError as e:
                raise ApiError(422, "Validation", str(e), "tokenization") from None
            except (TypeError, ValueError) as e:  # a parameter of the wrong kind, e.g. targets: 5
                raise ApiError(422, "Validation", f"invalid parameters: {e}", "validation") from None
            tokenized = time.perf_counter()
            try:
                outputs, timing = await self.batcher.submit(job.features)
            except Exception as e:
                log.exception("inference failed")
                raise ApiError(500, "Backend", f"inference failed: {type(e).__name__}: {e}", "inference") from None
            result = self.pipe.postprocess(job, outputs)
        finally:
            self.inputs_in_flight -= count
            self.metrics.in_flight.dec(count)
        meta = Meta(start, tokenized - start, timing, sum(len(f) for f in job.features), characters)
        m = self.metrics
        m.duration.observe(time.perf_counter() - start)
        m.tokenization.observe(meta.tokenization)
        m.queue.observe(timing.queue)
        m.inference.observe(timing.inference)
        m.input_length.observe(meta.tokens)
        return result, meta

    def info(self) -> dict:
        config = self.pipe.config
        if self.task == "text-classification":
            model_type = {"classifier": {"id2label": {str(i): label for i, label in sorted(config.id2label.items())}}}
        elif self.task == "feature-extraction":
            model_type = {"embedding": {"pooling": self.pooling}}
        else:
            model_type = {self.task.replace("-", "_"): {}}
        s = self.settings
        return {
            "model_id": self.name, "model_sha": None, "model_dtype": DTYPES.get(s.precision, s.precision),
            "served_model_name": self.name, "model_type": model_type, "task": self.task,
            "backend": type(self.pipe.backend).__name__.removesuffix("Backend").lower(),
            "max_concurrent_requests": s.max_concurrent_requests, "max_input_length": self.pipe.max_length,
            "max_batch_tokens": s.max_batch_tokens, "max_batch_requests": None,
            "max_client_batch_size": s.max_client_batch_size, "payload_limit": s.payload_limit,
            "auto_truncate": True, "tokenization_workers": 1, "version": _version(), "sha": None, "docker_label": None,
        }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("distilbert")
    except PackageNotFoundError:
        return "0"


async def server_of(request: Request) -> Server:
    """The route's dependency. `async`: FastAPI would run a plain `def` on its thread pool, a thread hop per request."""
    return request.app.state.server


def respond(data: Any, meta: Meta | None = None) -> Response:
    """JSON through orjson, not FastAPI's encoder: numpy arrays written straight from their buffer, float32 as
    the shortest text that reads back to the same float32 (as TEI writes them). 0.03 ms for a 768-wide embedding,
    against 0.6 ms through `json` and Python floats, and 40% fewer bytes."""
    body = orjson.dumps(data, default=_plain, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    return Response(body, media_type="application/json", headers=meta.headers() if meta else None)


def _plain(value):
    """What orjson leaves: arrays that are not C-contiguous or of a type it does not write."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def count_characters(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(count_characters(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(count_characters(v) for v in value)
    return 0


# --- the gate in front of every route ----------------------------------------------------------


class Gate:
    """Pure ASGI middleware: 503 while draining, 401 without the key, 413 over the payload limit, and the
    request counters (by route; failures by reason)."""

    def __init__(self, app, server: Server):
        self.app, self.server = app, server
        self.key = f"Bearer {server.settings.api_key}".encode() if server.settings.api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        server, path = self.server, scope["path"]
        counted = path not in UNCOUNTED
        route = path if path in server.paths else "/pipeline/{task}" if path.startswith("/pipeline/") else "other"
        if counted:
            server.metrics.requests.labels(route).inc()
        headers = dict(scope["headers"])
        if scope["method"] == "POST" and headers.get(b"content-type", FORM) == FORM:
            # every body here is JSON: read it as JSON whatever the client (curl -d) calls it
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                     + [(b"content-type", b"application/json")]}
        refusal = None
        if server.draining:
            refusal = ApiError(503, "Unhealthy", "the server is shutting down; retry elsewhere or later", "shutdown")
        elif self.key is not None and path != "/health" and not hmac.compare_digest(
                headers.get(b"authorization", b""), self.key):
            refusal = ApiError(401, "Unauthorized", "missing or wrong API key: send the header "
                               "'Authorization: Bearer KEY'", "unauthorized")
        else:
            length = headers.get(b"content-length")
            limit = server.settings.payload_limit
            if length is not None and length.isdigit() and int(length) > limit:
                refusal = _too_large(int(length), limit)
            elif length is None and scope["method"] in ("POST", "PUT", "PATCH"):
                body, refusal = await _read_limited(receive, limit)
                if refusal is None:
                    receive = _replay(body)
        if refusal is not None:
            server.metrics.failures.labels(refusal.reason).inc()
            response = JSONResponse(refusal.body(), refusal.status,
                                    headers={"connection": "close"} if refusal.status == 503 else None)
            return await response(scope, receive, send)

        async def send_counted(message):
            if message["type"] == "http.response.start" and counted:
                if message["status"] < 400:
                    server.metrics.successes.labels(route).inc()
                else:
                    reason = scope.get("state", {}).get("failure_reason") or f"http_{message['status']}"
                    server.metrics.failures.labels(reason).inc()
            await send(message)

        server.requests_in_flight += 1
        try:
            await self.app(scope, receive, send_counted)
        finally:
            server.requests_in_flight -= 1


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(413, "Validation", f"the body is {size} bytes, over the payload limit of {limit} bytes "
                    "(--payload-limit): send fewer or shorter inputs per request", "payload_limit")


async def _read_limited(receive, limit: int):
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"", ApiError(400, "Validation", "the client went away", "disconnected")
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > limit:
            return b"", _too_large(size, limit)
        if not message.get("more_body"):
            return b"".join(chunks), None


def _replay(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


# --- the app -----------------------------------------------------------------------------------


def create_app(settings: Settings | None = None, server: Server | None = None) -> FastAPI:
    """A FastAPI app serving `settings.model` (loaded now, once)."""
    from . import hf, openai, tei

    server = server or Server(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        server.batcher.start()
        restore = _drain_on_signals(server)
        try:
            yield
        finally:
            restore()
            await server.batcher.stop()

    app = FastAPI(title="distilbert serve", version=_version(), lifespan=lifespan,
                  description=f"{server.name} as {server.task}: text-embeddings-inference routes, OpenAI "
                              "embeddings and the Hugging Face Inference API.")
    app.state.server = server
    for family in (tei, openai, hf):
        app.include_router(family.router)
        server.paths.update(route.path for route in family.router.routes)  # the labels /metrics counts by

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        request.state.failure_reason = e.reason
        return JSONResponse(e.body(), e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, e: RequestValidationError):
        request.state.failure_reason = "validation"
        return JSONResponse({"error": validation_message(e.errors()), "error_type": "Validation"}, 422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        request.state.failure_reason = f"http_{e.status_code}"
        message = e.detail if isinstance(e.detail, str) else json.dumps(e.detail)
        if e.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /docs for the routes"
        return JSONResponse({"error": message, "error_type": "Validation"}, e.status_code, headers=e.headers)

    @app.exception_handler(Exception)
    async def failure(request: Request, e: Exception):
        log.exception("unexpected error")
        return JSONResponse({"error": f"internal error: {type(e).__name__}: {e}", "error_type": "Backend"}, 500)

    app.add_middleware(Gate, server=server)
    return app


def app_from_environment() -> FastAPI:
    """The app factory each worker process calls (uvicorn --workers): settings from the environment."""
    return create_app(Settings(**json.loads(os.environ[SETTINGS_ENV])))


def _drain_on_signals(server: Server) -> Callable[[], None]:
    """SIGTERM / SIGINT: answer new requests 503, let the ones in flight finish, then hand the signal to uvicorn.

    A second signal is handed on at once. Signals reach the main thread only; elsewhere nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.getsignal(sig) for sig in signals}

    def hand_on(sig, frame=None):
        handler = previous[sig]
        if callable(handler):
            handler(sig, frame)
        else:
            signal.signal(sig, handler)
            signal.raise_signal(sig)

    async def drain(sig):
        deadline = time.monotonic() + server.settings.graceful_timeout
        while server.requests_in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        log.warning("in-flight requests answered; shutting down")
        hand_on(sig)

    def on_signal(sig, frame):
        if server.draining:
            return hand_on(sig, frame)
        server.draining = True
        log.warning("signal %s: finishing %d request(s) in flight, answering new ones 503", sig,
                    server.requests_in_flight)
        loop.call_soon_threadsafe(lambda: loop.create_task(drain(sig)))

    for sig in signals:
        signal.signal(sig, on_signal)

    def restore():
        for sig, handler in previous.items():
            if signal.getsignal(sig) is on_signal:
                signal.signal(sig, handler)

    return restore


def run(settings: Settings, host: str = "127.0.0.1", port: int = 8080, workers: int = 1,
        log_level: str = "warning") -> None:
    """Serve until SIGTERM / SIGINT. Several workers: one process each, the cores shared out among them."""
    import uvicorn

    from ..backends.onnx import usable_cores

    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if settings.threads is None:
        settings.threads = max(1, usable_cores() // workers)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # numpy's BLAS: the same share
        os.environ.setdefault(var, str(settings.threads))
    # keep-alive past uvicorn's 5 s: a client reusing a connection the server just closed gets a transport error
    common = dict(host=host, port=port, log_level=log_level, timeout_keep_alive=75,
                  timeout_graceful_shutdown=int(settings.graceful_timeout) + 5)
    if workers == 1:
        app = create_app(settings)
        uvicorn.Server(uvicorn.Config(app, **common)).run()
        return
    import tempfile

    Server(settings)  # fail here, once, with a clear message (and export the ONNX cache once, not per worker)
    os.environ[SETTINGS_ENV] = json.dumps(asdict(settings))
    with tempfile.TemporaryDirectory(prefix="distilbert-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        uvicorn.run("distilbert.serve.app:app_from_environment", factory=True, workers=workers, **common)
