"""The language model as a training family: windows of the token stream → next-token cross-entropy
on every position (or the last, the seed's way), validation NLL in nats/token. The model itself is
lstm.py's DuetLM; export is export.py's TorchScript step module."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from liveduet.errors import ConfigError
from liveduet.model.config import TrainConfig
from liveduet.model.family import Dist, Family
from liveduet.model.lstm import DuetLM, ModelConfig
from liveduet.music.dataset import Dataset
from liveduet.music.tokens import PAD


@dataclass
class Windows:
    """Training windows of `seq_len + 1` tokens cut from the train stream, reshuffled each epoch."""

    stream: np.ndarray  # int32 [N]
    seq_len: int
    batch: int
    seed: int

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Window start positions in this epoch's order: a fresh offset and permutation per epoch,
        so windows do not always split the stream at the same places."""
        rng = np.random.default_rng([self.seed, epoch])
        offset = int(rng.integers(self.seq_len)) if len(self.stream) > 2 * self.seq_len + 1 else 0
        count = max(1, (len(self.stream) - offset - 1) // self.seq_len)
        return offset + rng.permutation(count) * self.seq_len

    def steps_per_epoch(self) -> int:
        count = max(1, (len(self.stream) - 1) // self.seq_len)
        return max(1, math.ceil(count / self.batch))

    def batch_at(self, order: np.ndarray, step: int, rank: int, world: int) -> torch.Tensor:
        """This process' share of step `step`: [batch / world, seq_len + 1] int64. The last batch
        wraps round to the epoch's first windows so every batch is full."""
        per = self.batch // world
        idx = (step * self.batch + rank * per + np.arange(per)) % len(order)
        starts = order[idx]
        rows = [self.stream[s : s + self.seq_len + 1] for s in starts]
        width = self.seq_len + 1
        out = np.full((per, width), PAD, dtype=np.int64)  # [b, T + 1]; a short stream pads
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return torch.from_numpy(out)


def val_batches(stream: np.ndarray, seq_len: int, batch: int, rank: int, world: int) -> list[torch.Tensor]:
    """The validation stream in fixed windows (no shuffling), this process' share."""
    n = max(0, (len(stream) - 1) // seq_len)
    rows = [stream[i * seq_len : i * seq_len + seq_len + 1] for i in range(n)]
    if n == 0 and len(stream) > 1:
        rows = [stream]
    rows = rows[rank::world]
    out = []
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        width = max(len(r) for r in chunk)
        arr = np.full((len(chunk), width), PAD, dtype=np.int64)
        for j, r in enumerate(chunk):
            arr[j, : len(r)] = r
        out.append(torch.from_numpy(arr))
    return out


def loss_fn(logits: torch.Tensor, targets: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """logits [B, T, V], targets [B, T] → mean cross-entropy over the scored positions."""
    if cfg.targets == "last":
        logits, targets = logits[:, -1:], targets[:, -1:]
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=PAD, label_smoothing=cfg.label_smoothing)


@torch.no_grad()
def evaluate_nll(model: DuetLM, batches: list[torch.Tensor], device: torch.device, dd: Dist) -> float:
    """Mean NLL (nats/token) over every position of the validation windows, all processes together."""
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)  # [sum of NLL, count]
    for b in batches:
        b = b.to(device)
        logits, _ = model(b[:, :-1])  # [B, T, V]
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b[:, 1:].reshape(-1),
                              ignore_index=PAD, reduction="sum")
        total[0] += nll.double()
        total[1] += (b[:, 1:] != PAD).sum()
    if dd.world > 1:
        dist.all_reduce(total)
    model.train(was_training)
    return float(total[0] / total[1]) if total[1] > 0 else float("nan")


def cpu_has_bf16() -> bool:
    """Native bf16 matrix units (AMX or AVX512-BF16); without them bf16 is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for training, or None for plain fp32."""
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        return torch.bfloat16 if cpu_has_bf16() else None
    if device.type == "cpu" and not cpu_has_bf16():
        # oneDNN's LSTM has no emulated bf16 path: it fails on the first batch with a long error.
        raise ConfigError('[train] precision = "bf16" needs a CPU with AVX512-BF16 or AMX (this one has '
                          'neither); use "auto" or "fp32"')
    return torch.bfloat16


class LMFamily(Family):
    """DuetLM trained on the token stream (the default model's family)."""

    name: ClassVar[str] = "lm"
    config_cls: ClassVar[type] = ModelConfig
    val_key: ClassVar[str] = "val_nll"
    plot_keys: ClassVar[tuple[str, ...]] = ("train_loss", "val_nll")
    ddp: ClassVar[bool] = True

    def __init__(self, cfg: ModelConfig, tcfg: TrainConfig, data: Dataset, seed: int, device: torch.device,
                 dd: Dist) -> None:
        super().__init__(cfg, tcfg, data, seed, device, dd)
        train_stream = data.stream("train")
        if len(train_stream) < 2:
            raise ConfigError("the data has no training tokens")
        self.model = DuetLM(cfg).to(device)
        self.modules = {"model": self.model}
        self.forward_model: torch.nn.Module = self.model
        if dd.world > 1:
            self.forward_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[dd.local_rank] if device.type == "cuda" else None)
        self.autocast = resolve_precision(tcfg.precision, device)
        self.windows = Windows(train_stream, tcfg.seq_len, tcfg.batch, seed)
        self.val = val_batches(data.stream("val"), tcfg.seq_len, max(1, tcfg.batch // dd.world), dd.rank, dd.world)
        self._order: tuple[int, np.ndarray] | None = None

    @property
    def precision_label(self) -> str:
        return "bf16 autocast" if self.autocast is not None else "fp32"

    def steps_per_epoch(self) -> int:
        return self.windows.steps_per_epoch()

    def batch(self, epoch: int, step: int) -> torch.Tensor:
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, self.windows.epoch_order(epoch))
        return self.windows.batch_at(self._order[1], step, self.dd.rank, self.dd.world).to(self.device)

    def units(self, batch: torch.Tensor) -> int:
        return self.tcfg.batch * self.tcfg.seq_len

    def train_step(self, batch: torch.Tensor, opts: dict[str, torch.optim.Optimizer]) -> dict[str, float]:
        with torch.autocast(self.device.type, dtype=self.autocast or torch.bfloat16, enabled=self.autocast is not None):
            logits, _ = self.forward_model(batch[:, :-1])  # [b, T, V]
        loss = loss_fn(logits, batch[:, 1:], self.tcfg)
        opt = opts["model"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.tcfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tcfg.grad_clip)
        opt.step()
        return {"loss": loss.item()}

    def evaluate(self) -> dict[str, float]:
        return {"val_nll": evaluate_nll(self.model, self.val, self.device, self.dd) if self.val else float("nan")}
