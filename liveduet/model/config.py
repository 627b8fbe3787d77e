"""The training config: `[model]` (liveduet/model/lstm.py's ModelConfig) and `[train]` (TrainConfig)
sections of a TOML file, read and validated by the one loader in liveduet/config.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liveduet.config import check_sections, load_toml, parse_section
from liveduet.errors import ConfigError
from liveduet.model.lstm import ModelConfig

LR_SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("adam", "adamw")
TARGETS = ("all", "last")
PRECISIONS = ("fp32", "bf16", "auto")


@dataclass
class TrainConfig:
    seq_len: int = 128  # tokens per training window
    batch: int = 64  # windows per optimiser step (across all processes)
    lr: float = 2e-3
    lr_schedule: str = "cosine"  # "constant" | "cosine" (decays to lr * min_lr_ratio over `epochs`)
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    optimizer: str = "adamw"  # "adam" | "adamw"
    weight_decay: float = 0.01  # AdamW's decoupled decay (ignored by "adam")
    grad_clip: float = 1.0  # max global gradient norm; 0 = off
    epochs: int = 20
    patience: int = 3  # stop after this many evaluations without a better validation NLL; 0 = never
    eval_every: int = 0  # also evaluate (and checkpoint) every N steps; 0 = once per epoch
    targets: str = "all"  # "all": every position of a window is a target; "last": the seed's way
    label_smoothing: float = 0.0
    # "bf16": matrix products under bf16 autocast (weights, optimiser and loss stay fp32); ~1.9x
    # faster on CPUs with AMX/AVX512-BF16. "auto": bf16 where the hardware has it, else fp32.
    precision: str = "fp32"

    def validate(self) -> None:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"[train] {key} = {getattr(self, key)!r}: {why}")

        if not 2 <= self.seq_len <= 100_000:
            raise bad("seq_len", "must be 2..100000")
        if not 1 <= self.batch <= 100_000:
            raise bad("batch", "must be 1..100000")
        if not 0 < self.lr <= 1:
            raise bad("lr", "must be in (0, 1]")
        if self.lr_schedule not in LR_SCHEDULES:
            raise bad("lr_schedule", f"must be one of {', '.join(LR_SCHEDULES)}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise bad("min_lr_ratio", "must be in [0, 1]")
        if self.warmup_steps < 0:
            raise bad("warmup_steps", "must be >= 0")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"must be one of {', '.join(OPTIMIZERS)}")
        if not 0 <= self.weight_decay < 1:
            raise bad("weight_decay", "must be in [0, 1)")
        if self.grad_clip < 0:
            raise bad("grad_clip", "must be >= 0 (0 = off)")
        if not 1 <= self.epochs <= 100_000:
            raise bad("epochs", "must be 1..100000")
        if self.patience < 0:
            raise bad("patience", "must be >= 0 (0 = never stop early)")
        if self.eval_every < 0:
            raise bad("eval_every", "must be >= 0 (0 = once per epoch)")
        if self.targets not in TARGETS:
            raise bad("targets", f"must be one of {', '.join(TARGETS)}")
        if not 0 <= self.label_smoothing < 1:
            raise bad("label_smoothing", "must be in [0, 1)")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"must be one of {', '.join(PRECISIONS)}")


# vocab_size comes from the data's vocabulary; a config file setting it would only disagree.
MODEL_FORBIDDEN = ("vocab_size",)
TRAIN_SECTIONS = ("model", "train")


def model_config_from(table: Any) -> ModelConfig:
    return parse_section("model", table, ModelConfig, forbidden=MODEL_FORBIDDEN)


def train_config_from(table: Any) -> TrainConfig:
    return parse_section("train", table, TrainConfig)


def load_train_config(path: str | Path, extra_sections: tuple[str, ...] = ()) -> tuple[ModelConfig, TrainConfig]:
    """A language model's training config file: [model] and [train] (other sections must be in
    `extra_sections`). Other families' files go through family.py's load_family_config."""
    data = load_toml(path)
    check_sections(data, TRAIN_SECTIONS + extra_sections, path)
    table = dict(data.get("model") or {})
    family = table.pop("family", "lm")
    if family != "lm":
        raise ConfigError(f"{path}: [model] family = {family!r}, not a language model config")
    return model_config_from(table), train_config_from(data.get("train"))
