"""The whole job, read -> predict -> write, as `distilbert embed INPUT --ray --output OUT.parquet` runs it.

The driver writes the output as the blocks arrive, in order (Ray's `preserve_order`), one file per block named
by its place (part-000000000.parquet, ...): Ray's own writer numbers files by write task, and those numbers did
not always follow the rows' order. Whatever fails on the workers arrives as one line (`explain`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import ray

from ..errors import UserError, first_line
from .actor import Predictor, predict
from .cluster import connect
from .shipping import prepare, ship

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "json", ".json": "json", ".ndjson": "json"}


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
        # a UDF's error as it was raised (the `cause` of Ray's RayTaskError, an object), not wrapped in a
        # UserCodeException whose own cause is lost on its way to the driver, but for its traceback's text
        context.raise_original_map_exception = True
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
        source = prepare(model, task, backend, precision) if ship_model or Path(model).exists() else model
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
            raise explain(e, input) from None
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


# --- paths ---------------------------------------------------------------------------------------------------


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


# --- errors --------------------------------------------------------------------------------------------------


def explain(error: BaseException, input: str) -> UserError:
    """One line for whatever a worker raised: our UserError as it is, a reader's error as an unreadable file."""
    cause = cause_of(error)
    if isinstance(cause, UserError):
        return cause
    if isinstance(cause, (pa.ArrowException, UnicodeDecodeError, OSError, ValueError)):
        return _unreadable(input, cause)
    return UserError(f"the Ray job failed ({type(cause).__name__}: {first_line(cause, 300)})")


def cause_of(error: BaseException) -> BaseException:
    """What a worker raised, as an object, under Ray's wrappers (RayTaskError keeps it as `cause`; Ray Data chains
    its own exceptions with `__cause__`): the first UserError in the chain, else the innermost error with a
    message. A RayTaskError(UserError) is both kinds at once, but its own text is the whole traceback: the one
    wanted is its `cause`."""
    chain: list[BaseException] = []
    while isinstance(error, BaseException) and all(error is not e for e in chain) and len(chain) < 20:
        chain.append(error)
        error = getattr(error, "cause", None) or error.__cause__ or error.__context__
    wrappers = ray.exceptions.RayError
    for e in chain:
        if isinstance(e, UserError) and not isinstance(e, wrappers):
            return e
    return next((e for e in reversed(chain) if str(e).strip() and not isinstance(e, wrappers)), chain[0])


def _unreadable(path: str, error: BaseException) -> UserError:
    cause = cause_of(error)
    if isinstance(cause, UserError):
        return cause
    kind = "JSON lines" if _format(path) == "json" else _format(path)
    return UserError(f"cannot read {path} as {kind} ({type(cause).__name__}: {first_line(cause, 200)}); check the file")

