"""Export to ONNX, laid out as Optimum lays it out, then validated against PyTorch on a grid of shapes.

Optimum checks one dummy shape; we check batch 1, 2 and 7 at lengths 1, 8, 128 and 512 (up to the
model's limit), rows of different lengths padded in one batch, a row that is all padding but [CLS], and
that a batch gives what its rows give one by one.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .. import tasks
from ..backends.onnx import ALL_POSITIONS, ATTENTIONS
from ..errors import UserError, first_line
from ..precisions import EXACT, ONNX_FILES, parse_list
from .files import save_model, write_report
from .quantize import CONVERTERS, check_q4, measure, quantize_int8
from .validation import shape_grid, validation_batch

DEFAULT_OPSET = 17  # LayerNormalization is a single op from 17 on
QUANTIZATIONS = ("int8",)
FP32_TOLERANCE = 1e-4
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json", "1_Pooling", "2_Normalize")
# --with-attentions: one more output, every layer's attention weights stacked, for `distilbert attention`
ATTENTION_AXES = {0: "batch_size", 3: "sequence_length", 4: "sequence_length"}  # (B, layers, heads, T, T)


def export(
    model: str | os.PathLike,
    out_dir: str | os.PathLike,
    task: str | None = None,
    opset: int = DEFAULT_OPSET,
    optimize: bool = False,
    quantize: str | None = None,
    drift_texts: list[str] | None = None,
    log: Callable[[str], None] = print,
    with_attentions: bool = False,
    precisions: str | list[str] | None = None,
) -> dict:
    """Export `model` (folder or hub id) to `out_dir` in the hub's layout, validate it, optionally optimise it and
    write more precisions.

    The folder: config.json and the tokenizer files at the top, the graphs under onnx/ named as transformers.js
    names its dtypes (onnx/model.onnx, model_quantized.onnx, model_fp16.onnx, model_q4.onnx, model_q4f16.onnx),
    each with its weights in `<name>_data` beside it. precisions: "fp32,int8,fp16,q4,q4f16" or a list; fp32 is
    always written (quantize="int8" is the older spelling of adding int8). Returns a report: the fp32 graph's
    worst absolute difference from PyTorch per output and shape, fused operators, and for every other precision
    its validation against fp32, its size and its drift on real text (also written to quantization_report.json).
    with_attentions adds the output `attentions`, (batch, layers, heads, T, T), validated like the others.
    """
    from ..checkpoint import load
    from ..model import task_of
    from ..tokenizer import Tokenizer

    task = tasks.get(task).name if task is not None else None
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise UserError(f"unknown quantization {quantize!r}; expected one of {', '.join(QUANTIZATIONS)}")
    wanted = parse_list(list(parse_list(precisions or EXACT)) + ([quantize] if quantize else []))
    net, config, folder = load(model, task)
    if {"q4", "q4f16"} & set(wanted):
        check_q4(config)  # before anything is written
    out = writable_folder(Path(out_dir))
    for stale in _remove_stale(out):
        log(f"removed {stale} left by an earlier export (this one writes its own)")
    task = task or task_of(net)
    tokenizer = Tokenizer.from_pretrained(folder)
    names = list(tasks.TASKS[task].outputs) + ([ATTENTIONS] if with_attentions else [])
    inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if config.type_vocab_size else [])

    graphs = out / GRAPHS
    graphs.mkdir(exist_ok=True)
    path = graphs / ONNX_FILES[EXACT]
    log(f"exporting {folder} ({config.family}, {task}) to {path} with opset {opset}")
    _torch_export(net, task, inputs, names, path, opset, tokenizer.mask_token_id)
    config = config.replace(architectures=[tasks.architecture(config.family, task)])
    config.replace(extra={**config.extra, TRANSFORMERS_JS: transformers_js_config(wanted)}).save(out / "config.json")
    tokenizer.save(out)
    for name in SENTENCE_TRANSFORMERS_FILES:  # keep a sentence-transformers folder's pooling settings
        source = folder / name
        if source.is_dir():
            shutil.copytree(source, out / name, dirs_exist_ok=True)
        elif source.is_file():
            shutil.copy2(source, out / name)

    report: dict = {"task": task, "opset": opset, "attentions": with_attentions, "precisions": wanted,
                    "validation": validate(net, path, config, tokenizer, task, log)}
    # float16 and 4-bit graphs come from the plain graph: ONNX Runtime's fused operators are float32 on its CPU
    # and unknown to other runtimes
    for precision in (p for p in wanted if p in CONVERTERS):
        import onnx

        log(f"  writing {precision}: {graphs / ONNX_FILES[precision]}")
        save_model(CONVERTERS[precision](onnx.load(str(path))), graphs / ONNX_FILES[precision])
    if optimize:
        from .optimize import optimize_graph

        report["fused_operators"] = optimize_graph(path, config, log)
        report["validation_optimized"] = validate(net, path, config, tokenizer, task, log)
    if "int8" in wanted:
        quantize_int8(path, graphs / ONNX_FILES["int8"], log)
    derived = [p for p in wanted if p != EXACT]
    if derived:
        measured = {p: measure(path, graphs / ONNX_FILES[p], p, config, tokenizer, task, drift_texts, log)
                    for p in derived}
        write_report(out, "quantization_report.json", measured)
        report.update(measured)
    return report


GRAPHS = "onnx"  # the graphs' subfolder, as the hub's ONNX repositories keep them
TRANSFORMERS_JS = "transformers.js_config"


def transformers_js_config(precisions: list[str]) -> dict:
    """What transformers.js reads from config.json: each graph keeps its weights in one `_data` file beside it."""
    return {"use_external_data_format": {ONNX_FILES[p]: 1 for p in precisions}}


# What an export writes. An export owns these names in its folder: one left from an earlier export (an int8
# graph when this one is not quantized, say) would otherwise be run as if it belonged to the new model.
EXPORT_FILES = tuple(name + tail for name in ONNX_FILES.values() for tail in ("", "_data")) + (
    "export_report.json", "quantization_report.json")


def _remove_stale(out: Path) -> list[str]:
    """Remove the files of an earlier export, in the folder and in its onnx/ subfolder (the hub layout)."""
    removed = []
    for where in (out, out / GRAPHS):
        for name in EXPORT_FILES:
            path = where / name
            if path.is_file() or path.is_symlink():
                path.unlink()
                removed.append(str(path.relative_to(out)))
    return removed


def writable_folder(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} is a file; give a folder to export into")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to output folder {out} ({e.strerror}); choose a writable folder") from None
    return out


def _torch_export(net, task: str, inputs: list[str], names: list[str], path: Path, opset: int, mask_id: int) -> None:
    import onnx
    import torch

    dims = {name: dict(tasks.TOKENS) for name in inputs}
    dims.update({name: dict(axes) for name, axes in tasks.TASKS[task].outputs.items()})
    masked_lm = task == "fill-mask"
    attentions = ATTENTIONS in names
    if attentions:
        dims[ATTENTIONS] = dict(ATTENTION_AXES)

    class Graph(torch.nn.Module):  # positional inputs, a tuple of named outputs: what the exporter wants
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, input_ids, attention_mask, *rest):
            if not masked_lm:
                out = self.net(input_ids, attention_mask, *rest, output_attentions=attentions)
            else:
                *types, all_positions = rest
                keep = (input_ids == mask_id) | all_positions  # (B, T)
                out = self.net.encode(input_ids, attention_mask, *types, output_attentions=attentions, keep=keep)
                out["logits"] = masked_lm_logits(self.net, out["last_hidden_state"], input_ids, all_positions)
            if attentions:
                out[ATTENTIONS] = torch.stack(out["attentions"], 1)  # (B, layers, heads, T, T)
            return tuple(out[name] for name in names)

    graph_inputs = inputs + ([ALL_POSITIONS] if masked_lm else [])
    example = tuple(torch.ones(2, 8, dtype=torch.long) for _ in inputs) + ((torch.tensor(True),) if masked_lm else ())
    tmp = path.parent / ".export"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            # The TorchScript exporter: its graphs match ONNX Runtime's transformer fusions, and it needs
            # nothing beyond torch itself.
            torch.onnx.export(
                Graph().eval(), example, str(tmp / "model.onnx"), dynamo=False, input_names=graph_inputs,
                output_names=names, dynamic_axes=dims, opset_version=opset, do_constant_folding=True,
            )
        proto = onnx.load(str(tmp / "model.onnx"))  # pulls in external data if the exporter wrote any
        if masked_lm:  # an input with a default: callers that do not feed it (Optimum) get every position
            proto.graph.initializer.append(onnx.numpy_helper.from_array(np.array(True), ALL_POSITIONS))
        onnx.helper.set_model_props(proto, {"mask_token_id": str(mask_id), "exported_by": "distilbert"})
        untie_weights(proto)
        save_model(proto, path)
    except (torch.onnx.errors.OnnxExporterError, RuntimeError) as e:
        # The opset is the one input here a user chooses: an operator it lacks, or a version torch cannot write.
        # Any other failure is a bug (ours or the exporter's) and keeps its traceback.
        if not isinstance(e, torch.onnx.errors.OnnxExporterError) and "opset" not in str(e).lower():
            raise
        raise UserError(f"ONNX export failed with opset {opset}: {first_line(e, 300)}; "
                        f"try --opset {DEFAULT_OPSET}") from None
    finally:
        net.eval()  # the exporter restores the wrapper's mode recursively; a fresh wrapper was in training mode
        shutil.rmtree(tmp, ignore_errors=True)


def untie_weights(proto) -> None:
    """Give each weight a product (Gemm, MatMul) reads its own initializer when other nodes read it too.

    The masked-LM head's projection is tied to the word embeddings, which the embedding lookup also reads.
    ONNX Runtime then does not pre-pack it for its GEMM, and packs the 30,522 x 768 matrix again on every run
    with more than one [MASK]: 45 ms a batch of 10 texts on two cores (300 ms against 255 ms). A copy costs the
    matrix's bytes once on disk; in memory ONNX Runtime keeps only the packed copy.
    """
    import onnx

    readers: dict[str, int] = {}
    for node in proto.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    initializers = {i.name: i for i in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type not in ("Gemm", "MatMul") or len(node.input) < 2:
            continue
        name = node.input[1]
        if name in initializers and readers[name] > 1:
            copy = onnx.TensorProto()
            copy.CopyFrom(initializers[name])
            copy.name = f"{name}.{node.op_type.lower()}"
            proto.graph.initializer.append(copy)
            node.input[1] = copy.name
            readers[name] -= 1


def masked_lm_logits(net, rows, input_ids, all_positions):
    """The head at every position, (B, T, vocab); with all_positions false, at the [MASK] tokens alone, (N, 1, vocab).

    rows: the encoder's final states at those positions, (N, dim) in row order (the encoder's keep ran the last
    feed-forward there alone). One graph serves both: ONNX Runtime runs every node of a graph whatever outputs
    are asked for, so a second output for the [MASK]-only head would add to the cost of the full one.
    """
    import torch

    logits = net.predict(rows)  # (N, vocab)
    # (B, T) with every position, (N, 1) with the masks alone. Under the exporter's tracer Tensor.size() gives
    # traced 0-d tensors, so both stay dynamic in the graph; in eager mode they are ints.
    first = torch.where(all_positions, input_ids.size(0), rows.size(0))
    second = torch.where(all_positions, input_ids.size(1), 1)
    return logits.reshape(first, second, logits.size(-1))


def validate(net, path: Path, config, tokenizer, task: str, log: Callable[[str], None] = print) -> dict:
    """ONNX Runtime against PyTorch over the shape grid; fails above 1e-4 in fp32, or on any NaN."""
    import torch

    from ..backends.onnx import logits_at_mask, narrows_to_mask, open_session

    session = open_session(path)
    names = [o.name for o in session.get_outputs()]
    attentions = ATTENTIONS in names
    masked_lm = narrows_to_mask(session)
    worst: dict[str, float] = {name: 0.0 for name in names + (["logits at [MASK]"] if masked_lm else [])}
    rows = []
    for batch, length in shape_grid(config.max_position_embeddings):
        arrays = validation_batch(batch, length, config, tokenizer)
        with torch.inference_mode():
            out = net(*(torch.from_numpy(arrays[k]) if k in arrays else None
                        for k in ("input_ids", "attention_mask", "token_type_ids")), output_attentions=attentions)
            if attentions:
                out[ATTENTIONS] = torch.stack(out.pop("attentions"), 1)  # (B, layers, heads, T, T)
            expected = {k: v.numpy() for k, v in out.items()}
        got = dict(zip(names, session.run(None, arrays)))
        if masked_lm:  # the head at [MASK] alone, as our fill-mask runs it
            at_mask = arrays["input_ids"] == tokenizer.mask_token_id
            got["logits at [MASK]"] = logits_at_mask(session, arrays)
            expected["logits at [MASK]"] = expected["logits"][at_mask]
        diffs = {}
        for name in worst:
            if np.isnan(got[name]).any():
                raise UserError(f"validation failed: {path} gives NaN for {name} at batch {batch}, length {length}")
            diffs[name] = float(np.abs(got[name] - expected[name]).max(initial=0.0))  # no [MASK]: no rows
            worst[name] = max(worst[name], diffs[name])
        if batch > 1:  # a batch gives what its rows give one by one
            for r in range(batch):
                n = int(arrays["attention_mask"][r].sum())
                alone = dict(zip(names, session.run(None, {k: v[r : r + 1, :n] for k, v in arrays.items()})))
                for name in names:
                    if name == ATTENTIONS:
                        row = got[name][r, :, :, :n, :n]
                    else:
                        row = got[name][r, :n] if tasks.TASKS[task].token_level(name) else got[name][r]
                    diff = float(np.abs(row - alone[name][0]).max(initial=0.0))
                    diffs[name] = max(diffs[name], diff)
                    worst[name] = max(worst[name], diff)
        rows.append({"batch": batch, "length": length, **diffs})
    for name, value in worst.items():
        log(f"  worst |onnx - torch| for {name}: {value:.2e} over {len(rows)} shapes")
    bad = {name: v for name, v in worst.items() if v > FP32_TOLERANCE}
    if bad:
        raise UserError(f"validation failed: {path} differs from PyTorch by " +
                        ", ".join(f"{v:.2e} in {k}" for k, v in bad.items()) + f" (limit {FP32_TOLERANCE:.0e})")
    return {"worst": worst, "shapes": rows, "tolerance": FP32_TOLERANCE}
