"""The ONNX Runtime backend: runs an exported folder (ours, Optimum's, or a hub repo's onnx/model.onnx).

Imports no torch: with only the base install, every pipeline runs through this.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..config import Config
from ..errors import UserError

FILES = {"fp32": "model.onnx", "int8": "model_quantized.onnx"}
# Our fill-mask graphs take this optional input (default true): false computes the masked-LM head at the
# [MASK] tokens alone and gives logits as (masks, 1, vocab) instead of (batch, length, vocab).
ALL_POSITIONS = "all_positions"
# ONNX Runtime's online fusion of Add + LayerNormalization; its fused CPU kernel is slower (see onnx/optimize.py)
DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]
OUTPUTS_OF_TASK = {  # Optimum's output names
    "feature-extraction": ("last_hidden_state",),
    "fill-mask": ("logits",),
    "text-classification": ("logits",),
    "token-classification": ("logits",),
    "question-answering": ("start_logits", "end_logits"),
}


def physical_cores() -> int:
    """Physical cores (hyper-threads share the FP units these kernels saturate), else the logical count."""
    try:
        cores = set()
        physical = None
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("physical id"):
                    physical = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    cores.add((physical, line.split(":")[1].strip()))
        if cores:
            return len(cores)
    except OSError:
        pass
    return os.cpu_count() or 1


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
        from ..checkpoint import ARCHITECTURES, resolve

        if precision not in FILES:
            raise UserError(f"precision {precision!r} is not available with the onnx backend (fp32 or int8)")
        folder = resolve(model, allow_patterns=["*.json", "*.txt", f"{FILES[precision]}*", f"onnx/{FILES[precision]}*"])
        path = Path(file) if file is not None else _find(folder, FILES[precision])
        config = Config.from_file(folder / "config.json")
        session = open_session(path, threads)
        outputs = {o.name: o for o in session.get_outputs()}
        natural = next((ARCHITECTURES[a] for a in config.architectures or [] if a in ARCHITECTURES), None)
        if natural is None or any(name not in outputs for name in OUTPUTS_OF_TASK[natural]):
            natural = _task_from_outputs(outputs, config)
        task = task or natural
        if task != natural:  # an ONNX graph has one head baked in
            raise UserError(
                f"{path} was exported for {natural} (outputs {', '.join(outputs)}), not {task}; "
                f"export the model again with --task {task}"
            )
        return cls(session, config, task, folder, path)

    def run(self, input_ids, attention_mask, token_type_ids=None, logits_at=None) -> dict[str, np.ndarray]:
        feed = {"input_ids": np.asarray(input_ids, dtype=np.int64), "attention_mask": np.asarray(attention_mask, dtype=np.int64)}
        if "token_type_ids" in self.input_names:
            feed["token_type_ids"] = (np.zeros_like(feed["input_ids"]) if token_type_ids is None
                                      else np.asarray(token_type_ids, dtype=np.int64))
        feed = {k: v for k, v in feed.items() if k in self.input_names}
        if logits_at is not None and self.mask_token_id is not None and np.array_equal(logits_at, feed["input_ids"] == self.mask_token_id):
            return {"logits": logits_at_mask(self.session, feed)}
        out = dict(zip(self.output_names, self.session.run(self.output_names, feed)))
        if logits_at is not None and "logits" in out:
            out["logits"] = out["logits"][np.asarray(logits_at, dtype=bool)]  # (N, vocab)
        return out


def narrows_to_mask(session) -> bool:
    """Whether the graph is one of our fill-mask exports, whose head can run at [MASK] alone."""
    return ALL_POSITIONS in {i.name for i in session.get_overridable_initializers()}


def logits_at_mask(session, feed: dict[str, np.ndarray]) -> np.ndarray:
    """Such a graph's head at the [MASK] tokens alone: (masks, vocab), in row order."""
    return session.run(["logits"], {**feed, ALL_POSITIONS: np.array(False)})[0][:, 0]


def open_session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    if not Path(path).is_file():
        raise UserError(f"{path} does not exist; export the model first (distilbert export MODEL OUT_DIR)")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or physical_cores()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: not the notice, at every load, that all_positions can be fed
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=DISABLED_OPTIMIZERS)
    except Exception as e:  # onnxruntime raises its own exception types, e.g. InvalidProtobuf, Fail
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} is not a loadable ONNX model (truncated or corrupt?): {first[:200]}") from None


def locate(folder: Path, name: str = "model.onnx") -> Path | None:
    """`name` in the folder, or in its onnx/ subfolder as hub repositories keep it."""
    return next((p for p in (folder / name, folder / "onnx" / name) if p.is_file()), None)


def _find(folder: Path, name: str) -> Path:
    found = locate(folder, name)
    if found is not None:
        return found
    raise UserError(f"no {name} in {folder}; export it with `distilbert export`" + (" --quantize int8" if "quantized" in name else ""))


def _task_from_outputs(outputs: dict, config: Config) -> str:
    if "last_hidden_state" in outputs:
        return "feature-extraction"
    if "start_logits" in outputs:
        return "question-answering"
    logits = outputs.get("logits")
    if logits is None:
        raise UserError(f"unrecognised ONNX outputs {sorted(outputs)}")
    if len(logits.shape) == 2:
        return "text-classification"
    return "fill-mask" if logits.shape[-1] in (config.vocab_size, "vocab_size") else "token-classification"
