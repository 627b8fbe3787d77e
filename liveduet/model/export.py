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
import hashlib
import json
import shutil
import warnings
from pathlib import Path

import torch
import torch.nn as nn
from torch import Tensor

from liveduet import __version__
from liveduet.errors import LiveduetError, ModelLoadError
from liveduet.fsutil import write_atomic
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


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    model = model_from_checkpoint(ckpt, ckpt_path).eval()
    vocab = Vocabulary.load(run_dir / "vocab.json")
    vocab.check_compatible(str(ckpt.get("vocab_fingerprint")), f"the checkpoint {ckpt_path}")
    if out.exists() and any(out.iterdir()) and not force:
        raise LiveduetError(f"{out} exists (use --force to replace it)")
    run_info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}

    scripted = script_step_module(model)
    probe = torch.randint(3, len(vocab), (1, 64), generator=torch.Generator().manual_seed(0))
    worst = check_parity(model, scripted, probe)
    if worst > PARITY_TOLERANCE:
        raise LiveduetError(f"exported step differs from the trained model by {worst:.2e} (> {PARITY_TOLERANCE})")

    tmp = out.with_name(out.name + ".tmp-export")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit.*")
        scripted.save(str(tmp / MODEL_FILE))
    vocab.save(tmp / "vocab.json")
    config = ckpt["config"]
    (tmp / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    for extra in ("loss.png", "history.json"):
        if (run_dir / extra).exists():
            shutil.copy2(run_dir / extra, tmp / extra)

    summary = run_info.get("summary", {})
    data_info = run_info.get("data_manifest") or {}
    val_nll = ckpt.get("val_nll")
    card = {
        "card_version": CARD_VERSION,
        "name": name or out.name,
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
        "checkpoint": {"file": ckpt_path.name, "epoch": ckpt.get("epoch"), "step": ckpt.get("step"),
                       "global_step": ckpt.get("global_step")},
        "data": {"folder": run_info.get("data"), "sources": data_info.get("sources"),
                 "settings": data_info.get("settings"), "counts": data_info.get("counts")},
        "training": {"seconds": summary.get("train_seconds"), "epochs_done": summary.get("epochs_done"),
                     "stop_reason": summary.get("stop_reason"), "steps": summary.get("global_step"),
                     "seed": run_info.get("seed"), "device": run_info.get("device"),
                     "world_size": run_info.get("world_size"), "torch": run_info.get("torch")},
        "reproduce": [c for c in [_prepare_command(data_info, run_info.get("data", "DATA")),
                                  *run_info.get("commands", []),
                                  f"liveduet export {run_dir} --out {out}"] if c],
        "export_parity_max_abs": worst,
        "evaluation": evaluation,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "liveduet_version": __version__,
    }
    (tmp / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    (tmp / "card.md").write_text(render_card(card))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return card


def _fmt(value: object, spec: str = "") -> str:
    if value is None:
        return "—"
    return format(value, spec) if spec else str(value)


def render_card(card: dict) -> str:
    """card.json → card.md."""
    m = card["config"]["model"]
    t = card["config"]["train"]
    tr = card.get("training") or {}
    data = card.get("data") or {}
    counts = data.get("counts") or {}
    lines = [
        f"# liveduet model card: {card['name']}",
        "",
        f"A {m['layers']}-layer {m['arch'].upper()} of {m['hidden']} units (embedding {m['embed']}, "
        f"{'tied' if m.get('tie_weights') else 'separate'} output head) over a {card['vocab_size']}-token "
        "vocabulary of factored (pitch set, duration) pairs. It answers a player's phrase one token at a "
        "time with a cached state.",
        "",
        "| | |",
        "|---|---|",
        f"| format | {card['format']} (`{card['file']}`, sha256 `{card['sha256'][:16]}…`) |",
        f"| parameters | {card['params']:,} |",
        f"| file size | {card['size_bytes'] / 1e6:.1f} MB |",
        f"| validation NLL | {_fmt(card.get('val_nll'), '.4f')} nats/token |",
        f"| vocabulary | {card['vocab_size']} tokens, fingerprint `{card['vocab_fingerprint']}` |",
        f"| training time | {_fmt(tr.get('seconds'))} s, {_fmt(tr.get('epochs_done'), '.2f')} epochs "
        f"({_fmt(tr.get('stop_reason'))}), {_fmt(tr.get('steps'))} steps |",
        f"| hardware | {_fmt(tr.get('device'))} × {_fmt(tr.get('world_size'))} process(es), torch "
        f"{_fmt(tr.get('torch'))} |",
        f"| training | seq_len {t['seq_len']}, batch {t['batch']}, {t['optimizer']} lr {t['lr']} "
        f"({t['lr_schedule']}), dropout {m['dropout']}, targets: {t['targets']} positions, seed "
        f"{_fmt(tr.get('seed'))} |",
        "",
        "## Data",
        "",
        f"Folder `{_fmt(data.get('folder'))}`; sources: {', '.join(data.get('sources') or []) or '—'}.",
        f"Transpositions {_fmt((data.get('settings') or {}).get('transpose'))}; "
        f"{_fmt(counts.get('pieces'))} pieces, {_fmt(counts.get('sequences'))} sequences, "
        f"{_fmt(counts.get('train_tokens'))} training / {_fmt(counts.get('val_tokens'))} validation tokens "
        "(validation pieces are held out with all their transpositions).",
        "",
    ]
    ev = card.get("evaluation")
    if card.get("notes"):
        lines += ["## Notes", "", str(card["notes"]), ""]
    lines += ["## Evaluation", ""]
    if ev:
        scored = [(k, ev[k]) for k in ("model", "markov", "unigram") if isinstance(ev.get(k), dict) and "nll" in ev[k]]
        if scored:
            lines += [f"Next-token prediction on {_fmt(scored[0][1].get('tokens'))} held-out tokens "
                      f"(`liveduet evaluate`, data `{_fmt(ev.get('data'))}`):", "",
                      "| predictor | NLL (nats/token) | perplexity | top-1 accuracy |", "|---|---|---|---|"]
            lines += [f"| {k} | {v['nll']:.4f} | {_fmt(v.get('perplexity'), '.2f')} | "
                      f"{_fmt(v.get('accuracy'), '.3f')} |" for k, v in scored]
            lines += ["", "Full output:", ""]
        lines += ["```json", json.dumps(ev, indent=1), "```", ""]
    else:
        lines += ["Not run at export time (`liveduet evaluate --model DIR --data DATA --json`).", ""]
    lines += render_live_evaluation(card.get("live_evaluation"))
    bench = card.get("benchmark")
    if bench:
        lines += ["## Speed", "", "From `benchmarks/bench_model.py` on the machine it was trained on:", "",
                  "```json", json.dumps(bench, indent=1), "```", ""]
    lines += ["## Reproduce", "", "```sh", *card["reproduce"], "```", "",
              f"Exported {card['created']} by liveduet {card['liveduet_version']}; the exported step matches "
              f"the trained model within {card['export_parity_max_abs']:.1e}.", ""]
    return "\n".join(lines)


LIVE_LABELS = {"pc_cosine": "pitch-class cosine", "rhythm_overlap": "rhythm overlap (IOI histograms)",
               "register_gap": "register gap (semitones, lower is closer)", "in_key": "in the call's key",
               "texture_gap": "texture gap (notes per onset)"}


def render_live_evaluation(live: object) -> list[str]:
    """The card's section on listening through the daemon (`liveduet evaluate --live --card`)."""
    if not isinstance(live, dict) or not live.get("runs"):
        return []
    lines = ["## Listening, measured through the daemon", "",
             "`liveduet evaluate --live` plays held-out calls through the daemon's own Session (simulated time, "
             "one session, a simulated player with its own dynamics, articulation and swing) and compares each "
             "answer with its call, next to the composer's own continuation and another piece's. *place*: "
             "0 = no closer to the call than another piece, 1 = as close as the composer.", ""]
    for name, run in live["runs"].items():
        o = run.get("options", {})
        lines += [f"**{name}** — {run['calls_played']} calls of {o.get('beats')} beats at {o.get('bpm')} bpm "
                  f"(data `{run.get('data', '—')}`):", "",
                  "| call → continuation | liveduet | composer | another piece | place |", "|---|---|---|---|---|"]
        for key, row in run["measures"].items():
            cells = ["—" if row[w] is None else f"{row[w]:.3f}" for w in ("answer", "composer", "another")]
            lines.append(f"| {LIVE_LABELS.get(key, key)} | {' | '.join(cells)} | "
                         f"{'—' if row['place'] is None else format(row['place'], '.2f')} |")
        e = run.get("expression", {})
        lines += ["", f"Answered {run['answered']}/{run['calls_played']}; false ends {run['false_ends']}; entry "
                  f"{run['entry_beats_median']} beats after the call's last release (median); velocity contour "
                  f"r = {e.get('velocity_corr_mean')}; swing within 0.05 of the call's: {e.get('swing_within_0.05')}; "
                  f"articulation within 10 %: {e.get('articulation_within_10pct')}.", ""]
    sweep = live.get("sweep")
    if sweep:
        lines += ["Sampling and listening settings, one changed at a time (`benchmarks/bench_listening.py`, "
                  "place on pitch-class cosine / rhythm / register, in-key share):", "",
                  "| setting | pc | rhythm | register | in key | entry | false ends |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['setting']} | {r['place_pc_cosine']:.2f} | {r['place_rhythm']:.2f} | "
                  f"{r['place_register']:.2f} | {r['in_key']:.3f} | {r['entry_beats_median']} | {r['false_ends']:.2f} |"
                  for r in sweep]
        lines.append("")
    if live.get("why"):
        lines += [str(live["why"]), ""]
    return lines


def update_card(model_dir: str | Path, **fields: object) -> dict:
    """Add fields (e.g. evaluation=...) to an exported card and re-render card.md."""
    model_dir = Path(model_dir)
    card = json.loads((model_dir / "card.json").read_text())
    card.update(fields)
    write_atomic(model_dir / "card.json", (json.dumps(card, indent=1) + "\n").encode())
    write_atomic(model_dir / "card.md", render_card(card).encode())
    return card
