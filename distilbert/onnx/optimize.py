"""ONNX Runtime's transformer fusions (attention, bias-GELU, skip and embedding layer-norms)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..config import Config

REPORTED = ("EmbedLayerNormalization", "Attention", "MultiHeadAttention", "BiasGelu", "FastGelu", "Gelu",
            "SkipLayerNormalization", "LayerNormalization")


def optimize_graph(path: Path, config: Config, log: Callable[[str], None] = print) -> dict[str, int]:
    """Fuse `path` in place; return the count of each fused operator."""
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    from .files import save_model

    options = FusionOptions("bert")
    # Add + LayerNormalization, not SkipLayerNormalization: ONNX Runtime's CPU kernel for the fused op is
    # several times slower than the two ops it replaces (the README's speed section has the figures).
    # The backend keeps ONNX Runtime from fusing them again at load (DISABLED_OPTIMIZERS in backends/onnx.py).
    options.enable_skip_layer_norm = False
    options.enable_bias_skip_layer_norm = False
    try:
        # DistilBERT and BERT share one fusion recipe in ONNX Runtime ("bert"); opt_level 0 keeps the
        # saved graph portable (no hardware-specific layout), ONNX Runtime re-optimises at load.
        optimized = optimize_model(str(path), model_type="bert", num_heads=config.n_heads, hidden_size=config.dim,
                                   opt_level=0, optimization_options=options)
    except Exception as e:  # our own graph, not the user's input: a bug here or in ONNX Runtime, shown whole
        e.add_note(f"ONNX Runtime's transformer optimizer failed on {path}; export without --optimize to skip it")
        raise
    stats = optimized.get_fused_operator_statistics()
    fused = {name: int(stats.get(name, 0)) for name in REPORTED if stats.get(name)}
    proto = optimized.model
    if not any(o.domain == "com.microsoft" for o in proto.opset_import):  # the fused ops' domain, for later tools
        proto.opset_import.extend([onnx.helper.make_opsetid("com.microsoft", 1)])
    save_model(proto, path)
    log("  fused operators: " + ", ".join(f"{n} x{c}" for n, c in fused.items()))
    return fused
