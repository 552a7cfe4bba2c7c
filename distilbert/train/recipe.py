"""Every hyperparameter of a run, in one dataclass that reads and writes a JSON recipe file.

The defaults are those of the released distilbert-base-uncased (transformers' research_projects/
distillation: train.py and training_configs/distilbert-base-uncased.json); `recipes/paper.json` adds the
paper's batch of about 4,000 sequences and 3 epochs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError


class Settings:
    """A run's settings as a dataclass that reads and writes JSON recipe files (shared by every loop)."""

    TUPLES: tuple[str, ...] = ()  # fields JSON gives back as lists

    @classmethod
    def from_file(cls, path: str | Path) -> Settings:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"recipe {path} does not exist") from None
        except json.JSONDecodeError as e:
            raise UserError(f"recipe {path} is not valid JSON ({e})") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict) -> Settings:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserError(f"recipe: unknown settings {', '.join(unknown)}")
        data = dict(data)
        for name in cls.TUPLES:
            if name in data:
                data[name] = tuple(data[name])
        return cls(**data)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> Settings:
        """Unset (None) values keep the recipe's; lists become tuples."""
        given = {k: tuple(v) if isinstance(v, list) else v for k, v in changes.items() if v is not None}
        if "teacher" in changes and changes["teacher"] is None:
            given["teacher"] = None
        return dataclasses.replace(self, **given)


@dataclass
class Recipe(Settings):
    TUPLES = ("mask_split", "adam_betas")

    # what
    student: str = ""  # model folder (fill-mask head); for `pretrain`, the model to train
    teacher: str | None = None  # None: plain masked-LM pretraining, the distillation terms off
    data: str = ""
    out: str = ""
    # the losses (Sanh et al. 2019, section 3; released model's weights)
    temperature: float = 2.0
    alpha_ce: float = 5.0  # distillation (soft targets)
    alpha_mlm: float = 2.0  # masked LM (hard targets)
    alpha_cos: float = 1.0  # cosine between hidden states
    alpha_mse: float = 0.0
    restrict_ce_to_mask: bool = False  # distillation loss over masked tokens only, instead of every real token
    # masking
    mlm_probability: float = 0.15
    mask_split: tuple[float, float, float] = (0.8, 0.1, 0.1)  # [MASK] / random / unchanged
    mlm_smoothing: float | None = 0.7  # choose rare tokens more often; None: uniform
    # optimisation
    epochs: int = 3
    learning_rate: float = 5e-4
    warmup: float = 0.05  # fraction of the steps
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.98)
    adam_epsilon: float = 1e-6
    max_grad_norm: float = 5.0
    gradient_accumulation: int = 50
    max_tokens: int = 8192  # padded tokens in a micro-batch
    max_sequences: int = 64  # sequences in a micro-batch
    max_steps: int | None = None  # stop early (optimizer steps), e.g. for a quick run
    precision: str = "fp32"  # fp32, bf16 or fp16 (autocast; fp16 with a gradient scaler, on GPUs)
    seed: int = 56
    # bookkeeping
    checkpoint_every: int = 500  # optimizer steps
    log_every: int = 1
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        if not self.student:
            raise UserError("no model to train: give --student (distill) or --model (pretrain)")
        if not self.data:
            raise UserError("no data: give --data, a folder made by `distilbert prepare-data`")
        if not self.out:
            raise UserError("no output folder: give --out")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise UserError(f"precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if abs(sum(self.mask_split) - 1) > 1e-6 or len(self.mask_split) != 3:
            raise UserError(f"mask split {self.mask_split} must be three fractions summing to 1")
        for name in ("epochs", "gradient_accumulation", "max_tokens", "max_sequences", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.teacher is None and self.alpha_mlm <= 0:
            raise UserError("pretraining without a teacher needs alpha_mlm > 0")
        if not self.max_grad_norm > 0:
            raise UserError(f"max_grad_norm must be above 0, got {self.max_grad_norm}")
