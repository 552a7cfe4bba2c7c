"""`distilbert attention`: what each head attends to, as an interactive HTML page or a PNG grid.

The weights come from the PyTorch model (output_attentions=True), or, without PyTorch, from an ONNX export
made with `distilbert export --with-attentions` (its output `attentions`, (batch, layers, heads, T, T)).
The HTML is one self-contained file in the spirit of exBERT and bertviz's head and model views: the page's
script and styles are inlined from attention.html beside this module, and it loads nothing from the network.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError

TEMPLATE = Path(__file__).with_name("attention.html")
DECIMALS = 4  # weights in the page: enough for line opacities and hover values, a quarter of the bytes


@dataclass
class Attention:
    tokens: list[str]
    segments: list[int]  # 0: the first text, 1: the second (TEXT_B)
    special: list[bool]  # [CLS], [SEP]
    weights: np.ndarray  # (layers, heads, T, T): row = the attending token, column = the token attended to
    model: str

    def without_special(self) -> Attention:
        """[CLS] and [SEP] left out, rows and columns both; the rest is not renormalised, so what they took is visible
        as rows that sum to less than 1."""
        keep = [i for i, s in enumerate(self.special) if not s]
        if not keep:
            raise UserError("--hide-special leaves no tokens: the text has none besides [CLS] and [SEP]")
        pick = np.array(keep)
        return Attention([self.tokens[i] for i in keep], [self.segments[i] for i in keep], [False] * len(keep),
                         self.weights[:, :, pick][:, :, :, pick], self.model)


def attention_maps(model: str, text: str, text_b: str | None = None, backend: str | None = None) -> Attention:
    """Every layer's and head's attention on `text` (paired with `text_b`), from PyTorch or an ONNX export."""
    from ..backends.choice import locate, torch_available
    from ..pipelines.base import check_texts
    from ..tokenizer import Tokenizer

    check_texts([text] + ([text_b] if text_b is not None else []))
    if not text.strip() or (text_b is not None and not text_b.strip()):
        raise UserError("empty text: give the sentence(s) to look at")
    if backend not in (None, "torch", "onnx"):
        raise UserError(f"unknown backend {backend!r}; expected torch or onnx")
    if backend == "torch" and not torch_available():
        raise UserError("attention from PyTorch needs the torch extra (pip install 'distilbert[torch]'), or an ONNX "
                        "export made with `distilbert export MODEL OUT_DIR --with-attentions`")
    choice, folder = locate(model, backend)
    backend = "onnx" if choice.backend == "onnx" and not choice.export else "torch"  # an export to be made: PyTorch
    tokenizer = Tokenizer.from_pretrained(folder)
    if backend == "torch":
        import torch

        from ..checkpoint import load

        net, config, _ = load(folder)
        enc = _encode(tokenizer, config, text, text_b)
        arrays = {k: torch.from_numpy(np.asarray(enc[k], dtype=np.int64))[None] for k in ("input_ids", "attention_mask")}
        types = torch.from_numpy(np.asarray(enc["token_type_ids"], dtype=np.int64))[None] if config.type_vocab_size else None
        with torch.inference_mode():
            out = net(arrays["input_ids"], arrays["attention_mask"], types, output_attentions=True)
        weights = torch.stack(out["attentions"], 1)[0].float().numpy()  # (layers, heads, T, T)
    else:
        from ..backends.onnx import ATTENTIONS, OnnxBackend

        engine = OnnxBackend.load(folder)
        if ATTENTIONS not in engine.output_names:
            raise UserError(f"{engine.path} has no attention output; export it again with "
                            f"`distilbert export MODEL OUT_DIR --with-attentions` (or use a PyTorch checkpoint)")
        enc = _encode(tokenizer, engine.config, text, text_b)
        out = engine.run(np.asarray([enc["input_ids"]]), np.asarray([enc["attention_mask"]]),
                         np.asarray([enc["token_type_ids"]]))
        weights = out[ATTENTIONS][0]  # (layers, heads, T, T)
    specials = {tokenizer.cls_token_id, tokenizer.sep_token_id}
    ids = enc["input_ids"]
    return Attention(tokenizer.convert_ids_to_tokens(ids), list(enc["token_type_ids"]), [i in specials for i in ids],
                     np.asarray(weights, dtype=np.float32), str(model))


def _encode(tokenizer, config, text: str, text_b: str | None) -> dict:
    limit = min(tokenizer.model_max_length, config.max_position_embeddings)
    enc = tokenizer([text], [text_b] if text_b is not None else None, truncation=True, max_length=limit)
    return {k: enc[k][0] for k in ("input_ids", "attention_mask", "token_type_ids")}


def draw(model: str, text: str, text_b: str | None, out: str | Path, layer: int | None = None, head: int | None = None,
         hide_special: bool = False, backend: str | None = None) -> Path:
    """Write `out`: FILE.html (head view and model view) or FILE.png (the layers x heads grid)."""
    out = Path(out)
    kind = out.suffix.lower()
    if kind not in (".html", ".htm", ".png"):
        raise UserError(f"--out {out} must end in .html (interactive view) or .png (grid of heat-maps)")
    if not out.parent.exists():
        raise UserError(f"cannot write {out}: folder {out.parent} does not exist")
    if kind == ".png" and importlib.util.find_spec("matplotlib") is None:
        raise UserError("a PNG needs matplotlib (pip install matplotlib); or write .html")
    maps = attention_maps(model, text, text_b, backend)
    layers, heads = maps.weights.shape[:2]
    if layer is not None and not 0 <= layer < layers:
        raise UserError(f"--layer {layer} is out of range: the model has layers 0 to {layers - 1}")
    if head is not None and not 0 <= head < heads:
        raise UserError(f"--head {head} is out of range: the model has heads 0 to {heads - 1}")
    if hide_special:
        maps = maps.without_special()
    if kind == ".png":
        grid_png(maps, out, layer, head)
    else:
        out.write_text(html(maps, layer, head), encoding="utf-8")
    return out


def html(maps: Attention, layer: int | None = None, head: int | None = None) -> str:
    """The page: attention.html with the data inlined as JSON."""
    data = {
        "model": maps.model,
        "tokens": maps.tokens,
        "segments": maps.segments,
        "special": maps.special,
        "layer": layer or 0,
        "head": head,  # None: every head shown at first
        "attention": np.round(maps.weights.astype(np.float64), DECIMALS).tolist(),
    }
    # "<" escaped, so no token can close the <script> element that holds the data
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    return TEMPLATE.read_text(encoding="utf-8").replace("/*ATTENTION_DATA*/null", payload)


def grid_png(maps: Attention, path: Path, layer: int | None = None, head: int | None = None) -> None:
    """Heat-maps, one per layer (rows) and head (columns), tokens labelled; --layer/--head narrow the grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = [layer] if layer is not None else list(range(maps.weights.shape[0]))
    heads = [head] if head is not None else list(range(maps.weights.shape[1]))
    T = len(maps.tokens)
    cell = max(1.6, min(4.0, 0.16 * T + 0.6))
    fig, axes = plt.subplots(len(layers), len(heads), figsize=(cell * len(heads) + 0.6, cell * len(layers) + 0.6),
                             squeeze=False)
    labels = [t + (" (B)" if s else "") for t, s in zip(maps.tokens, maps.segments)] if any(maps.segments) else maps.tokens
    size = max(3.0, min(7.0, 90.0 / max(T, 1)))
    peak = float(maps.weights[np.ix_(layers, heads)].max()) or 1.0  # one scale for every map in the grid
    for r, l in enumerate(layers):
        for c, h in enumerate(heads):
            ax = axes[r][c]
            ax.imshow(maps.weights[l, h], cmap="Blues", vmin=0.0, vmax=peak)
            ax.set_title(f"layer {l} head {h}", fontsize=7)
            ax.set_xticks(range(T), labels, rotation=90, fontsize=size)
            ax.set_yticks(range(T), labels, fontsize=size)
            ax.tick_params(length=0, pad=1)
    fig.suptitle(f"Attention of {maps.model} (row: attending token, column: attended token; darkest: {peak:.2f})",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
