"""Precisions: what each is called, which file holds its ONNX graph, which backends run it. No torch here.

One table for the whole package. The file names are transformers.js's, which names a graph by its dtype:
`onnx/model{suffix}.onnx`, the layout of the hub's ONNX repositories (and of our exports).
"""

from __future__ import annotations

from .errors import UserError

# precision -> the ONNX graph's file name (transformers.js dtype in the comment)
ONNX_FILES = {
    "fp32": "model.onnx",  # fp32
    "int8": "model_quantized.onnx",  # q8: dynamic int8 (per-channel int8 weights, activations quantised at run time)
    "fp16": "model_fp16.onnx",  # fp16: float16 weights and activations; LayerNorm and soft-max in float32
    "q4": "model_q4.onnx",  # q4: 4-bit block-wise weights (MatMulNBits, GatherBlockQuantized), float32 activations
    "q4f16": "model_q4f16.onnx",  # q4f16: 4-bit block-wise weights, float16 activations
}
# transformers.js's and Optimum's names for ours
ALIASES = {"q8": "int8", "quantized": "int8", "float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
# What each backend runs. bf16: PyTorch with its weights held in bfloat16, or OpenVINO's bfloat16 inference.
SUPPORTED = {
    "torch": ("fp32", "bf16"),
    "onnx": tuple(ONNX_FILES),
    "keras": ("fp32",),
    "openvino": ("fp32", "bf16"),
}
# The backends that run ONNX graphs, and the graph each reads for a precision: ONNX Runtime the precision's own,
# OpenVINO the fp32 graph, which it compiles at the precision asked (its reader lacks the int8 graph's
# QAttention and QEmbedLayerNormalization, so int8 stays ONNX Runtime's).
GRAPHS = {
    "onnx": {p: p for p in ONNX_FILES},
    "openvino": {"fp32": "fp32", "bf16": "fp32"},
}
PRECISIONS = ("fp32", "int8", "fp16", "q4", "q4f16", "bf16")
EXACT = "fp32"


def canonical(precision: str | None) -> str:
    """Our name for a precision (transformers.js's `q8` is our `int8`); a one-line error for an unknown one."""
    if precision is None:
        return EXACT
    name = ALIASES.get(str(precision).lower(), str(precision).lower())
    if name not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)} "
                        f"(or transformers.js's q8 for int8)")
    return name


def parse_list(text: str | list[str] | tuple[str, ...]) -> list[str]:
    """`fp32,int8,q4` (or a list) as canonical names, fp32 first and always, each once, in table order."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = {canonical(item.strip()) for item in items if item and item.strip()} | {EXACT}
    if "bf16" in names:
        raise UserError("bf16 is not an ONNX export precision (PyTorch runs it, or OpenVINO from the fp32 graph); "
                        "export fp16 for a float16 graph")
    return [name for name in ONNX_FILES if name in names]


def onnx_file(precision: str) -> str:
    return ONNX_FILES[canonical(precision)]


def backends_for(precision: str) -> list[str]:
    return [backend for backend, names in SUPPORTED.items() if precision in names]


def graph_for(backend: str | None, precision: str) -> str | None:
    """The precision of the ONNX graph `backend` reads to run `precision` (None for torch and keras, which read
    PyTorch weights; a backend not yet chosen reads the precision's own graph, as ONNX Runtime does)."""
    return GRAPHS.get(backend or "onnx", {}).get(canonical(precision))
