"""Dynamic int8 (per-channel weights) and its drift from fp32 on real text, written as a JSON report."""

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


def quantize_int8(fp32: Path, int8: Path, config: Config, tokenizer, task: str, texts: list[str] | None,
                  log: Callable[[str], None] = print) -> dict:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from .files import onnx_bytes, save_model, write_report

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
        e.add_note(f"ONNX Runtime's dynamic quantization failed on {fp32}; export without --quantize to skip it")
        raise
    finally:
        root.setLevel(level)
    texts = list(texts)[:MAX_DRIFT_TEXTS] if texts is not None else default_drift_texts()
    report = {"file": int8.name, "bytes_fp32": onnx_bytes(fp32), "bytes_int8": onnx_bytes(int8)}
    if texts:
        report.update(drift(fp32, int8, config, tokenizer, task, texts))
    else:
        report["drift"] = "not measured: no text given (pass drift_texts, or set DISTILBERT_DATA)"
    write_report(int8.parent, "quantization_report.json", report)
    shown = {k: v for k, v in report.items() if isinstance(v, (int, float))}
    log("  int8: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()))
    return report


def drift(fp32: Path, int8: Path, config: Config, tokenizer, task: str, texts: list[str]) -> dict:
    """How far int8 moves from fp32 on real text: what the task's user would notice (tasks.py names the measure)."""
    from .. import tasks

    kind = tasks.TASKS[task].drift
    if kind in ("top-k", "cosine"):
        return _output_drift(fp32, int8, config, tokenizer, task, texts)
    return _answer_drift(fp32, int8, tokenizer, task, texts)


def _answer_drift(fp32: Path, int8: Path, tokenizer, task: str, texts: list[str]) -> dict:
    """The task's pipeline on both graphs: how often the answer a user sees is the same."""
    from .. import tasks
    from ..backends.onnx import OnnxBackend

    pipes = [tasks.TASKS[task].pipeline_class()(OnnxBackend.load(path.parent, file=path), tokenizer)
             for path in (fp32, int8)]
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
        out["entities_int8"] = sum(len(x) for x in b)
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


def _output_drift(fp32: Path, int8: Path, config: Config, tokenizer, task: str, texts: list[str]) -> dict:
    """Fill-mask (top-1 / top-5 agreement at a hidden word) and features (cosine of mean-pooled embeddings)."""
    from ..backends.onnx import ATTENTIONS, open_session

    a, b = open_session(fp32), open_session(int8)
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
