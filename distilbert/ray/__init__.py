"""Pipelines over a Ray cluster: `Dataset.map_batches` with an actor pool that loads the model once per actor.

The only package that imports Ray (the `ray` extra: ray[data], pyarrow, pandas).

    ds = ray.data.read_parquet("texts.parquet")
    ds = predict(ds, "feature-extraction", "./model-onnx", num_actors=8)    # + an `embedding` column
    ds.write_parquet("out.parquet")

or the whole job, read -> map -> write, as `distilbert embed INPUT --ray --output OUT.parquet` runs it:

    run_job("feature-extraction", "texts.jsonl", "out.parquet", model="./model-onnx", column="text")

Every input column is kept, in the input's order, and the task adds its own (OUTPUTS). A killed actor is
restarted by Ray and its batches run again.

    schema.py    what each task adds to a row (Arrow types), the text columns it reads
    shipping.py  the model the workers open: by path, or through the object store (ship)
    actor.py     Predictor (one pipeline per actor) and predict (a Dataset through a pool of them)
    job.py       run_job: read, predict, write in order; worker errors as one line
    cluster.py   connect: join a cluster or start a local Ray
"""

from .actor import ROWS_PER_CALL, Predictor, WorkerError, predict
from .cluster import OBJECT_STORE_BYTES, connect
from .job import FORMATS, Summary, check_columns, explain, read, run_job
from .schema import GROUPED_ENTITY, OUTPUTS, TOKEN_ENTITY
from .shipping import ShippedModel, ship

__all__ = ["FORMATS", "GROUPED_ENTITY", "OBJECT_STORE_BYTES", "OUTPUTS", "Predictor", "ROWS_PER_CALL",
           "ShippedModel", "Summary", "TOKEN_ENTITY", "check_columns", "connect", "explain", "predict", "read",
           "run_job", "ship", "WorkerError"]
