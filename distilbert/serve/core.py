"""The server's core, which every route family imports: the settings, the model, admission and batching, the
one error type and the one way to answer.

    server = Server(Settings(model="./distilbert-onnx"))   # the pipeline loaded, once
    result, meta = await server.run(len(texts), characters, lambda: server.pipe.preprocess(texts), truncate)
    return respond(result, meta)

A request's inputs are admitted (429 past --max-concurrent-requests), tokenised on the tokenisation thread
(the pipeline's `preprocess`; the event loop only accepts and answers), run by the batching worker in
batches it groups across requests (`pipe.forward_batch`, on the one inference thread), then post-processed.
No torch is imported here: with the ONNX backend the server runs in the torch-free install.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from fastapi.responses import Response

from ..errors import UserError
from ..pipelines.base import Job
from .batcher import Batcher, Timing
from .metrics import Metrics
from .schemas import Limits

log = logging.getLogger("distilbert.serve")
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
    # Tokenising threads. One: the tokenizer serialises its calls (truncation is state of the Rust tokenizer),
    # so a second thread would only wait for the first; what matters is that the event loop does not tokenise.
    tokenization_workers: int = 1


class ApiError(Exception):
    """An answer other than 200: the status, TEI's error type, a one-line message, and the reason /metrics counts."""

    def __init__(self, status: int, error_type: str, message: str, reason: str = "validation"):
        super().__init__(message)
        self.status, self.error_type, self.message, self.reason = status, error_type, message, reason

    def body(self) -> dict[str, str]:
        return {"error": self.message, "error_type": self.error_type}


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
    """The pipeline, its batching worker, the limits and the counters: one per process."""

    def __init__(self, settings: Settings):
        from ..pipelines import pipeline

        if settings.pooling not in (None, "cls", "mean", "max"):
            raise UserError(f"unknown pooling {settings.pooling!r}; expected one of cls, mean, max")
        if settings.tokenization_workers < 1:
            raise UserError(f"tokenization_workers must be at least 1, got {settings.tokenization_workers}")
        self.settings = settings
        # Every PyTorch operation runs on this one thread, loading included. An OpenMP runtime (PyTorch's libgomp)
        # keeps a team of threads for each thread that has run a parallel region; with more of those threads
        # than cores, its workers sleep between regions instead of spinning: a PyTorch forward then made about
        # 200 sleeps and wake-ups and took 5 ms longer than in a process that had one team.
        self.inference = ThreadPoolExecutor(1, thread_name_prefix="distilbert-inference")
        try:
            # the batcher groups rows of many requests under max_batch_tokens; each group then runs whole
            # (forward_batch), so the pipeline's own batch size plays no part here
            self.pipe = self.inference.submit(
                pipeline, settings.task, settings.model, backend=settings.backend, threads=settings.threads,
                precision=settings.precision, compile=settings.compile,
                max_batch_tokens=settings.max_batch_tokens).result()
        except BaseException:
            self.inference.shutdown()
            raise
        self.task = self.pipe.task
        self.tokenization = ThreadPoolExecutor(settings.tokenization_workers, thread_name_prefix="distilbert-tokenize")
        self.pooling = settings.pooling or getattr(self.pipe, "pooling", None) or "mean"
        self.name = str(settings.model)
        self.metrics = Metrics()
        self.batcher = Batcher(self.pipe, settings.max_batch_tokens, self.inference, self.metrics)
        self.limits = Limits(task=self.task, batch=settings.max_client_batch_size,
                             vocab_size=self.pipe.tokenizer.vocab_size, dim=self.pipe.config.dim,
                             max_length=self.pipe.max_length, mask_token=self.pipe.tokenizer.mask_token,
                             api_key=bool(settings.api_key))
        self.inputs_in_flight = 0
        self.requests_in_flight = 0
        self.draining = False
        self.paths: set[str] = set()

    async def start(self) -> None:
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()  # shuts the inference thread down
        self.tokenization.shutdown(wait=True)

    def close(self) -> None:
        """A server that never started: its threads shut down."""
        self.inference.shutdown()
        self.tokenization.shutdown()

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

    def texts_of(self, inputs: str | list[str]) -> list[str]:
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        self.check_batch(texts)
        return texts

    def check_dimensions(self, dimensions: int | None) -> None:
        dim = self.pipe.config.dim
        if dimensions is not None and dimensions != dim:
            raise ApiError(422, "Validation", f"dimensions: this model's embeddings have {dim} dimensions and "
                           f"cannot be cut to {dimensions}; leave dimensions out")

    async def off_loop(self, work: Callable[[], Any]) -> Any:
        """Tokenizer work (tokenise, decode) on the tokenisation thread, so the event loop keeps answering."""
        return await asyncio.get_running_loop().run_in_executor(self.tokenization, work)

    async def run(self, count: int, characters: int, preprocess: Callable[[], Job],
                  truncate: bool | None = None) -> tuple[Any, Meta]:
        """Admit `count` inputs, tokenise them, wait for the model, post-process: the pipeline's answer.

        truncate False: an input the pipeline had to cut to the model's maximum is refused (413); the
        tokenisation that found it is the only one.
        """
        limit = self.settings.max_concurrent_requests
        if self.inputs_in_flight + count > limit:
            raise ApiError(429, "Overloaded", f"model is overloaded: {self.inputs_in_flight} inputs in flight and "
                           f"the limit is {limit} (--max-concurrent-requests); retry later", "overloaded")
        self.inputs_in_flight += count
        self.metrics.in_flight.inc(count)
        start = time.perf_counter()
        try:
            try:
                job = await self.off_loop(preprocess)
            except UserError as e:
                raise ApiError(422, "Validation", str(e), "tokenization") from None
            except (TypeError, ValueError) as e:  # a parameter of the wrong kind, e.g. targets: 5
                raise ApiError(422, "Validation", f"invalid parameters: {e}", "validation") from None
            if truncate is False and job.truncated:
                raise ApiError(413, "Validation", f"input {job.truncated[0]} is longer than the model's maximum of "
                               f"{self.pipe.max_length} tokens: shorten it, or send truncate: true to have it cut",
                               "validation")
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
            "auto_truncate": True, "tokenization_workers": s.tokenization_workers, "version": version(),
            "sha": None, "docker_label": None,
        }


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version as installed

    try:
        return installed("distilbert")
    except PackageNotFoundError:
        return "0"


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
