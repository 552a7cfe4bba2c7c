"""The OpenVINO backend: Intel's CPU runtime on the graph ONNX Runtime runs (the openvino extra; no torch).

It reads an export's fp32 graph, onnx/model.onnx, as it is: plain, or fused by --optimize (OpenVINO's ONNX
reader has ONNX Runtime's com.microsoft Attention, EmbedLayerNormalization, BiasGelu and Gelu, and gives the
plain graph's numbers on them), and compiles it for the CPU at the precision asked:

    fp32  OpenVINO's f32 inference: exact, as ONNX Runtime is
    bf16  its bfloat16 inference (weights and activations; LayerNorm and soft-max kept in f32 by OpenVINO),
          on a CPU with bfloat16 instructions (AVX512-BF16 or AMX). Elsewhere OpenVINO would quietly run f32,
          so we refuse with one line instead.

Shapes stay dynamic: the pipelines' length-grouped batches run as they come.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..config import Config
from ..errors import UserError
from .onnx import ALL_POSITIONS, feed_of, graph_task, usable_cores

# ours -> OpenVINO's INFERENCE_PRECISION_HINT
INFERENCE_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


class OpenVinoBackend:
    def __init__(self, compiled, config: Config, task: str, folder: Path, path: Path, precision: str,
                 mask_token_id: int | None):
        self.compiled, self.config, self.task, self.folder, self.path = compiled, config, task, folder, path
        self.precision = precision
        self.mask_token_id = mask_token_id  # set where the graph can run its head at [MASK] alone
        self.input_names = [i.get_any_name() for i in compiled.inputs]
        self.outputs = [(o.get_any_name(), o) for o in compiled.outputs]
        self._local = threading.local()  # an infer request holds its inputs and outputs: one per thread

    @classmethod
    def load(cls, model, task: str | None = None, threads: int | None = None,
             precision: str = "fp32") -> OpenVinoBackend:
        """An exported folder (or hub repository) with onnx/model.onnx, run at `precision` (fp32 or bf16)."""
        from .. import hub, precisions

        precision = precisions.canonical(precision)
        if precision not in precisions.SUPPORTED["openvino"]:
            raise UserError(f"precision {precision!r} is not available with the openvino backend "
                            f"({', '.join(precisions.SUPPORTED['openvino'])}); {precision} runs on the "
                            f"{' or '.join(precisions.backends_for(precision))} backend")
        ov = _import_openvino()
        graph = precisions.GRAPHS["openvino"][precision]
        folder = hub.resolve(model, need="onnx", precision=graph)
        path = hub.locate_onnx(folder, graph)
        if path is None:
            raise UserError(f"no {graph} graph ({precisions.ONNX_FILES[graph]}) in {folder}, which the openvino "
                            f"backend reads for {precision}: export it with `distilbert export MODEL OUT`, or pass "
                            "the PyTorch checkpoint (it is exported once into the cache)")
        config = Config.from_file(folder / "config.json")
        core = ov.Core()
        if precision == "bf16" and not bf16_supported(core):
            raise no_bf16(core)
        try:
            net = core.read_model(str(path))
        except RuntimeError as e:  # a damaged file, or operators OpenVINO's reader lacks
            raise UserError(f"OpenVINO cannot read {path} (truncated or corrupt, or an operator it lacks): "
                            f"{_reason(e)}") from None
        outputs = {o.get_any_name(): [d.get_length() if d.is_static else "?" for d in o.get_partial_shape()]
                   for o in net.outputs}
        natural = graph_task(config, outputs, path, task)
        narrows = feed_all_positions(ov, net)
        key = ["framework", "mask_token_id"]  # the ONNX graph's metadata, as OpenVINO's reader keeps it
        mask_id = net.get_rt_info(key).astype(str) if narrows and net.has_rt_info(key) else None
        compiled = core.compile_model(net, "CPU", {
            "INFERENCE_PRECISION_HINT": INFERENCE_PRECISIONS[precision],
            "INFERENCE_NUM_THREADS": threads or usable_cores(),
            "PERFORMANCE_HINT": "LATENCY",  # one stream: a batch's rows run together, as in the other backends
            # OpenVINO pins its threads to cores by default, counting from the first core this process may use:
            # two processes (Ray actors, servers) would then share one core while the others idle
            "ENABLE_CPU_PINNING": False,
        })
        if compiled.get_property("INFERENCE_PRECISION_HINT").to_string() != INFERENCE_PRECISIONS[precision]:
            raise no_bf16(core)  # the plugin ran f32 where bf16 was asked: what bf16_supported foresees
        return cls(compiled, config, natural, folder, path, precision, int(mask_id) if mask_id else None)

    def run(self, input_ids, attention_mask, token_type_ids=None, logits_at=None) -> dict[str, np.ndarray]:
        feed = feed_of(self.input_names, input_ids, attention_mask, token_type_ids)
        narrow = (logits_at is not None and self.mask_token_id is not None
                  and np.array_equal(logits_at, feed["input_ids"] == self.mask_token_id))
        if self.mask_token_id is not None:  # the head at [MASK] alone where that is what is asked for
            feed[ALL_POSITIONS] = np.array(not narrow)
        out = self._infer(feed)
        if narrow:
            return {"logits": out["logits"][:, 0]}  # (masks, 1, vocab) -> (masks, vocab)
        if logits_at is not None and "logits" in out:
            out["logits"] = out["logits"][np.asarray(logits_at, dtype=bool)]  # (N, vocab)
        return out

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        result = request.infer(feed)  # outputs copied out of the request (share_outputs=False)
        return {name: result[port] for name, port in self.outputs}


def feed_all_positions(ov, net) -> bool:
    """Make our fill-mask graph's `all_positions` an input the caller feeds; whether the graph has one.

    In ONNX it is an input with a default (an initializer of the same name), which OpenVINO's reader folds into
    a constant: true, the head at every position. As a Parameter it stays a choice at run time, and one
    compiled model serves both the full head and the [MASK]-only one, as in ONNX Runtime.
    """
    default = next((op for op in net.get_ops()
                    if op.get_type_name() == "Constant" and op.get_friendly_name() == ALL_POSITIONS), None)
    if default is None:
        return False
    parameter = ov.opset13.parameter([], ov.Type.boolean, name=ALL_POSITIONS)
    parameter.output(0).get_tensor().set_names({ALL_POSITIONS})
    default.output(0).replace(parameter.output(0))
    net.add_parameters([parameter])
    net.validate_nodes_and_infer_types()
    return True


def bf16_supported(core=None) -> bool:
    """Whether OpenVINO runs bfloat16 on this CPU (it lists BF16 among the CPU's optimization capabilities
    where the CPU has AVX512-BF16 or AMX)."""
    if core is None:
        core = _import_openvino().Core()
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def no_bf16(core) -> UserError:
    have = ", ".join(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return UserError(f"bf16 on the openvino backend needs a CPU with bfloat16 instructions (AVX512-BF16 or AMX), "
                     f"and this one has none (OpenVINO lists {have}), so OpenVINO would run f32 instead: use "
                     "precision fp32")


def _import_openvino():
    try:
        import openvino
    except ImportError:
        raise UserError("the openvino backend needs OpenVINO: pip install 'distilbert[openvino]'") from None
    return openvino


def _reason(error: Exception, limit: int = 300) -> str:
    """OpenVINO's own words from one of its errors: their last line (the first names the C++ source)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:limit]
