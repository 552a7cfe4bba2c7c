"""The batching worker: one per model. Handlers tokenise and await; the worker forms the batches.

Every row waiting when the model frees up is drained at once, grouped by `batching.group` (longest first,
at most `max_batch_tokens` padded tokens a batch, the pipeline's own limit on padding) and run group by group
through `pipe.forward_batch` (one padded batch each, never split again) on one inference thread. While a
batch runs, the event loop keeps accepting and the tokenisation thread tokenising, so the next drain is ready
when the inference thread frees. Each drain runs whole before the next, so no row waits behind rows that
arrived after it; a request is answered as soon as its last row is done.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .. import batching
from ..pipelines.base import Feature, Pipeline


@dataclass
class Timing:
    queue: float = 0.0  # seconds from submission to the start of the request's first batch
    inference: float = 0.0  # seconds from then to the end of its last batch


@dataclass
class _Request:
    features: list[Feature]
    future: asyncio.Future
    submitted: float
    outputs: list = field(default_factory=list)
    remaining: int = 0
    started: float | None = None


class Batcher:
    def __init__(self, pipe: Pipeline, max_batch_tokens: int, executor: ThreadPoolExecutor, metrics=None):
        """executor: the one inference thread, the one the model was loaded on (the server's)."""
        self.pipe, self.max_batch_tokens, self.metrics = pipe, max_batch_tokens, metrics
        self.pending: list[tuple[_Request, int]] = []  # (request, row index)
        self.executor = executor
        self.wakeup: asyncio.Event | None = None
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.wakeup = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run(), name="distilbert-batcher")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()

    async def submit(self, features: list[Feature]) -> tuple[list[dict], Timing]:
        """The model's outputs for these rows, in order, once every one has run."""
        if not features:
            return [], Timing()
        request = _Request(features, asyncio.get_running_loop().create_future(), time.perf_counter(),
                           [None] * len(features), len(features))
        self.pending.extend((request, i) for i in range(len(features)))
        self._gauge()
        self.wakeup.set()
        await request.future
        end = time.perf_counter()
        return request.outputs, Timing(request.started - request.submitted, end - request.started)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.pending:
                rows, self.pending = self.pending, []
                self._gauge()
                lengths = [len(request.features[i]) for request, i in rows]
                for group in batching.group(lengths, None, self.max_batch_tokens, self.pipe.batch_cost):
                    batch = [rows[g] for g in group]
                    batch = [(request, i) for request, i in batch if not request.future.done()]  # abandoned: skip
                    if not batch:
                        continue
                    start = time.perf_counter()
                    for request, _ in batch:
                        if request.started is None:
                            request.started = start
                    features = [request.features[i] for request, i in batch]
                    seconds = None
                    try:
                        outputs, seconds = await loop.run_in_executor(self.executor, _timed, self.pipe.forward_batch,
                                                                      features)
                    except Exception as e:  # the backend failed: every request in the batch gets the error
                        for request, _ in batch:
                            if not request.future.done():
                                request.future.set_exception(e)
                        continue
                    finally:
                        self._record(features, time.perf_counter() - start if seconds is None else seconds)
                    for (request, i), output in zip(batch, outputs):
                        request.outputs[i] = output
                        request.remaining -= 1
                        if request.remaining == 0 and not request.future.done():
                            request.future.set_result(None)

    def _record(self, features: list[Feature], seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(features))
            self.metrics.batch_tokens.observe(len(features) * max(len(f) for f in features))
            self.metrics.batch_duration.observe(seconds)

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_size.set(len(self.pending))


def _timed(forward, features):
    """forward(features) and the seconds it took, timed on the inference thread: the model's own time, without
    the hand-over between threads (which the request's inference time includes)."""
    start = time.perf_counter()
    outputs = forward(features)
    return outputs, time.perf_counter() - start
