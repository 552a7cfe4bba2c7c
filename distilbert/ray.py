"""Pipelines over a Ray cluster: `Dataset.map_batches` with an actor pool that loads the model once per actor.

The only module that imports Ray (the `ray` extra: ray[data], pyarrow, pandas).

    ds = ray.data.read_parquet("texts.parquet")
    ds = predict(ds, "feature-extraction", "./model-onnx", num_actors=8)    # + an `embedding` column
    ds.write_parquet("out.parquet")

or the whole job, read -> map -> write, as `distilbert embed INPUT --ray --output OUT.parquet` runs it:

    run_job("feature-extraction", "texts.jsonl", "out.parquet", model="./model-onnx", column="text")

Every input column is kept, in the input's order, and the task adds its own (OUTPUTS). A killed actor is
restarted by Ray and its batches run again. The driver writes the output as the blocks arrive, in order
(Ray's `preserve_order`), one file per block named by its place (part-000000000.parquet, ...): Ray's own
writer numbers files by write task, and those numbers did not always follow the rows' order.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Read by Ray when it is imported: repeated worker log lines are folded into one
os.environ.setdefault("RAY_DEDUP_LOGS", "1")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import ray  # noqa: E402

from . import tasks  # noqa: E402
from .errors import UserError, first_line  # noqa: E402

ROWS_PER_CALL = 16  # model batches handed to an actor per call: enough texts for length grouping to pay off
OBJECT_STORE_BYTES = 500 * 2**20  # of a local Ray: streaming keeps a few blocks in flight, not the data set
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "json", ".json": "json", ".ndjson": "json"}


# --- what each task adds to a row ---------------------------------------------------------------------


def _embedding(pipe, texts: list[str], pairs) -> dict[str, pa.Array]:
    pooling = pipe.pooling or "mean"  # as `distilbert embed` decides
    vectors = np.ascontiguousarray(np.atleast_2d(pipe(texts, pooling=pooling)), dtype=np.float32)  # (rows, dim)
    offsets = pa.array(np.arange(0, vectors.size + 1, vectors.shape[1], dtype=np.int32))
    return {"embedding": pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1)))}


def _label(pipe, texts: list[str], pairs) -> dict[str, pa.Array]:
    items = texts if pairs is None else [{"text": t, "text_pair": p} for t, p in zip(texts, pairs)]
    results = pipe(items)
    return {"label": pa.array([r["label"] for r in results], pa.string()),
            "score": pa.array([r["score"] for r in results], pa.float64())}


# transformers' keys, in its order: per token without aggregation, per group of tokens with it
TOKEN_ENTITY = {"entity": pa.string(), "score": pa.float64(), "index": pa.int64(), "word": pa.string(),
                "start": pa.int64(), "end": pa.int64()}
GROUPED_ENTITY = {"entity_group": pa.string(), "score": pa.float64(), "word": pa.string(), "start": pa.int64(),
                  "end": pa.int64()}


def _entities(pipe, texts: list[str], pairs) -> dict[str, pa.Array]:
    results = pipe(texts)
    # one type for every batch, those without a single entity too, so the Parquet files share one schema
    fields = TOKEN_ENTITY if getattr(pipe, "aggregation_strategy", "none") in (None, "none") else GROUPED_ENTITY
    rows = [[{k: _plain(e.get(k)) for k in fields} for e in row] for row in results]
    return {"entities": pa.array(rows, pa.list_(pa.struct(list(fields.items()))))}


def _answer(pipe, texts: list[str], pairs) -> dict[str, pa.Array]:
    if pairs is None:
        raise UserError("question answering needs a question column and a context column (pair_column)")
    results = pipe(question=texts, context=list(pairs))
    results = [results] if isinstance(results, dict) else results
    return {"answer": pa.array([r["answer"] for r in results], pa.string()),
            "score": pa.array([float(r["score"]) for r in results], pa.float64()),
            "start": pa.array([int(r["start"]) for r in results], pa.int64()),
            "end": pa.array([int(r["end"]) for r in results], pa.int64())}


OUTPUTS: dict[str, Callable[..., dict[str, pa.Array]]] = {
    "feature-extraction": _embedding,
    "text-classification": _label,
    "token-classification": _entities,
    "question-answering": _answer,
}


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


# --- the model on the workers --------------------------------------------------------------------------


@dataclass(frozen=True)
class ShippedModel:
    """A model folder sent through Ray's object store: its files, unpacked once per node."""

    name: str
    digest: str
    files: Any  # ObjectRef of {relative path: bytes}

    def folder(self) -> Path:
        target = Path(tempfile.gettempdir()) / "distilbert-ray" / f"{self.name}-{self.digest[:16]}"
        if (target / "config.json").is_file():
            return target
        staging = target.with_name(f".{target.name}.{os.getpid()}")
        for relative, data in ray.get(self.files).items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        try:
            os.replace(staging, target)  # whole or not at all; another actor on this node may have won
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
        return target


def ship(folder: str | Path) -> ShippedModel:
    """Put every file of a local model folder into the object store (one copy; each node fetches it once)."""
    folder = Path(folder)
    files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    digest = hashlib.sha256()
    for relative, data in files.items():
        digest.update(relative.encode() + b"\0" + hashlib.sha256(data).digest())
    return ShippedModel(folder.name, digest.hexdigest(), ray.put(files))


class Predictor:
    """A callable class for `Dataset.map_batches(..., batch_format="pyarrow")`: one pipeline per actor.

    ONNX Runtime by default, with as many threads as the CPUs Ray gave the actor. Each call takes a batch
    of rows and returns them with the task's columns added (OUTPUTS).
    """

    def __init__(self, task: str, model: str | ShippedModel, column: str = "text", pair_column: str | None = None,
                 backend: str | None = "onnx", precision: str = "fp32", batch_size: int = 32,
                 options: dict | None = None):
        from .pipelines import pipeline

        self.task = tasks.get(task).name
        self.column, self.pair_column, self.options = column, pair_column, dict(options or {})
        folder = model.folder() if isinstance(model, ShippedModel) else model
        threads = max(1, round(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
        try:
            self.pipe = pipeline(self.task, model=folder, backend=backend, precision=precision, threads=threads,
                                 batch_size=batch_size, **self.options)
        except UserError as e:
            message = f"on worker node {socket.gethostname()}: {e}"
            if isinstance(model, str) and not Path(model).expanduser().exists():
                message += (" (the model folder must be on a path every node sees, or go through the object store:"
                            " --ship-model)")
            raise UserError(message) from None

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = _strings(batch, self.column)
        pairs = _strings(batch, self.pair_column) if self.pair_column else None
        for name, values in OUTPUTS[self.task](self.pipe, texts, pairs).items():
            batch = batch.append_column(name, values)
        return batch


def _strings(batch: pa.Table, column: str) -> list[str]:
    values = batch.column(column).to_pylist()
    if any(not isinstance(v, str) for v in values):
        bad = next(v for v in values if not isinstance(v, str))
        raise UserError(f"column {column!r} holds {type(bad).__name__} values ({bad!r}); it must hold text")
    return values


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


# --- the whole job --------------------------------------------------------------------------------------


def read(path: str, column: str | None = None, blocks: int | None = None, blank_lines: bool = True
         ) -> ray.data.Dataset:
    """A text file (one text a line, column `text`; blank lines kept or not), JSON lines, or Parquet (a file or
    a folder). blocks: how many blocks to read it into (default: Ray's choice)."""
    kind = _format(path)
    if kind == "text" and column not in (None, "text"):
        raise UserError(f"{path} is read as a text file, whose one column is 'text'; --column is for JSONL and Parquet")
    light = {"num_cpus": 0, "override_num_blocks": blocks}  # reading leaves the CPUs to the actors
    try:
        if kind == "parquet":
            return ray.data.read_parquet(path, **light)
        if kind == "json":
            return ray.data.read_json(path, lines=True, **light)
        # the lines `distilbert embed FILE` reads (a UTF-8 BOM dropped), or `classify` and `ner` (blank ones too)
        ds = ray.data.read_text(path, encoding="utf-8-sig", drop_empty_lines=False, **light)
        return ds if blank_lines else ds.map_batches(_without_blank_lines, batch_format="pyarrow", num_cpus=0)
    except (OSError, ValueError, pa.ArrowException) as e:  # a file that is not what its name says
        raise _unreadable(path, e) from None


def _without_blank_lines(batch: pa.Table) -> pa.Table:
    import pyarrow.compute as pc

    return batch.filter(pc.invert(pc.match_substring_regex(batch.column("text"), r"^\s*$")))


def check_columns(ds: ray.data.Dataset, path: str, *columns: str | None) -> None:
    try:
        names = ds.schema().names
    except Exception as e:  # noqa: BLE001 - any reader error: the file is not what its name says
        raise _unreadable(path, e) from None
    for column in columns:
        if column is not None and column not in names:
            raise UserError(f"column {column!r} is not in {path} (its columns: {', '.join(names)}); pass --column NAME")


@dataclass
class Summary:
    rows: int | None
    seconds: float
    actors: int
    cpus_per_actor: float
    output: str

    def __str__(self) -> str:
        rows = "?" if self.rows is None else f"{self.rows:,}"
        rate = "" if self.rows is None else f", {self.rows / self.seconds:,.1f} rows/s"
        return (f"wrote {rows} rows to {self.output} in {self.seconds:.1f} s{rate}, "
                f"{self.actors} actor(s) of {self.cpus_per_actor:g} CPU")


def run_job(task: str, input: str, output: str, model: str, column: str | None = None,
            pair_column: str | None = None, address: str | None = None, num_actors: int | None = None,
            cpus_per_actor: float = 1, batch_size: int = 32, backend: str | None = "onnx", precision: str = "fp32",
            ship_model: bool = False, blocks: int | None = None, blank_lines: bool = True,
            num_cpus: int | None = None, actor: type[Predictor] = Predictor,
            log: Callable[[str], None] = lambda line: print(line, file=sys.stderr), **options) -> Summary:
    """Read INPUT, add the task's columns on a pool of actors, write OUTPUT as a Parquet folder, in order.

    address: None starts a local Ray (connect(): num_cpus for the actors, default this machine's cores), "auto"
    joins the cluster this machine belongs to, "ray://host:10001" one elsewhere. An initialised Ray is used.
    num_actors: default, as many as the cluster's CPUs allow at cpus_per_actor each, one CPU left for Ray Data.
    ship_model: send the model folder through the object store instead of opening it by path on every node.
    blocks, blank_lines: as read() takes them; actor: a Predictor subclass.
    """
    input, output = _local_path(input), _local_path(output)
    _check_input(input)
    _check_output(output)
    model = _local_path(model) if Path(model).expanduser().exists() else model
    column = column or "text"
    started = connect(address, num_cpus)
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # output rows in input order
        # progress as bars on a terminal, else nothing; a failure is raised here, not logged with its traceback
        context.enable_progress_bars = sys.stderr.isatty()
        logging.getLogger("ray.data").setLevel(logging.CRITICAL)
        # one CPU stays free: Ray Data lists Parquet files in a task of one CPU that cannot be made smaller
        free = ray.cluster_resources().get("CPU", 1) - 1
        if num_actors is None:
            num_actors = max(1, int(free // cpus_per_actor))
        if num_actors * cpus_per_actor > free:
            raise UserError(f"{num_actors} actor(s) of {cpus_per_actor:g} CPU need {num_actors * cpus_per_actor:g} "
                            f"CPUs and one more for Ray Data's own tasks; this cluster has {free + 1:g}: ask for fewer")
        source = _prepare_model(model, task, backend, precision) if ship_model or Path(model).exists() else model
        if ship_model:
            source = ship(source)
        ds = read(input, column, blocks, blank_lines)
        check_columns(ds, input, column, pair_column)
        ds = predict(ds, task, source, column, pair_column, num_actors, cpus_per_actor, batch_size, backend,
                     precision, actor, **options)
        start = time.perf_counter()
        try:
            _write_in_order(ds, output)
        except Exception as e:  # noqa: BLE001 - a worker's error arrives wrapped; find the user's mistake in it
            raise _explain(e, input) from None
        summary = Summary(_count_rows(output), time.perf_counter() - start, num_actors, cpus_per_actor, output)
    finally:
        if started:
            ray.shutdown()
    log(str(summary))
    return summary


def _write_in_order(ds: ray.data.Dataset, output: str) -> None:
    """The dataset's rows, in order, into part-NNNNNNNNN.parquet files under `output` (a local folder or a
    URI pyarrow can write to); an earlier run's part files there are replaced."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    if "://" in output:
        fs, root = pafs.FileSystem.from_uri(output)
    else:
        fs, root = pafs.LocalFileSystem(), str(Path(output).resolve())
    fs.create_dir(root, recursive=True)
    for info in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True)):
        if info.base_name.startswith("part-") and info.base_name.endswith(".parquet"):
            fs.delete_file(info.path)
    written = 0
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        if batch.num_rows:
            pq.write_table(batch, f"{root}/part-{written:09d}.parquet", filesystem=fs)
            written += 1


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join the cluster at `address`, or start a local Ray (quiet, on 127.0.0.1, a small object store) whose
    actors may use num_cpus (default: this machine's cores), plus one logical CPU for Ray Data's own tasks.
    Nothing when Ray is already initialised. True when this call connected (the caller then shuts Ray down)."""
    if ray.is_initialized():
        return False
    quiet = dict(logging_level=logging.ERROR, log_to_driver=False, include_dashboard=False)
    try:
        if address is None:
            from .backends.onnx import usable_cores

            ray.init(num_cpus=(num_cpus or usable_cores()) + 1, object_store_memory=OBJECT_STORE_BYTES,
                     _node_ip_address="127.0.0.1", **quiet)
        else:
            quiet.pop("include_dashboard")
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UserError(f"cannot reach the Ray cluster at {address or 'a new local Ray'} ({first_line(e, 1000)}); "
                        "start one with `ray start --head` or check --address") from None
    return True


def _prepare_model(model: str, task: str, backend: str | None, precision: str) -> str:
    """The folder the workers open: an exported folder as it is; a PyTorch checkpoint exported once, here,
    rather than by every actor at the same time (backends.export_cache)."""
    from .backends.choice import locate
    from .backends.export_cache import cached_export

    choice, folder = locate(model, backend, precision, task=tasks.get(task).name)
    if choice.export or choice.cached:
        folder = cached_export(folder, tasks.get(task).name, choice.graph, create=True)
    return str(folder)


def _format(path: str) -> str:
    if Path(path).is_dir():
        return "parquet"
    return FORMATS.get(Path(path).suffix.lower(), "text")


def _local_path(path: str) -> str:
    return path if "://" in path else str(Path(path).expanduser().absolute())  # workers have other cwds


def _check_input(path: str) -> None:
    if "://" in path:
        return
    if not Path(path).exists():
        raise UserError(f"input file {path} does not exist")
    if Path(path).is_dir() and not any(Path(path).rglob("*.parquet")):
        raise UserError(f"input {path} is a folder without Parquet files; give a text, JSONL or Parquet file")


def _check_output(path: str) -> None:
    """A new folder, or one holding only an earlier run's part files (which it replaces)."""
    if "://" in path:
        return
    out = Path(path)
    if out.is_file():
        raise UserError(f"--output {path} is a file; --ray writes a Parquet folder, so name a new one")
    if not out.parent.exists():
        raise UserError(f"cannot write {path}: folder {out.parent} does not exist")
    if out.is_dir() and any(not (p.name.startswith("part-") and p.suffix == ".parquet") for p in out.iterdir()):
        raise UserError(f"--output {path} is a folder with other files in it; name a new folder")


def _count_rows(output: str) -> int | None:
    """From the files' footers; None where this machine cannot see the output (a client of a remote cluster)."""
    import pyarrow.dataset as pds

    try:
        return sum(f.metadata.num_rows for f in pds.dataset(output, format="parquet").get_fragments())
    except (OSError, pa.ArrowException):
        return None


def _unreadable(path: str, error: BaseException) -> UserError:
    cause = _root(error)
    if isinstance(cause, UserError):
        return cause
    first = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]
    return UserError(f"cannot read {path} as {_format(path) if _format(path) != 'json' else 'JSON lines'} "
                     f"({type(cause).__name__}: {first}); check the file")


def _explain(error: BaseException, input: str) -> UserError:
    """One line for whatever a worker raised: our UserError as it is, a reader's error as an unreadable file."""
    cause = _root(error)
    if isinstance(cause, UserError):
        return cause
    if isinstance(cause, (pa.ArrowException, UnicodeDecodeError, OSError, ValueError)):
        return _unreadable(input, cause)
    first = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:300]
    return UserError(f"the Ray job failed ({type(cause).__name__}: {first})")


def _root(error: BaseException) -> BaseException:
    """What a worker raised, under Ray's wrappers (RayTaskError, ActorDiedError, Ray Data's SystemException):
    a UserError where there is one (as an object, or only as its traceback's text), else the innermost error."""
    chain: list[BaseException] = []
    while isinstance(error, BaseException) and all(error is not e for e in chain) and len(chain) < 20:
        chain.append(error)
        error = getattr(error, "cause", None) or error.__cause__ or error.__context__
    for e in chain:  # a RayTaskError(UserError) is both; its own text is the whole traceback
        if isinstance(e, UserError) and not isinstance(e, ray.exceptions.RayError):
            return e
    for e in chain:
        found = _user_error_in(str(e))
        if found is not None:
            return found
    return next((e for e in reversed(chain) if str(e).strip() and not isinstance(e, ray.exceptions.RayError)), chain[0])


def _user_error_in(text: str) -> UserError | None:
    """A UserError's message from a worker's traceback text (where Ray kept only the text)."""
    marker = "UserError: "
    if marker not in text:
        return None
    return UserError(text.rsplit(marker, 1)[1].strip().splitlines()[0])
