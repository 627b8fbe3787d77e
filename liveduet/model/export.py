"""Export a trained run to a self-describing model folder::

    models/NAME/
      model.ts      TorchScript step module: forward(token[B], state) / score(tokens[B, T], state) /
                    initial_state(batch); the state is a flat list of tensors (see card["state"])
      vocab.json    the vocabulary its token ids refer to
      config.json   model and training config
      card.json     what it is: format, checksum, data, size, validation NLL, how to reproduce it
      card.md       the same for people
      loss.png, history.json   the training curves, when the run has them

`card["format"]` names the loader (runtime.py dispatches on it), so a torch.export program can be
added later beside "torchscript" without breaking existing folders.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
from torch import Tensor

from liveduet import __version__
from liveduet.errors import LiveduetError, ModelLoadError
from liveduet.model.card import render_card, sha256_of
from liveduet.model.family import DEFAULT_FAMILY, family_class
from liveduet.model.lstm import DuetLM
from liveduet.model.train import load_checkpoint, model_from_checkpoint
from liveduet.music.tokens import Vocabulary

FORMAT_TORCHSCRIPT = "torchscript"
MODEL_FILE = "model.ts"
CARD_VERSION = 1
PARITY_TOLERANCE = 1e-5


class StepModule(nn.Module):
    """What the runtime calls: the model's `run` with the state as a flat list (TorchScript-friendly)."""

    def __init__(self, model: DuetLM) -> None:
        super().__init__()
        self.model = model

    def forward(self, token: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """token [B] int64 → logits [B, V], next state."""
        logits, state = self.model.run(token.unsqueeze(1), state)  # [B, 1, V]
        return logits.squeeze(1), state

    @torch.jit.export
    def score(self, tokens: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """tokens [B, T] → logits [B, T, V], state after the last token."""
        return self.model.run(tokens, state)

    @torch.jit.export
    def initial_state(self, batch: int) -> list[Tensor]:
        return self.model.initial_state_list(batch)


def script_step_module(model: DuetLM, fuse: bool = True) -> torch.jit.ScriptModule:
    """TorchScript of the step module (with the LSTM fused for batch-1 steps unless `fuse` is False).
    torch 2.13 deprecates torch.jit with a warning on every call; it is silenced here only, around
    our own calls (pytest turns our DeprecationWarnings into errors)."""
    model = model.fused_for_stepping() if fuse else model.eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit.*")
        return torch.jit.script(StepModule(model))


def check_parity(model: DuetLM, scripted: torch.jit.ScriptModule, tokens: Tensor) -> float:
    """Largest difference between eager `forward` over `tokens` [1, T] and the scripted step fed one
    token at a time with its cached state, relative to the logits' scale (at least 1): float32
    rounding alone is ~4e-6 on a logit of 30, so a fixed absolute bound would flag trained models."""
    with torch.no_grad():
        full, _ = model(tokens)  # [1, T, V]
        state = scripted.initial_state(1)
        worst = 0.0
        for t in range(tokens.shape[1]):
            logits, state = scripted(tokens[:, t], state)  # [1, V]
            worst = max(worst, float((logits - full[:, t]).abs().max()))
    return worst / max(1.0, float(full.abs().max()))


def _prepare_command(data: dict | None, data_dir: str) -> str | None:
    """The `liveduet prepare` line that rebuilds the training data, from its manifest."""
    if not data or not data.get("sources"):
        return None
    s = data.get("settings") or {}
    parts = ["liveduet prepare", *data["sources"]]
    shifts = s.get("transpose") or [0]
    if shifts != [0]:
        lo, hi = min(shifts), max(shifts)
        parts.append(f"--transpose {lo}..{hi}" if shifts == list(range(lo, hi + 1)) else
                     "--transpose " + ",".join(map(str, shifts)))
    if s.get("min_count", 3) != 3:
        parts.append(f"--min-count {s['min_count']}")
    if s.get("max_chords") is not None:
        parts.append(f"--max-chords {s['max_chords']}")
    if s.get("val_percent", 5.0) != 5.0:
        parts.append(f"--val-percent {s['val_percent']:g}")
    parts.append(f"--out {data_dir}")
    return " ".join(parts)


def export_run(run_dir: str | Path, out: str | Path, force: bool = False, name: str | None = None,
               evaluation: dict | None = None) -> dict:
    """Export the best checkpoint of `run_dir` to the folder `out`. Returns the card."""
    run_dir, out = Path(run_dir), Path(out)
    if not run_dir.is_dir():
        raise ModelLoadError(f"run folder {run_dir} does not exist")
    ckpt_path = run_dir / "best.pt" if (run_dir / "best.pt").exists() else run_dir / "last.pt"
    ckpt = load_checkpoint(ckpt_path)
    family = str(ckpt.get("family") or DEFAULT_FAMILY)
    if family != DEFAULT_FAMILY:
        if out.exists() and any(out.iterdir()) and not force:
            raise LiveduetError(f"{out} exists (use --force to replace it)")
        return family_class(family).export(run_dir, ckpt, out, force, name, evaluation)
    model = model_from_checkpoint(ckpt, ckpt_path).eval()
    vocab = Vocabulary.load(run_dir / "vocab.json")
    vocab.check_compatible(str(ckpt.get("vocab_fingerprint")), f"the checkpoint {ckpt_path}")
    if out.exists() and any(out.iterdir()) and not force:
        raise LiveduetError(f"{out} exists (use --force to replace it)")
    run_info = read_run_json(run_dir, "run.json", {})

    scripted = script_step_module(model)
    probe = torch.randint(3, len(vocab), (1, 64), generator=torch.Generator().manual_seed(0))
    worst = check_parity(model, scripted, probe)
    if worst > PARITY_TOLERANCE:
        raise LiveduetError(f"exported step differs from the trained model by {worst:.2e} (> {PARITY_TOLERANCE})")

    tmp = stage_export(run_dir, out, vocab, ckpt["config"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit.*")
        scripted.save(str(tmp / MODEL_FILE))
    config = ckpt["config"]
    val_nll = ckpt.get("val_nll")
    card = {
        "card_version": CARD_VERSION,
        "name": name or out.name,
        "family": DEFAULT_FAMILY,
        "format": FORMAT_TORCHSCRIPT,
        "file": MODEL_FILE,
        "sha256": sha256_of(tmp / MODEL_FILE),
        "size_bytes": (tmp / MODEL_FILE).stat().st_size,
        "arch": config["model"]["arch"],
        "params": model.num_params(),
        "config": config,
        "state": {"type": model.state_type.__name__, "fields": list(model.state_type._fields)},
        "vocab_size": len(vocab),
        "vocab_fingerprint": vocab.fingerprint(),
        "val_nll": None if val_nll is None else round(float(val_nll), 5),
        **run_card_fields(run_dir, out, ckpt, run_info),
        "export_parity_max_abs": worst,
        "evaluation": evaluation,
    }
    card["checkpoint"] = {"file": ckpt_path.name, **card["checkpoint"]}
    return finish_export(tmp, out, card, render_card)


# -- what every family's exported folder shares ---------------------------------------------------

def read_run_json(run_dir: Path, name: str, default: object) -> object:
    """run.json / history.json of a run folder, or `default` where the run has none."""
    path = run_dir / name
    return json.loads(path.read_text()) if path.exists() else default


def stage_export(run_dir: Path, out: Path, vocab: Vocabulary, config: dict) -> Path:
    """A fresh `OUT.tmp-export` holding what every exported folder has besides its model file and
    card: vocab.json, config.json and the run's curves. `finish_export` puts it in place."""
    tmp = out.with_name(out.name + ".tmp-export")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    vocab.save(tmp / "vocab.json")
    (tmp / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    for extra in ("loss.png", "history.json"):
        if (run_dir / extra).exists():
            shutil.copy2(run_dir / extra, tmp / extra)
    return tmp


def run_card_fields(run_dir: Path, out: Path, ckpt: dict, run_info: dict) -> dict:
    """The card fields every family fills the same way: which checkpoint, the data, how it was
    trained, the commands that rebuild it, when and by which version."""
    summary = run_info.get("summary", {})
    data_info = run_info.get("data_manifest") or {}
    return {
        "checkpoint": {"epoch": ckpt.get("epoch"), "step": ckpt.get("step"), "global_step": ckpt.get("global_step")},
        "data": {"folder": run_info.get("data"), "sources": data_info.get("sources"),
                 "settings": data_info.get("settings"), "counts": data_info.get("counts")},
        "training": {"seconds": summary.get("train_seconds"), "epochs_done": summary.get("epochs_done"),
                     "stop_reason": summary.get("stop_reason"), "steps": summary.get("global_step"),
                     "seed": run_info.get("seed"), "device": run_info.get("device"),
                     "world_size": run_info.get("world_size"), "torch": run_info.get("torch")},
        "reproduce": [c for c in [_prepare_command(data_info, run_info.get("data", "DATA")),
                                  *run_info.get("commands", []),
                                  f"liveduet export {run_dir} --out {out}"] if c],
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "liveduet_version": __version__,
    }


def finish_export(tmp: Path, out: Path, card: dict, render: Callable[[dict], str]) -> dict:
    """Write the card (JSON and its Markdown) into the staged folder and put it in place of `out`."""
    (tmp / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    (tmp / "card.md").write_text(render(card))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return card
