"""What the commands print for a person: entities under their text, a model's parameter count."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError


def print_entities(text: str, entities: list[dict]) -> None:
    print(text)
    if not entities:
        print("  (no entities)\n")
        return
    kind = "entity_group" if "entity_group" in entities[0] else "entity"
    width = max(len(kind), *(len(e[kind]) for e in entities))
    index = "index" in entities[0]
    print(f"  {kind:<{width}}  {'score':>6}  {'index  ' if index else ''}{'start':>5}  {'end':>5}  word")
    for e in entities:
        at = f"{e['index']:>5}  " if index else ""
        print(f"  {e[kind]:<{width}}  {e['score']:6.4f}  {at}{e['start']:>5}  {e['end']:>5}  {e['word']}")
    print()


def parameter_count(folder: Path, config) -> tuple[int, str]:
    """Counted from the weight files' headers (no tensors read), else computed from config.json."""
    files = sorted(folder.glob("*.safetensors"))
    if files:
        total = 0
        for path in files:
            with open(path, "rb") as f:
                try:
                    size = int.from_bytes(f.read(8), "little")
                    header = json.loads(f.read(size))
                except (ValueError, UnicodeDecodeError):
                    raise UserError(f"{path} is corrupted (unreadable header); download or save the model again") from None
            for key, entry in header.items():
                if key != "__metadata__":
                    n = 1
                    for d in entry["shape"]:
                        n *= d
                    total += n
        return total, "counted in the weights"
    return config.parameter_count(), "encoder, computed from config.json"
