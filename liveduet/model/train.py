"""Training: windows of the token stream → next-token cross-entropy on every position.

The run folder holds everything needed to continue or export a run::

    run.json      configs, data folder, seed, vocabulary fingerprint, the commands run so far
    vocab.json    the data's vocabulary (the model's token ids mean nothing without it)
    last.pt       checkpoint: model, optimiser, epoch and step within it, early-stopping state
    best.pt       the weights with the best validation NLL so far
    history.json  one row per evaluation: train loss, val NLL, tokens/s, learning rate, time
    loss.png      the curves

Exact resumption: the data order of an epoch is a permutation drawn from (seed, epoch), and the
torch RNG (dropout) is re-seeded from (seed, epoch, step, rank) before every step. A checkpoint
therefore needs only the position (epoch, step) besides weights and optimiser state to continue
bit for bit, on one process or under torchrun.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from liveduet.errors import ConfigError, LiveduetError, ModelLoadError
from liveduet.model.config import TrainConfig, load_train_config, model_config_from, train_config_from
from liveduet.model.lstm import DuetLM, ModelConfig
from liveduet.music.dataset import load_dataset
from liveduet.music.tokens import PAD, Vocabulary

CHECKPOINT_FORMAT = "liveduet-checkpoint/1"
CHECKPOINT_KEYS = ("format", "model", "config", "epoch", "step", "global_step")


# -- checkpoints -----------------------------------------------------------------------------

def save_checkpoint(path: Path, payload: dict) -> None:
    """Write via a temp file and rename: an interrupted save never replaces a good checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint's dict, loaded with weights_only=True. Damaged or foreign files → ModelLoadError."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"no checkpoint at {path}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError... for bad files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(f"{path} is damaged or not a liveduet checkpoint ({first[:200]})") from err
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise ModelLoadError(f"{path} is not a liveduet checkpoint (format {_get(data, 'format')!r})")
    missing = [k for k in CHECKPOINT_KEYS if k not in data]
    if missing:
        raise ModelLoadError(f"{path} is incomplete: missing {', '.join(missing)}")
    return data


def _get(data: object, key: str) -> object:
    return data.get(key) if isinstance(data, dict) else None


def model_from_checkpoint(ckpt: dict, path: str | Path = "checkpoint") -> DuetLM:
    """Rebuild the model a checkpoint describes and load its weights (shape mismatches → ModelLoadError)."""
    try:
        cfg = ModelConfig(**ckpt["config"]["model"])
        model = DuetLM(cfg)
        model.load_state_dict(ckpt["model"])
    except (TypeError, KeyError, RuntimeError, LiveduetError) as err:
        raise ModelLoadError(f"{path}: weights do not fit the model it describes ({str(err)[:200]})") from err
    return model


# -- data ------------------------------------------------------------------------------------

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


# -- the loop --------------------------------------------------------------------------------

@dataclass
class TrainRequest:
    data: Path
    out: Path
    config: Path | None = None
    seed: int = 0
    resume: bool = False
    epochs: int | None = None
    max_minutes: float | None = None
    quiet: bool = False
    command: str = ""  # how this run was started, for the model card


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_type: str) -> Dist:
    """Join the process group torchrun describes in the environment (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    ratio = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * ratio


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr)
    # Decay matrices only: biases and norms have nothing to regularise.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=cfg.lr)


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


def stream_crc(stream: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(stream).tobytes())


@dataclass
class Progress:
    """What the loop reports: a rich bar on a terminal; otherwise (a log file, CI) a plain line
    every `every` seconds, since a bar redrawn in a file shows nothing until the end."""

    total: int
    quiet: bool
    every: float = 60.0
    _bar: object = None
    _task: object = None
    _last: float = 0.0

    def __enter__(self) -> Progress:
        if not self.quiet:
            from rich.console import Console

            console = Console(stderr=True)
            if console.is_terminal:
                from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
                from rich.progress import Progress as RichProgress

                self._bar = RichProgress(
                    TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]}  val {task.fields[val]}  {task.fields[tps]} tok/s"),
                    TimeElapsedColumn(), console=console,
                )
                self._bar.__enter__()
                self._task = self._bar.add_task("train", total=self.total, epoch="-", loss="-", val="-", tps="-")
        self._last = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def update(self, done: int, **fields: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, **fields)
        elif not self.quiet and "loss" in fields and time.perf_counter() - self._last >= self.every:
            self._last = time.perf_counter()
            print(f"step {done}/{self.total}  epoch {fields.get('epoch', '-')}  loss {fields['loss']}  "
                  f"{fields.get('tps', '-')} tok/s", file=sys.stderr, flush=True)

    def log(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text)
        elif not self.quiet:
            print(text, file=sys.stderr, flush=True)


def train(req: TrainRequest, on_eval: Callable[[dict], None] | None = None) -> dict:
    """Train (or resume) a run. Returns the summary also written to run.json."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # The live runtime turns oneDNN off for batch-1 steps; for training it is ~35 % faster.
    torch.backends.mkldnn.enabled = True
    dd = setup_distributed(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", dd.local_rank)
        torch.cuda.set_device(device)
    out = req.out
    data = load_dataset(req.data)
    vocab = data.vocab

    ckpt = None
    if req.resume:
        ckpt = load_checkpoint(out / "last.pt", map_location=device)
        run_info = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
        mcfg = model_config_from({k: v for k, v in ckpt["config"]["model"].items() if k != "vocab_size"})
        mcfg.vocab_size = int(ckpt["config"]["model"]["vocab_size"])
        tcfg = train_config_from(ckpt["config"]["train"])
        if req.config is not None:
            m2, t2 = load_train_config(req.config)
            m2.vocab_size = mcfg.vocab_size
            t2.epochs = tcfg.epochs
            if asdict(m2) != asdict(mcfg) or asdict(t2) != asdict(tcfg):
                raise ConfigError(f"{req.config} differs from the config {out} was trained with; "
                                  "resume without --config, or start a new run")
        seed = int(ckpt["seed"])
        if ckpt.get("vocab_fingerprint") != vocab.fingerprint():
            vocab.check_compatible(str(ckpt.get("vocab_fingerprint")), f"the run in {out}")
    else:
        if req.config is None:
            raise ConfigError("--config is required for a new run")
        mcfg, tcfg = load_train_config(req.config)
        mcfg.vocab_size = len(vocab)
        seed = req.seed
        run_info = {}
        if dd.main and (out / "last.pt").exists():
            raise LiveduetError(f"{out} already holds a run (use --resume to continue it, or another --out)")
    if req.epochs is not None:
        if req.epochs < 1:
            raise ConfigError(f"--epochs must be at least 1, got {req.epochs}")
        tcfg.epochs = req.epochs
    if tcfg.batch % dd.world:
        raise ConfigError(f"[train] batch = {tcfg.batch}: must be divisible by the {dd.world} processes")

    train_stream = data.stream("train")
    val_stream = data.stream("val")
    if len(train_stream) < 2:
        raise ConfigError(f"{req.data} has no training tokens")
    crc = stream_crc(train_stream)
    if ckpt is not None and int(ckpt.get("data_crc", crc)) != crc:
        raise ConfigError(f"{req.data} is not the data {out} was trained on (resume needs the same data)")

    torch.manual_seed(seed)
    model = DuetLM(mcfg).to(device)
    opt = make_optimizer(model, tcfg)
    epoch, step, global_step = 0, 0, 0
    best_val, best_epoch, bad_evals = float("inf"), -1, 0
    history: list[dict] = []
    elapsed_before = 0.0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        epoch, step, global_step = int(ckpt["epoch"]), int(ckpt["step"]), int(ckpt["global_step"])
        best_val, best_epoch, bad_evals = float(ckpt["best_val"]), int(ckpt["best_epoch"]), int(ckpt["bad_evals"])
        history = list(ckpt.get("history", []))
        elapsed_before = float(ckpt.get("elapsed", 0.0))
    ddp_model: torch.nn.Module = model
    if dd.world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dd.local_rank] if device.type == "cuda" else None)

    autocast_dtype = resolve_precision(tcfg.precision, device)
    windows = Windows(train_stream, tcfg.seq_len, tcfg.batch, seed)
    steps_per_epoch = windows.steps_per_epoch()
    total_steps = steps_per_epoch * tcfg.epochs
    vbatches = val_batches(val_stream, tcfg.seq_len, max(1, tcfg.batch // dd.world), dd.rank, dd.world)

    if dd.main:
        out.mkdir(parents=True, exist_ok=True)
        vocab.save(out / "vocab.json")
        commands = list(run_info.get("commands", [])) + ([req.command] if req.command else [])
        run_info = {
            "data": str(req.data),
            "data_manifest": {k: data.manifest.get(k) for k in ("sources", "settings", "counts")},
            "config": {"model": asdict(mcfg), "train": asdict(tcfg)}, "seed": seed,
            "vocab_fingerprint": vocab.fingerprint(), "params": model.num_params(),
            "world_size": dd.world, "device": device.type, "torch": torch.__version__, "commands": commands,
            "precision": "bf16 autocast" if autocast_dtype is not None else "fp32",
        }
        (out / "run.json").write_text(json.dumps(run_info, indent=1) + "\n")

    started = time.perf_counter()
    deadline = started + req.max_minutes * 60 if req.max_minutes else None
    stop_reason = "epochs done"

    def checkpoint() -> None:
        if not dd.main:
            return
        save_checkpoint(out / "last.pt", {
            "format": CHECKPOINT_FORMAT, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "config": {"model": asdict(mcfg), "train": asdict(tcfg)}, "seed": seed,
            "epoch": epoch, "step": step, "global_step": global_step, "best_val": best_val,
            "best_epoch": best_epoch, "bad_evals": bad_evals, "history": history,
            "elapsed": elapsed_before + time.perf_counter() - started, "data_crc": crc,
            "vocab_fingerprint": vocab.fingerprint(), "world_size": dd.world,
        })

    def evaluation(train_loss: float, tps: float) -> bool:
        """Validate, record, keep the best weights; True when early stopping says stop."""
        nonlocal best_val, best_epoch, bad_evals
        val = evaluate_nll(model, vbatches, device, dd) if vbatches else float("nan")
        improved = val < best_val - 1e-4 or (math.isnan(best_val) or best_val == float("inf"))
        if improved and not math.isnan(val):
            best_val, best_epoch, bad_evals = val, epoch, 0
        else:
            bad_evals += 1
        row = {"epoch": epoch + step / steps_per_epoch, "step": global_step, "train_loss": round(train_loss, 5),
               "val_nll": round(val, 5), "tokens_per_s": round(tps), "lr": lr_at(tcfg, global_step, total_steps),
               "elapsed_s": round(elapsed_before + time.perf_counter() - started, 1)}
        history.append(row)
        if dd.main:
            if improved and not math.isnan(val):
                save_checkpoint(out / "best.pt", {
                    "format": CHECKPOINT_FORMAT, "model": model.state_dict(),
                    "config": {"model": asdict(mcfg), "train": asdict(tcfg)}, "seed": seed,
                    "epoch": epoch, "step": step, "global_step": global_step, "val_nll": val,
                    "vocab_fingerprint": vocab.fingerprint(),
                })
            checkpoint()
            write_history(out, history)
        if on_eval is not None:
            on_eval(row)
        progress.log(f"epoch {row['epoch']:.2f}  step {global_step}  train {train_loss:.4f}  val {val:.4f}"
                     f"{' *' if improved else ''}  {tps:,.0f} tok/s")
        return bool(tcfg.patience) and bad_evals >= tcfg.patience

    model.train()
    loss_sum, loss_n, tokens_done, t_window = 0.0, 0, 0, time.perf_counter()
    with Progress(total_steps, req.quiet or not dd.main) as progress, _InterruptAtStepBoundary() as stopper:
        progress.update(global_step)
        try:
            while epoch < tcfg.epochs:
                order = windows.epoch_order(epoch)
                while step < steps_per_epoch:
                    batch = windows.batch_at(order, step, dd.rank, dd.world).to(device)  # [b, T + 1]
                    # Re-seeding per step is what makes a resumed run identical (dropout masks).
                    torch.manual_seed(hash_seed(seed, epoch, step, dd.rank))
                    for g in opt.param_groups:
                        g["lr"] = lr_at(tcfg, global_step, total_steps)
                    with torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16,
                                        enabled=autocast_dtype is not None):
                        logits, _ = ddp_model(batch[:, :-1])  # [b, T, V]
                    loss = loss_fn(logits, batch[:, 1:], tcfg)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if tcfg.grad_clip:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
                    opt.step()
                    step += 1
                    global_step += 1
                    loss_sum += loss.item()
                    loss_n += 1
                    tokens_done += tcfg.batch * tcfg.seq_len
                    tps = tokens_done / max(1e-9, time.perf_counter() - t_window)
                    progress.update(global_step, epoch=f"{epoch + 1}/{tcfg.epochs}", loss=f"{loss_sum / loss_n:.3f}",
                                    tps=f"{tps:,.0f}")
                    timed_out, interrupted = _any([deadline is not None and time.perf_counter() >= deadline,
                                                   stopper.requested], dd)
                    if interrupted:
                        raise KeyboardInterrupt
                    if (tcfg.eval_every and global_step % tcfg.eval_every == 0 and step < steps_per_epoch) or (
                            timed_out and step < steps_per_epoch):
                        stop = evaluation(loss_sum / loss_n, tps)
                        progress.update(global_step, val=f"{history[-1]['val_nll']:.3f}")
                        loss_sum, loss_n, tokens_done, t_window = 0.0, 0, 0, time.perf_counter()
                        if stop or timed_out:
                            stop_reason = "time limit" if timed_out else "early stopping"
                            raise _Stop
                epoch, step = epoch + 1, 0
                stop = evaluation(loss_sum / max(1, loss_n), tokens_done / max(1e-9, time.perf_counter() - t_window))
                progress.update(global_step, val=f"{history[-1]['val_nll']:.3f}")
                loss_sum, loss_n, tokens_done, t_window = 0.0, 0, 0, time.perf_counter()
                if stop:
                    stop_reason = "early stopping"
                    break
                if deadline is not None and time.perf_counter() >= deadline:
                    stop_reason = "time limit"  # every process has run the same steps: same decision
                    break
        except _Stop:
            pass
        except KeyboardInterrupt:
            checkpoint()  # at the last completed step: --resume continues from there
            progress.log(f"interrupted: checkpoint saved at epoch {epoch} step {step}; continue with --resume")
            raise

    summary = {"stop_reason": stop_reason, "best_val_nll": best_val, "best_epoch": best_epoch,
               "epochs_done": epoch + step / steps_per_epoch, "global_step": global_step,
               "train_seconds": round(elapsed_before + time.perf_counter() - started, 1),
               "params": model.num_params()}
    if dd.main:
        run_info["summary"] = summary
        (out / "run.json").write_text(json.dumps(run_info, indent=1) + "\n")
        progress.log(f"done ({stop_reason}): best val NLL {best_val:.4f} nats/token; run in {out}")
    if dd.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary


class _Stop(Exception):
    pass


class _InterruptAtStepBoundary:
    """The first Ctrl-C (or SIGTERM, which torchrun sends its workers) only sets a flag, checked
    between steps, so the checkpoint never holds weights updated by a step it does not count.
    A second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _InterruptAtStepBoundary:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)  # type: ignore[arg-type]


def _any(flags: list[bool], dd: Dist) -> list[bool]:
    """Each flag true on every process if it is true on any: all ranks must stop at the same step."""
    if dd.world == 1:
        return flags
    t = torch.tensor([int(f) for f in flags])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def hash_seed(*parts: int) -> int:
    return zlib.crc32(np.array(parts, dtype=np.int64).tobytes()) & 0x7FFF_FFFF


def write_history(out: Path, history: list[dict]) -> None:
    (out / "history.json").write_text(json.dumps(history, indent=1) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    x = [h["epoch"] for h in history]
    ax.plot(x, [h["train_loss"] for h in history], marker="o", label="train loss")
    ax.plot(x, [h["val_nll"] for h in history], marker="o", label="validation NLL")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats / token")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss.png")
    plt.close(fig)


def vocab_of_run(run_dir: Path) -> Vocabulary:
    return Vocabulary.load(run_dir / "vocab.json")
