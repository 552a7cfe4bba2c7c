"""The ONNX Runtime backend: runs an exported folder (ours, Optimum's, or a hub repo's onnx/model.onnx).

Imports no torch: with only the base install, every pipeline runs through this.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..config import Config
from ..errors import UserError, first_line

# Our fill-mask graphs take this optional input (default true): false computes the masked-LM head at the
# [MASK] tokens alone and gives logits as (masks, 1, vocab) instead of (batch, length, vocab).
ALL_POSITIONS = "all_positions"
# An export made with --with-attentions has this output too: (batch, layers, heads, T, T)
ATTENTIONS = "attentions"
# ONNX Runtime's online fusion of Add + LayerNormalization; its fused CPU kernel is slower (see onnx/optimize.py)
DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup CPU quota, counted in physical
    cores where hyper-threads share them (they share the FP units these kernels saturate).

    /proc/cpuinfo alone shows the host's cores inside a container limited by cgroups or CPU affinity.
    """
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    cores = len(_physical_cores_of(allowed)) or len(allowed)
    quota = _cgroup_cpu_limit()
    if quota is not None:
        cores = min(cores, max(1, int(quota)))
    return max(1, cores)


def _physical_cores_of(cpus: list[int]) -> set[tuple[str, str]]:
    """(package, core) pairs of the given logical CPUs, from sysfs topology; empty when unknown."""
    found = set()
    for cpu in cpus:
        base = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            found.add(((base / "physical_package_id").read_text().strip(), (base / "core_id").read_text().strip()))
        except OSError:
            return set()
    return found


def _cgroup_cpu_limit() -> float | None:
    """CPUs allowed by the cgroup quota (v2 cpu.max, v1 cfs files), or None without a limit."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


class OnnxBackend:
    def __init__(self, session, config: Config, task: str, folder: Path, path: Path):
        self.session, self.config, self.task, self.folder, self.path = session, config, task, folder, path
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        mask_id = session.get_modelmeta().custom_metadata_map.get("mask_token_id")
        self.mask_token_id = int(mask_id) if mask_id is not None and narrows_to_mask(session) else None

    @classmethod
    def load(cls, model, task: str | None = None, threads: int | None = None, precision: str = "fp32",
             file: str | Path | None = None) -> OnnxBackend:
        """An exported folder (or hub repository with model.onnx in its root or onnx/), or one graph `file`."""
        from .. import hub, precisions

        precision = precisions.canonical(precision)
        if precision not in precisions.SUPPORTED["onnx"]:
            raise UserError(f"precision {precision!r} is not available with the onnx backend "
                            f"({', '.join(precisions.SUPPORTED['onnx'])}); {precision} runs on the "
                            f"{' or '.join(precisions.backends_for(precision))} backend")
        folder = hub.resolve(model, need="onnx", precision=precision)
        path = Path(file) if file is not None else hub.locate_onnx(folder, precision)
        if path is None:
            present = hub.onnx_precisions(folder)
            raise UserError(f"no {precision} graph ({precisions.ONNX_FILES[precision]}) in {folder}"
                            + (f"; it has {', '.join(present)}: pass one of those" if present else "")
                            + f", or export it with `distilbert export MODEL OUT --precision {precision}`")
        config = Config.from_file(folder / "config.json")
        session = open_session(path, threads)
        outputs = {o.name: o.shape for o in session.get_outputs()}
        return cls(session, config, graph_task(config, outputs, path, task), folder, path)

    def run(self, input_ids, attention_mask, token_type_ids=None, logits_at=None) -> dict[str, np.ndarray]:
        feed = feed_of(self.input_names, input_ids, attention_mask, token_type_ids)
        if logits_at is not None and self.mask_token_id is not None and np.array_equal(logits_at, feed["input_ids"] == self.mask_token_id):
            return {"logits": logits_at_mask(self.session, feed)}
        out = dict(zip(self.output_names, self.session.run(self.output_names, feed)))
        if logits_at is not None and "logits" in out:
            out["logits"] = out["logits"][np.asarray(logits_at, dtype=bool)]  # (N, vocab)
        return out


def graph_task(config: Config, outputs: dict[str, list], path: Path, task: str | None) -> str:
    """The task a graph was exported for, from its config and its outputs' names and shapes; a one-line error
    when `task` (if given) is another (an ONNX graph has one head baked in)."""
    from .. import tasks

    natural = tasks.infer(config, outputs=outputs)
    if task is not None and tasks.get(task).name != natural:
        wanted = tasks.get(task).name
        raise UserError(f"{path} was exported for {natural} (outputs {', '.join(outputs)}), not {wanted}; run it "
                        f"as {natural}, or export the checkpoint again with --task {wanted} if it has that head")
    return natural


def feed_of(input_names: list[str], input_ids, attention_mask, token_type_ids=None) -> dict[str, np.ndarray]:
    """The graph's inputs as int64 arrays: token types (zeros where not given) only if it takes them."""
    feed = {"input_ids": np.asarray(input_ids, dtype=np.int64), "attention_mask": np.asarray(attention_mask, dtype=np.int64)}
    if "token_type_ids" in input_names:
        feed["token_type_ids"] = (np.zeros_like(feed["input_ids"]) if token_type_ids is None
                                  else np.asarray(token_type_ids, dtype=np.int64))
    return {k: v for k, v in feed.items() if k in input_names}


def narrows_to_mask(session) -> bool:
    """Whether the graph is one of our fill-mask exports, whose head can run at [MASK] alone."""
    return ALL_POSITIONS in {i.name for i in session.get_overridable_initializers()}


def logits_at_mask(session, feed: dict[str, np.ndarray]) -> np.ndarray:
    """Such a graph's head at the [MASK] tokens alone: (masks, vocab), in row order."""
    return session.run(["logits"], {**feed, ALL_POSITIONS: np.array(False)})[0][:, 0]


def open_session(path: Path, threads: int | None = None):
    import onnxruntime as ort
    from onnxruntime.capi.onnxruntime_pybind11_state import (Fail, InvalidArgument, InvalidGraph, InvalidProtobuf,
                                                             NoSuchFile)

    if not Path(path).is_file():
        raise UserError(f"{path} does not exist; export the model first (distilbert export MODEL OUT_DIR)")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or usable_cores()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: not the notice, at every load, that all_positions can be fed
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=DISABLED_OPTIMIZERS)
    except (InvalidProtobuf, InvalidGraph, InvalidArgument, NoSuchFile, Fail) as e:  # what a damaged file gives
        raise UserError(f"{path} is not a loadable ONNX model (truncated or corrupt?): {first_line(e)}") from None
