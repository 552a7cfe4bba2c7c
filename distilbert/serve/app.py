"""The app: the routes of every API family around the server's core, the error answers, and `run`.

    create_app(Settings(model="./distilbert-onnx"))   # a FastAPI app, the model loaded
    run(settings, host, port, workers)                # uvicorn, with graceful shutdown on SIGTERM / SIGINT

The core (core.py: the model, admission, batching, the one way to answer) is what the route families
(tei.py, openai.py, hf.py, and page.py: the page for a browser) import; this module only puts them together,
with the gate (gate.py) in front.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import asdict

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import UserError
from . import hf, openai, page, tei
from .core import ApiError, Server, Settings, version
from .gate import KEYLESS, Gate
from .schemas import Error, validation_message

log = logging.getLogger("distilbert.serve")
SETTINGS_ENV = "DISTILBERT_SERVE_SETTINGS"  # how `run` hands the settings to worker processes


def create_app(settings: Settings | None = None, server: Server | None = None) -> FastAPI:
    """A FastAPI app serving `settings.model` (loaded now, once)."""
    server = server or Server(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await server.start()
        restore = _drain_on_signals(server)
        try:
            yield
        finally:
            restore()
            await server.stop()

    app = FastAPI(title="distilbert serve", version=version(), lifespan=lifespan,
                  description=f"{server.name} as {server.task}: text-embeddings-inference routes, OpenAI "
                              "embeddings and the Hugging Face Inference API. Every answer other than 200 is "
                              '{"error": "...", "error_type": "..."}.')
    app.state.server = server
    routes = []
    for family in (tei, openai, hf, page):
        router = family.routes(server)
        app.include_router(router)
        routes += router.routes
    server.paths.update(route.path for route in routes)  # the labels /metrics counts by
    app.openapi = lambda: document(app, server)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        request.state.failure_reason = e.reason
        return JSONResponse(e.body(), e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, e: RequestValidationError):
        request.state.failure_reason = "validation"
        path = request.url.path
        task = server.task if path == "/" or path.startswith("/pipeline/") else None  # the task's own inputs
        return JSONResponse({"error": validation_message(e.errors(), task), "error_type": "Validation"}, 422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        request.state.failure_reason = f"http_{e.status_code}"
        message = e.detail if isinstance(e.detail, str) else json.dumps(e.detail)
        status, headers = e.status_code, e.headers
        if isinstance(e.__cause__, UnicodeDecodeError):  # FastAPI's 400 for a body json.loads cannot decode
            message, status = f"invalid JSON: the body is not UTF-8 text ({e.__cause__.reason} at byte " \
                              f"{e.__cause__.start})", 422
            request.state.failure_reason = "validation"
        elif status == 404:
            message = f"no route {request.method} {request.url.path}; see /docs for the routes"
        elif status == 405:  # every method the path has, not only those of the first route that matched it
            headers = {"Allow": ", ".join(methods_of(routes, request.url.path))}
            message = f"{request.method} is not a method of {request.url.path}: it takes {headers['Allow']}"
        return JSONResponse({"error": message, "error_type": "Validation"}, status, headers=headers)

    @app.exception_handler(Exception)
    async def failure(request: Request, e: Exception):
        log.exception("unexpected error")
        return JSONResponse({"error": f"internal error: {type(e).__name__}: {e}", "error_type": "Backend"}, 500)

    app.add_middleware(Gate, server=server)
    return app


def document(app: FastAPI, server: Server) -> dict:
    """/openapi.json: FastAPI's, written once, with the API key's scheme when the server has one."""
    if app.openapi_schema is None:
        spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        spec.setdefault("components", {}).setdefault("schemas", {})["Error"] = Error.model_json_schema()
        if server.settings.api_key:
            spec["components"]["securitySchemes"] = {
                "key": {"type": "http", "scheme": "bearer", "description": "the server's --api-key"}}
            spec["security"] = [{"key": []}]
            for path in KEYLESS:
                spec["paths"][path]["get"]["security"] = []
        app.openapi_schema = spec
    return app.openapi_schema


def methods_of(routes: list, path: str) -> list[str]:
    """The methods the routes at `path` take, for a 405's Allow header."""
    return sorted({method for route in routes if route.path_regex.match(path) for method in route.methods})


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

    Server(settings).close()  # fail here, once, with a clear message (and export the ONNX cache once, not per worker)
    os.environ[SETTINGS_ENV] = json.dumps(asdict(settings))
    with tempfile.TemporaryDirectory(prefix="distilbert-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        uvicorn.run("distilbert.serve.app:app_from_environment", factory=True, workers=workers, **common)
