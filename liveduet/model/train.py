"""The one training loop, for every model family (family.py; the language model's is lm_family.py).

The run folder holds everything needed to continue or export a run::

    run.json      configs, data folder, seed, vocabulary fingerprint, the commands run so far
    vocab.json    the data's vocabulary (the model's token ids mean nothing without it)
    last.pt       checkpoint: model, optimiser, epoch and step within it, early-stopping state
    best.pt       the weights with the best validation figure so far (the family's val_key)
    history.json  one row per evaluation: train losses, validation figures, units/s, learning rate, time
    loss.png      the curves

Exact resumption: a family draws an epoch's data order from (seed, epoch), and the
torch RNG (dropout, noise) is re-seeded from (seed, epoch, step, rank) before every step. A checkpoint
therefore needs only the position (epoch, step) besides weights and optimiser state to continue
bit for bit, on one process or under torchrun.
"""

from __future__ import annotations

import json
import math
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from liveduet.errors import ConfigError, LiveduetError, ModelLoadError
from liveduet.model.config import TrainConfig, train_config_from
from liveduet.model.family import (
    DEFAULT_FAMILY,
    Dist,
    Family,
    family_class,
    family_config_from,
    load_family_config,
    make_optimizer,
)
from liveduet.model.lm_family import cpu_has_bf16, loss_fn, resolve_precision
from liveduet.model.lstm import DuetLM, ModelConfig
from liveduet.model.progress import InterruptAtStepBoundary, Progress, write_history
from liveduet.music.dataset import load_dataset
from liveduet.music.tokens import Vocabulary

# Re-exported: benchmarks and tests reach the LM's training pieces through this module.
__all__ = ["cpu_has_bf16", "loss_fn", "make_optimizer", "resolve_precision"]

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


def stream_crc(stream: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(stream).tobytes())


def _load_config(req: TrainRequest, ckpt: dict | None, out: Path, vocab_size: int) -> tuple[str, Any, TrainConfig]:
    """The family and configs of a new run (from --config) or of the run being resumed (from its
    checkpoint; a --config given too must say the same)."""
    if ckpt is None:
        if req.config is None:
            raise ConfigError("--config is required for a new run")
        name, mcfg, tcfg = load_family_config(req.config)
        if hasattr(mcfg, "vocab_size"):
            mcfg.vocab_size = vocab_size
        return name, mcfg, tcfg
    name = str(ckpt.get("family") or DEFAULT_FAMILY)
    cls = family_class(name)
    saved = ckpt["config"]["model"]
    mcfg = family_config_from(name, {k: v for k, v in saved.items() if k not in cls.forbidden})
    for key in cls.forbidden:
        if key in saved:
            setattr(mcfg, key, saved[key])
    tcfg = train_config_from(ckpt["config"]["train"])
    if req.config is not None:
        name2, m2, t2 = load_family_config(req.config)
        for key in cls.forbidden:
            if hasattr(m2, key):
                setattr(m2, key, getattr(mcfg, key))
        t2.epochs = tcfg.epochs
        if name2 != name or asdict(m2) != asdict(mcfg) or asdict(t2) != asdict(tcfg):
            raise ConfigError(f"{req.config} differs from the config {out} was trained with; "
                              "resume without --config, or start a new run")
    return name, mcfg, tcfg


def train(req: TrainRequest, on_eval: Callable[[dict], None] | None = None) -> dict:
    """Train (or resume) a run of any family. Returns the summary also written to run.json."""
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
    run_info: dict = {}
    if req.resume:
        ckpt = load_checkpoint(out / "last.pt", map_location=device)
        run_info = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
        seed = int(ckpt["seed"])
        if ckpt.get("vocab_fingerprint") != vocab.fingerprint():
            vocab.check_compatible(str(ckpt.get("vocab_fingerprint")), f"the run in {out}")
    else:
        seed = req.seed
        if dd.main and (out / "last.pt").exists():
            raise LiveduetError(f"{out} already holds a run (use --resume to continue it, or another --out)")
    family_name, mcfg, tcfg = _load_config(req, ckpt, out, len(vocab))
    if req.epochs is not None:
        if req.epochs < 1:
            raise ConfigError(f"--epochs must be at least 1, got {req.epochs}")
        tcfg.epochs = req.epochs
    if tcfg.batch % dd.world:
        raise ConfigError(f"[train] batch = {tcfg.batch}: must be divisible by the {dd.world} processes")
    cls = family_class(family_name)
    if dd.world > 1 and not cls.ddp:
        raise ConfigError(f"[model] family = {family_name!r} trains on one process only (no torchrun)")

    train_stream = data.stream("train")
    if len(train_stream) < 2:
        raise ConfigError(f"{req.data} has no training tokens")
    crc = stream_crc(train_stream)
    if ckpt is not None and int(ckpt.get("data_crc", crc)) != crc:
        raise ConfigError(f"{req.data} is not the data {out} was trained on (resume needs the same data)")

    torch.manual_seed(seed)
    family = cls(mcfg, tcfg, data, seed, device, dd)
    opts = family.optimizers()
    val_key = cls.val_key
    epoch, step, global_step = 0, 0, 0
    best_val, best_epoch, bad_evals = float("inf"), -1, 0
    history: list[dict] = []
    elapsed_before = 0.0
    if ckpt is not None:
        _load_state(family, opts, ckpt, out / "last.pt")
        epoch, step, global_step = int(ckpt["epoch"]), int(ckpt["step"]), int(ckpt["global_step"])
        best_val, best_epoch, bad_evals = float(ckpt["best_val"]), int(ckpt["best_epoch"]), int(ckpt["bad_evals"])
        history = list(ckpt.get("history", []))
        elapsed_before = float(ckpt.get("elapsed", 0.0))

    steps_per_epoch = family.steps_per_epoch()
    total_steps = steps_per_epoch * tcfg.epochs
    config = {"model": asdict(mcfg), "train": asdict(tcfg)}

    if dd.main:
        out.mkdir(parents=True, exist_ok=True)
        vocab.save(out / "vocab.json")
        commands = list(run_info.get("commands", [])) + ([req.command] if req.command else [])
        run_info = {
            "family": family_name, "data": str(req.data),
            "data_manifest": {k: data.manifest.get(k) for k in ("sources", "settings", "counts")},
            "config": config, "seed": seed, "vocab_fingerprint": vocab.fingerprint(),
            "params": family.num_params(), "world_size": dd.world, "device": device.type,
            "torch": torch.__version__, "commands": commands,
            "precision": getattr(family, "precision_label", "fp32"),
        }
        (out / "run.json").write_text(json.dumps(run_info, indent=1) + "\n")

    started = time.perf_counter()
    deadline = started + req.max_minutes * 60 if req.max_minutes else None
    stop_reason = "epochs done"

    def common() -> dict:
        return {"format": CHECKPOINT_FORMAT, "family": family_name, "config": config, "seed": seed,
                "epoch": epoch, "step": step, "global_step": global_step,
                "vocab_fingerprint": vocab.fingerprint(), **_module_states(family)}

    def checkpoint() -> None:
        if not dd.main:
            return
        save_checkpoint(out / "last.pt", {
            **common(), **_optimizer_states(opts), "best_val": best_val, "best_epoch": best_epoch,
            "bad_evals": bad_evals, "history": history,
            "elapsed": elapsed_before + time.perf_counter() - started, "data_crc": crc, "world_size": dd.world,
        })

    def evaluation(train_means: dict[str, float], ups: float) -> bool:
        """Validate, record, keep the best weights; True when early stopping says stop."""
        nonlocal best_val, best_epoch, bad_evals
        family.train(False)
        with torch.no_grad():
            figures = family.evaluate()
        family.train(True)
        val = float(figures.get(val_key, float("nan")))
        improved = val < best_val - 1e-4 or (math.isnan(best_val) or best_val == float("inf"))
        if improved and not math.isnan(val):
            best_val, best_epoch, bad_evals = val, epoch, 0
        else:
            bad_evals += 1
        row = {"epoch": epoch + step / steps_per_epoch, "step": global_step,
               "train_loss": round(train_means.get("loss", float("nan")), 5),
               **{k: round(v, 5) for k, v in train_means.items() if k != "loss"},
               **{k: round(float(v), 5) for k, v in figures.items()},
               "tokens_per_s": round(ups), "lr": lr_at(tcfg, global_step, total_steps),
               "elapsed_s": round(elapsed_before + time.perf_counter() - started, 1)}
        history.append(row)
        if dd.main:
            if improved and not math.isnan(val):
                save_checkpoint(out / "best.pt", {**common(), val_key: val})
            checkpoint()
            write_history(out, history, cls.plot_keys)
        if on_eval is not None:
            on_eval(row)
        extra = "".join(f"  {k} {v:.4f}" for k, v in figures.items() if k != val_key)
        progress.log(f"epoch {row['epoch']:.2f}  step {global_step}  train {row['train_loss']:.4f}  "
                     f"{val_key} {val:.4f}{' *' if improved else ''}{extra}  {ups:,.0f} units/s")
        return bool(tcfg.patience) and bad_evals >= tcfg.patience

    family.train(True)
    sums: dict[str, float] = {}
    loss_n, units_done, t_window = 0, 0, time.perf_counter()

    def means() -> dict[str, float]:
        return {k: v / max(1, loss_n) for k, v in sums.items()}

    with Progress(total_steps, req.quiet or not dd.main) as progress, InterruptAtStepBoundary() as stopper:
        progress.update(global_step)
        try:
            while epoch < tcfg.epochs:
                while step < steps_per_epoch:
                    batch = family.batch(epoch, step)
                    # Re-seeding per step is what makes a resumed run identical (dropout masks, noise).
                    torch.manual_seed(hash_seed(seed, epoch, step, dd.rank))
                    lr = lr_at(tcfg, global_step, total_steps)
                    for opt in opts.values():
                        for g in opt.param_groups:
                            g["lr"] = lr
                    figures = family.train_step(batch, opts)
                    step += 1
                    global_step += 1
                    for k, v in figures.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
                    loss_n += 1
                    units_done += family.units(batch)
                    ups = units_done / max(1e-9, time.perf_counter() - t_window)
                    progress.update(global_step, epoch=f"{epoch + 1}/{tcfg.epochs}",
                                    loss=f"{sums.get('loss', 0.0) / loss_n:.3f}", tps=f"{ups:,.0f}")
                    timed_out, interrupted = _any([deadline is not None and time.perf_counter() >= deadline,
                                                   stopper.requested], dd)
                    if interrupted:
                        raise KeyboardInterrupt
                    if (tcfg.eval_every and global_step % tcfg.eval_every == 0 and step < steps_per_epoch) or (
                            timed_out and step < steps_per_epoch):
                        stop = evaluation(means(), ups)
                        progress.update(global_step, val=f"{history[-1][val_key]:.3f}")
                        sums, loss_n, units_done, t_window = {}, 0, 0, time.perf_counter()
                        if stop or timed_out:
                            stop_reason = "time limit" if timed_out else "early stopping"
                            raise _Stop
                epoch, step = epoch + 1, 0
                stop = evaluation(means(), units_done / max(1e-9, time.perf_counter() - t_window))
                progress.update(global_step, val=f"{history[-1][val_key]:.3f}")
                sums, loss_n, units_done, t_window = {}, 0, 0, time.perf_counter()
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

    summary = {"stop_reason": stop_reason, "val_key": val_key, "best_val": best_val, "best_epoch": best_epoch,
               "epochs_done": epoch + step / steps_per_epoch, "global_step": global_step,
               "train_seconds": round(elapsed_before + time.perf_counter() - started, 1),
               "params": family.num_params()}
    if val_key == "val_nll":
        summary["best_val_nll"] = best_val
    if dd.main:
        run_info["summary"] = summary
        (out / "run.json").write_text(json.dumps(run_info, indent=1) + "\n")
        progress.log(f"done ({stop_reason}): best {val_key} {best_val:.4f}; run in {out}")
    if dd.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def _module_states(family: Family) -> dict:
    """The main module under "model" (wave-1 checkpoints read the same), the others under "modules"."""
    extra = {k: m.state_dict() for k, m in family.modules.items() if k != "model"}
    return {"model": family.modules["model"].state_dict(), **({"modules": extra} if extra else {})}


def _optimizer_states(opts: dict[str, torch.optim.Optimizer]) -> dict:
    extra = {k: o.state_dict() for k, o in opts.items() if k != "model"}
    return {"optimizer": opts["model"].state_dict(), **({"optimizers": extra} if extra else {})}


def _load_state(family: Family, opts: dict[str, torch.optim.Optimizer], ckpt: dict, path: Path) -> None:
    try:
        family.modules["model"].load_state_dict(ckpt["model"])
        for k, sd in (ckpt.get("modules") or {}).items():
            family.modules[k].load_state_dict(sd)
        opts["model"].load_state_dict(ckpt["optimizer"])
        for k, sd in (ckpt.get("optimizers") or {}).items():
            opts[k].load_state_dict(sd)
    except (KeyError, RuntimeError, ValueError) as err:
        raise ModelLoadError(f"{path} does not fit the model its config describes ({str(err)[:200]})") from err


class _Stop(Exception):
    pass


def _any(flags: list[bool], dd: Dist) -> list[bool]:
    """Each flag true on every process if it is true on any: all ranks must stop at the same step."""
    if dd.world == 1:
        return flags
    t = torch.tensor([int(f) for f in flags])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def hash_seed(*parts: int) -> int:
    return zlib.crc32(np.array(parts, dtype=np.int64).tobytes()) & 0x7FFF_FFFF


def vocab_of_run(run_dir: Path) -> Vocabulary:
    return Vocabulary.load(run_dir / "vocab.json")
