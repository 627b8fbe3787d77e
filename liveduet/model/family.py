"""Model families: what the one training loop (train.py) needs to know about a kind of model.

A training config picks its family with `[model] family = "lm" | "vae" | "crnngan"` ("lm" when
absent). The rest of `[model]` is the family's own config dataclass (`config_cls`, validated by the
one TOML loader); `[train]` is shared (TrainConfig: batch, lr and schedule, epochs, patience, ...).

The loop owns everything a run has in common — data loading, seeding, the lr schedule applied to every
optimiser, checkpoints of every module and optimiser, exact resumption, evaluation intervals, best.pt
on the family's selection metric, early stopping, the time limit, progress, history.json and
loss.png. A family owns its modules, batches, one optimisation step, its evaluation and its export::

    class Family:
        name, config_cls, val_key, plot_keys
        __init__(cfg, tcfg, data, seed, device, dd)     → self.modules: {"model": ..., ...}
        optimizers() -> {name: Optimizer}                default: AdamW/Adam over modules["model"]
        steps_per_epoch() / batch(epoch, step)           deterministic from (seed, epoch, step)
        train_step(batch, opts) -> {"loss": ..., ...}    forward, backward, clip, opt.step()
        units(batch) -> int                              tokens (or notes) for throughput
        evaluate() -> {val_key: ..., ...}                lower val_key is better
        export(run_dir, ckpt, out, force, name, evaluation) -> card dict

Families are registered by name below and imported only when used, so `liveduet run` never
imports the VAE or the GAN.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from liveduet.config import check_sections, load_toml, parse_section
from liveduet.errors import ConfigError, ModelLoadError
from liveduet.model.config import TRAIN_SECTIONS, TrainConfig, train_config_from
from liveduet.music.dataset import Dataset

# name → "module:Class"
FAMILIES: dict[str, str] = {
    "lm": "liveduet.model.lm_family:LMFamily",
    "vae": "liveduet.model.vae:VAEFamily",
    "crnngan": "liveduet.model.crnngan:GANFamily",
}
DEFAULT_FAMILY = "lm"
# What people call each family in messages ("models/vary is a VAE (family vae), not a step model").
LABELS = {"lm": "language model", "vae": "VAE", "crnngan": "C-RNN-GAN", "critic": "critic"}


@dataclass
class Dist:
    """This process' place in a torchrun group (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


class Family:
    """Base of every model family the training loop trains (see the module docstring)."""

    name: ClassVar[str] = ""
    config_cls: ClassVar[type] = object
    val_key: ClassVar[str] = "val_nll"
    plot_keys: ClassVar[tuple[str, ...]] = ("train_loss", "val_nll")
    forbidden: ClassVar[tuple[str, ...]] = ("vocab_size",)  # set from the data, never from a file
    ddp: ClassVar[bool] = False  # can train under torchrun with DistributedDataParallel

    def __init__(self, cfg: Any, tcfg: TrainConfig, data: Dataset, seed: int, device: torch.device,
                 dd: Dist) -> None:
        self.cfg, self.tcfg, self.data, self.seed, self.device, self.dd = cfg, tcfg, data, seed, device, dd
        self.modules: dict[str, torch.nn.Module] = {}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"model": make_optimizer(self.modules["model"], self.tcfg)}

    def steps_per_epoch(self) -> int:
        raise NotImplementedError

    def batch(self, epoch: int, step: int) -> Any:
        raise NotImplementedError

    def train_step(self, batch: Any, opts: dict[str, torch.optim.Optimizer]) -> dict[str, float]:
        raise NotImplementedError

    def units(self, batch: Any) -> int:
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        raise NotImplementedError

    def export(self, run_dir: Path, ckpt: dict, out: Path, force: bool, name: str | None,
               evaluation: dict | None) -> dict:
        raise NotImplementedError

    def num_params(self) -> int:
        return sum(p.numel() for m in self.modules.values() for p in m.parameters())

    def train(self, mode: bool = True) -> None:
        for m in self.modules.values():
            m.train(mode)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """[train] optimizer over one module's parameters (AdamW decays matrices only)."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr)
    # Biases and norms have nothing to regularise.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=cfg.lr)


def family_class(name: str) -> type[Family]:
    """The Family subclass registered as `name` (ConfigError for an unknown name)."""
    if name not in FAMILIES:
        raise ConfigError(f"[model] family = {name!r}: must be one of {', '.join(FAMILIES)}")
    module, _, cls = FAMILIES[name].partition(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"[model] family = {name!r} is not available in this install ({err})") from err


def family_config_from(name: str, table: Any) -> Any:
    """The family's [model] table (without `family`) → its validated config dataclass."""
    cls = family_class(name)
    return parse_section("model", table, cls.config_cls, forbidden=cls.forbidden)


def load_family_config(path: str | Path) -> tuple[str, Any, TrainConfig]:
    """A training config file → (family name, its model config, the shared TrainConfig)."""
    data = load_toml(path)
    check_sections(data, TRAIN_SECTIONS, path)
    table = dict(data.get("model") or {})
    name = table.pop("family", DEFAULT_FAMILY)
    if not isinstance(name, str):
        raise ConfigError(f"{path}: [model] family = {name!r}: must be a string, one of {', '.join(FAMILIES)}")
    return name, family_config_from(name, table), train_config_from(data.get("train"))


def family_of_card(card: dict) -> str:
    """The family an exported folder's card.json names (wave-1 folders: the language model)."""
    return str(card.get("family") or DEFAULT_FAMILY)


def check_family(card: dict, path: Path, want: str, role: str) -> None:
    """ModelLoadError unless the exported folder at `path` is of family `want` (used as `role`)."""
    have = family_of_card(card)
    if have != want:
        raise ModelLoadError(f"{path} is a {LABELS.get(have, have)} (family {have}), not {role}")
