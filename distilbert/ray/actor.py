"""The actor that runs a pipeline on batches of rows, and `predict`: a Dataset through a pool of them.

A user's mistake on a worker (a model folder the node cannot see, a column that holds no text) leaves the actor
as a WorkerError and reaches the driver as one: an exception object inside Ray's wrappers, never only as
traceback text (job.explain finds it).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pyarrow as pa
import ray

from .. import tasks
from ..errors import UserError
from .schema import OUTPUTS, strings
from .shipping import ShippedModel

ROWS_PER_CALL = 16  # model batches handed to an actor per call: enough texts for length grouping to pay off


class WorkerError(UserError):
    """A UserError raised on a worker, on its way to the driver. Ray sends it whole, pickled (the `cause` of its
    RayTaskError); its message is kept apart from `args`, to which Ray Data appends notes of its own (its
    retries), so that it stays the one line the user is shown."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class Predictor:
    """A callable class for `Dataset.map_batches(..., batch_format="pyarrow")`: one pipeline per actor.

    ONNX Runtime by default, with as many threads as the CPUs Ray gave the actor. Each call takes a batch
    of rows and returns them with the task's columns added (OUTPUTS).
    """

    def __init__(self, task: str, model: str | ShippedModel, column: str = "text", pair_column: str | None = None,
                 backend: str | None = "onnx", precision: str = "fp32", batch_size: int = 32,
                 options: dict | None = None):
        from ..pipelines import pipeline

        self.task = tasks.get(task).name
        self.column, self.pair_column, self.options = column, pair_column, dict(options or {})
        self.pipe, self.failed = None, None  # failed: why the pipeline could not start, raised by every call
        folder = model.folder() if isinstance(model, ShippedModel) else model
        threads = max(1, round(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
        try:
            self.pipe = pipeline(self.task, model=folder, backend=backend, precision=precision, threads=threads,
                                 batch_size=batch_size, **self.options)
        except UserError as e:
            # Raised here, it would kill the actor, and Ray reports an actor that died starting as text alone
            # (ActorDiedError keeps its creation task's traceback as a string). Raised by the first call instead,
            # it reaches the driver whole: the `cause` of that task's RayTaskError.
            message = f"on worker node {socket.gethostname()}: {e}"
            if isinstance(model, str) and not Path(model).expanduser().exists():
                message += (" (the model folder must be on a path every node sees, or go through the object store:"
                            " --ship-model)")
            self.failed = message

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.failed is not None:
            raise WorkerError(self.failed)
        try:
            texts = strings(batch, self.column)
            pairs = strings(batch, self.pair_column) if self.pair_column else None
            for name, values in OUTPUTS[self.task](self.pipe, texts, pairs).items():
                batch = batch.append_column(name, values)
        except UserError as e:
            raise WorkerError(str(e)) from None
        return batch


def predict(ds: ray.data.Dataset, task: str, model: str | ShippedModel, column: str = "text",
            pair_column: str | None = None, num_actors: int = 1, cpus_per_actor: float = 1, batch_size: int = 32,
            backend: str | None = "onnx", precision: str = "fp32", actor: type[Predictor] = Predictor,
            **options) -> ray.data.Dataset:
    """`ds` with the task's columns added by a pool of `num_actors` actors (lazy, like every Dataset step).

    batch_size: texts per forward pass; each actor call takes ROWS_PER_CALL of them and groups them by length.
    options go to the pipeline (feature-extraction: pooling, normalize; token-classification:
    aggregation_strategy, stride).
    """
    spec = tasks.get(task)
    if spec.name not in OUTPUTS:
        raise UserError(f"{spec.name} has no Ray output; expected one of {', '.join(OUTPUTS)}")
    kwargs = dict(task=spec.name, model=model, column=column, pair_column=pair_column, backend=backend,
                  precision=precision, batch_size=batch_size, options=options)
    return ds.map_batches(actor, fn_constructor_kwargs=kwargs, batch_size=batch_size * ROWS_PER_CALL,
                          batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=num_actors),
                          num_cpus=cpus_per_actor)
