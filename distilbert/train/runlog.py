"""A run's log: each record to log.jsonl, TensorBoard (when installed) and a progress bar; rank 0 only.

On resume the log is cut back to the checkpoint's step first: the lines written after the last
checkpoint are written again by the resumed run, and must not appear twice.
"""

from __future__ import annotations

import json
from pathlib import Path

LOG = "log.jsonl"


def truncate(path: Path, step: int) -> None:
    """Keep the records up to and including `step`; rewritten beside and renamed (never half a log)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):  # a line cut short by the kill
            continue
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    tmp.replace(path)


def _without_tensorflow() -> None:
    """TensorBoard's writer imports all of TensorFlow where it is installed (seconds, hundreds of MiB), unless
    `tensorboard.compat.notf` exists: then it uses its own stub, which writes the same event files."""
    import sys
    import types

    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))


class RunLog:
    def __init__(self, out: Path, active: bool, total: int, progress: bool = True, initial: int = 0, every: int = 1,
                 desc: str = "training"):
        self.active = active
        if not active:
            return
        from tqdm import tqdm

        path = out / LOG
        if initial:
            truncate(path, initial)
        else:
            path.unlink(missing_ok=True)
        self.file = open(path, "a", encoding="utf-8")
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", disable=not progress)
        try:
            _without_tensorflow()
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"), purge_step=initial + 1 if initial else None)
        except ImportError:
            self.writer = None
        self.every = every

    def step(self, record: dict) -> None:
        """A training step's record ({step, loss, ...}); written every `every` steps."""
        if not self.active:
            return
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{record['loss']:.3f}")
        if record["step"] % self.every == 0:
            self.write(record)

    def write(self, record: dict) -> None:
        """Any record with a step (evaluation results too), always written."""
        if not self.active:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["step"])

    def message(self, text: str) -> None:
        if self.active:
            self.bar.write(text)

    def close(self) -> None:
        if self.active:
            self.bar.close()
            self.file.close()
            if self.writer is not None:
                self.writer.close()
