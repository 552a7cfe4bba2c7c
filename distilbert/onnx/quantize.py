"""Graphs in other precisions than fp32 (dynamic int8, float16, 4-bit blocks), each validated against fp32 and its
drift on real text measured for the JSON report."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..config import Config
from ..errors import UserError

DRIFT_TEXT = ("text", "wikitext-2-valid.txt")
MAX_DRIFT_TEXTS = 512  # enough to read agreement rates to a fraction of a percent, without minutes at full size
DRIFT_MAX_LENGTH = 128


def default_drift_texts() -> list[str]:
    """Real text for the drift report: WikiText-2 from $DISTILBERT_DATA (default ../shared/data), if present."""
    root = Path(os.environ.get("DISTILBERT_DATA", Path.cwd().parent / "shared" / "data"))
    path = root.joinpath(*DRIFT_TEXT)
    if not path.is_file():
        return []
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if len(line.split()) >= 8 and not line.startswith("=")][:MAX_DRIFT_TEXTS]


def quantize_int8(fp32: Path, int8: Path, log: Callable[[str], None] = print) -> None:
    """Dynamic int8: per-channel int8 weights, activations quantised at run time (transformers.js's q8)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from .files import save_model

    log(f"  writing int8: {int8}")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer's advice to pre-process, logged on the root logger
    try:
        # DefaultTensorType: ONNX's shape inference cannot type the outputs of fused com.microsoft ops
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        save_model(onnx.load(str(int8)), int8)  # weights beside the graph, as every export keeps them
    except OSError as e:  # the one failure that is not ours: where it writes
        raise UserError(f"cannot write {int8} ({e.strerror or e}); free space or choose another folder") from None
    except Exception as e:  # our own fp32 graph: a bug here or in ONNX Runtime's quantizer, shown whole
        e.add_note(f"ONNX Runtime's dynamic quantization failed on {fp32}; export without int8 to skip it")
        raise
    finally:
        root.setLevel(level)


def measure(fp32: Path, path: Path, precision: str, config: Config, tokenizer, task: str, texts: list[str] | None,
            log: Callable[[str], None] = print) -> dict:
    """A precision's graph against the fp32 graph: validated on the export's shape grid (TOLERANCES), its size,
    and its drift on real text (what the task's user would notice)."""
    from .files import onnx_bytes

    report = {"file": f"{path.parent.name}/{path.name}", "bytes": onnx_bytes(path), "bytes_fp32": onnx_bytes(fp32)}
    report["size_ratio"] = report["bytes"] / report["bytes_fp32"]
    report["validation"] = validate_against_fp32(fp32, path, precision, config, tokenizer)
    texts = list(texts)[:MAX_DRIFT_TEXTS] if texts is not None else default_drift_texts()
    if texts:
        report.update(drift(fp32, path, config, tokenizer, task, texts))
    else:
        report["drift"] = "not measured: no text given (pass drift_texts, or set DISTILBERT_DATA)"
    shown = {k: v for k, v in report.items() if isinstance(v, (int, float))}
    log(f"  {precision}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()))
    return report


# The largest difference from the fp32 graph on the shape grid, relative to the largest fp32 value of that output
# and shape: float16 keeps about 3 decimal digits; int8 and 4-bit weights move outputs by several percent (more on
# tiny random models, whose outputs are small beside the noise of quantised weights).
TOLERANCES = {"fp16": 1e-2, "int8": 0.25, "q4": 0.4, "q4f16": 0.4}


def validate_against_fp32(fp32: Path, path: Path, precision: str, config: Config, tokenizer) -> dict:
    """Every output of `path` against the fp32 graph's over the export's shape grid; NaN or a relative difference
    above TOLERANCES[precision] is a failed export."""
    from ..backends.onnx import ATTENTIONS, open_session
    from .validation import shape_grid, validation_batch

    a, b = open_session(fp32), open_session(path)
    names = [o.name for o in a.get_outputs() if o.name != ATTENTIONS]
    worst = {name: 0.0 for name in names}
    for batch, length in shape_grid(config.max_position_embeddings):
        feed = validation_batch(batch, length, config, tokenizer)
        feed = {k: v for k, v in feed.items() if k in {i.name for i in a.get_inputs()}}
        x, y = a.run(names, feed), b.run(names, feed)
        for name, u, v in zip(names, x, y):
            if np.isnan(v).any():
                raise UserError(f"validation failed: {path} gives NaN for {name} at batch {batch}, length {length}")
            scale = float(np.abs(u).max(initial=0.0)) or 1.0
            worst[name] = max(worst[name], float(np.abs(u - v).max(initial=0.0)) / scale)
    limit = TOLERANCES[precision]
    bad = {name: v for name, v in worst.items() if v > limit}
    if bad:
        raise UserError(f"validation failed: {path} ({precision}) differs from fp32 by " +
                        ", ".join(f"{v:.2e} in {k}" for k, v in bad.items()) + f" of the largest value (limit {limit})")
    return {"worst_relative": worst, "tolerance": limit}


def drift(fp32: Path, other: Path, config: Config, tokenizer, task: str, texts: list[str]) -> dict:
    """How far a precision's graph moves from fp32 on real text: what the task's user would notice (tasks.py names the measure)."""
    from .. import tasks

    kind = tasks.TASKS[task].drift
    if kind in ("top-k", "cosine"):
        return _output_drift(fp32, other, config, tokenizer, task, texts)
    return _answer_drift(fp32, other, tokenizer, task, texts)


def _answer_drift(fp32: Path, other: Path, tokenizer, task: str, texts: list[str]) -> dict:
    """The task's pipeline on both graphs: how often the answer a user sees is the same."""
    from .. import tasks
    from ..backends.onnx import OnnxBackend
    from ..hub import folder_of

    pipes = [tasks.TASKS[task].pipeline_class()(OnnxBackend.load(folder_of(path), file=path), tokenizer)
             for path in (fp32, other)]
    texts = [t for t in texts if t.strip()]  # the pipelines refuse empty text; a blank line is no text
    out: dict = {"texts": len(texts)}
    if task == "text-classification":
        a, b = (p(texts, top_k=None) for p in pipes)
        out["label_agreement"] = float(np.mean([x[0]["label"] == y[0]["label"] for x, y in zip(a, b)]))
        out["max_score_diff"] = max(abs(s["score"] - {t["label"]: t["score"] for t in y}[s["label"]])
                                    for x, y in zip(a, b) for s in x)
    elif task == "token-classification":
        a, b = (p(texts, aggregation_strategy="simple") for p in pipes)
        spans = [[[(e["entity_group"], e["start"], e["end"]) for e in entities] for entities in x] for x in (a, b)]
        out["entity_agreement"] = float(np.mean([x == y for x, y in zip(*spans)]))  # every entity of a text the same
        out["entities_fp32"] = sum(len(x) for x in a)
        out["entities"] = sum(len(x) for x in b)
    else:  # question-answering: each text is "question<TAB>context", or SQuAD's questions
        pairs = [t.split("\t", 1) for t in texts if "\t" in t] or squad_pairs()
        if not pairs:
            return {"drift": "not measured: question answering needs question<TAB>context lines or SQuAD dev"}
        questions, contexts = [q for q, _ in pairs], [c for _, c in pairs]
        a, b = (p(question=questions, context=contexts) for p in pipes)
        a, b = ([x] if isinstance(x, dict) else x for x in (a, b))
        out["texts"] = len(pairs)
        out["answer_agreement"] = float(np.mean([(x["start"], x["end"]) == (y["start"], y["end"]) for x, y in zip(a, b)]))
    return out


def squad_pairs(limit: int = 256) -> list[tuple[str, str]]:
    """(question, context) pairs from SQuAD v1.1 dev in $DISTILBERT_DATA, if present."""
    import json

    root = Path(os.environ.get("DISTILBERT_DATA", Path.cwd().parent / "shared" / "data"))
    path = root / "squad" / "dev-v1.1.json"
    if not path.is_file():
        return []
    pairs = []
    for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
        for paragraph in article["paragraphs"]:
            pairs.extend((qa["question"], paragraph["context"]) for qa in paragraph["qas"][:1])
            if len(pairs) >= limit:
                return pairs
    return pairs


def _output_drift(fp32: Path, other: Path, config: Config, tokenizer, task: str, texts: list[str]) -> dict:
    """Fill-mask (top-1 / top-5 agreement at a hidden word) and features (cosine of mean-pooled embeddings)."""
    from ..backends.onnx import ATTENTIONS, open_session

    a, b = open_session(fp32), open_session(other)
    names = [o.name for o in a.get_outputs() if o.name != ATTENTIONS]  # the task's outputs alone
    inputs = {i.name for i in a.get_inputs()}
    top1, top5, cosines, worst = [], [], [], 0.0
    for start in range(0, len(texts), 16):
        enc = tokenizer(texts[start : start + 16], truncation=True, padding=True,
                        max_length=min(DRIFT_MAX_LENGTH, config.max_position_embeddings),
                        return_tensors="np")
        mask = enc["attention_mask"]
        if task == "fill-mask":  # hide the middle word of each line, as a user of fill-mask would
            lengths = mask.sum(1)
            middle = np.maximum(1, (lengths - 1) // 2)
            enc["input_ids"][np.arange(len(middle)), middle] = tokenizer.mask_token_id
        feed = {k: v for k, v in enc.items() if k in inputs}
        x = dict(zip(names, a.run(names, feed)))
        y = dict(zip(names, b.run(names, feed)))
        if task == "fill-mask":
            rows = np.arange(len(middle))
            la, lb = x["logits"][rows, middle], y["logits"][rows, middle]  # (n, vocab)
            worst = max(worst, float(np.abs(la - lb).max()))
            top1.extend(la.argmax(-1) == lb.argmax(-1))
            ta, tb = np.argsort(-la, -1)[:, :5], np.argsort(-lb, -1)[:, :5]
            top5.extend(len(set(p) & set(q)) / 5 for p, q in zip(ta, tb))
        else:
            m = mask[..., None]
            pa = (x["last_hidden_state"] * m).sum(1) / m.sum(1)
            pb = (y["last_hidden_state"] * m).sum(1) / m.sum(1)
            cosines.extend((pa * pb).sum(-1) / (np.linalg.norm(pa, axis=-1) * np.linalg.norm(pb, axis=-1)))
            worst = max(worst, float(np.abs(x["last_hidden_state"] - y["last_hidden_state"])[mask > 0].max()))
    out: dict = {"texts": len(texts), "max_abs_diff": worst}
    if top1:
        out.update(top1_agreement=float(np.mean(top1)), top5_overlap=float(np.mean(top5)))
    if cosines:
        out.update(cosine_min=float(np.min(cosines)), cosine_mean=float(np.mean(cosines)))
    return out


# --- float16 and 4-bit graphs, made from the plain (unfused) fp32 graph ---------------------------------

Q4_BLOCK = 32  # weights per 4-bit block, each with its own float scale (transformers.js's q4 uses 32 too)
# Kept in float32 in fp16 graphs: a LayerNorm's variance and a soft-max's sum of exponentials overflow or lose
# their small terms in float16's 10-bit mantissa; the casts around them cost little.
FP16_KEEP = ["LayerNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt", "Erf"]


def check_q4(config: Config) -> None:
    """A model whose matrices are narrower than one block cannot be quantised block-wise: one line, before any
    file is written."""
    narrowest = min(config.dim, config.hidden_dim)
    if narrowest < Q4_BLOCK:
        raise UserError(f"q4 quantises weights in blocks of {Q4_BLOCK} along each matrix's input dimension, but this "
                        f"model's hidden size is {config.dim} and its feed-forward size {config.hidden_dim}: too "
                        f"small for 4-bit blocks; export int8 or fp16 instead")


def to_fp16(proto):
    """Weights and activations in float16, inputs and outputs as they were (int64 ids in, float32 out), with the
    operators of FP16_KEEP left in float32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(proto, keep_io_types=True, op_block_list=FP16_KEEP)


def to_q4(proto):
    """4-bit symmetric block-wise weights for every matrix product (MatMulNBits) and for the word, position and
    type embeddings (GatherBlockQuantized), the masked-LM head included; activations stay float32."""
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    gemms_to_matmuls(proto)  # the quantizer takes MatMul; the heads on (N, dim) rows were exported as Gemm
    options = DefaultWeightOnlyQuantConfig(block_size=Q4_BLOCK, is_symmetric=True,
                                           op_types_to_quantize=("MatMul", "Gather"),
                                           quant_axes=(("MatMul", 0), ("Gather", 1)))
    logger = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = logger.level
    logger.setLevel(logging.ERROR)  # a line per node it skips, and its notice that it raises the opset to 21
    try:
        quantizer = MatMulNBitsQuantizer(proto, algo_config=options)
        with np.errstate(invalid="ignore"):  # a block of zeros (the padding token's embedding) has scale 0
            quantizer.process()
    finally:
        logger.setLevel(level)
    return quantizer.model.model


def to_q4f16(proto):
    """q4's weights with float16 activations and scales: the hub's q4f16, for WebGPU and GPUs."""
    return to_q4(to_fp16(proto))  # in this order: float16's converter cannot type the 4-bit operators


def gemms_to_matmuls(proto) -> int:
    """Rewrite each Gemm whose weight is a constant as MatMul (+ Add for its bias), in place; returns how many."""
    from onnx import helper, numpy_helper

    initializers = {i.name: i for i in proto.graph.initializer}
    rewritten, nodes = 0, []
    for node in proto.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if node.op_type != "Gemm" or not plain or node.input[1] not in initializers:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]])
        if attrs.get("transB", 0):
            weight = weight.T
        name = f"{node.input[1]}.matmul"
        proto.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), name))
        product = node.output[0] + ".product" if len(node.input) > 2 and node.input[2] else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], name], [product], name=f"{node.name}.matmul"))
        if product != node.output[0]:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}.bias"))
        rewritten += 1
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    used = {name for node in proto.graph.node for name in node.input}
    kept = [i for i in proto.graph.initializer if i.name in used or i.name in {x.name for x in proto.graph.input}]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    return rewritten


CONVERTERS = {"fp16": to_fp16, "q4": to_q4, "q4f16": to_q4f16}
