"""The critic: a small bidirectional LSTM over tokens that tells a real continuation of a phrase
from the default model's own sampled one. The live engine uses it to play the best of K sampled
candidates (liveduet/live/candidates.py).

One example is a context (the last `context_tokens` tokens before a point in a validation piece,
left-padded) followed by a stretch of `stretch_events` events (two tokens each): the composer's
own, label 1, or the model's, sampled from that context with the live sampler's settings, label 0.
The network reads both with a segment embedding, averages its outputs over the stretch, and gives
one logit ("how real"). Shipped beside the model it was trained against::

    models/default/critic.ts     TorchScript: forward(tokens [B, T] int64) -> logits [B]
    models/default/critic.json   config, vocabulary fingerprint, sha256, held-out ROC-AUC, data

`python -m liveduet.model.critic --config configs/critic.toml --data DATA... --out models/default`
builds the examples, trains (time-limited), measures ROC-AUC on held-out pieces and exports.
Pieces are split by name, so every transposition of a piece is on one side.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from liveduet.config import load_toml, parse_section
from liveduet.errors import ConfigError, ModelLoadError
from liveduet.fsutil import write_atomic
from liveduet.music.dataset import Dataset
from liveduet.music.tokens import PAD, Vocabulary

CRITIC_FILE = "critic.ts"
CRITIC_CARD = "critic.json"
FORMAT = "liveduet-critic/1"


@dataclass
class CriticConfig:
    context_tokens: int = 32  # tokens of context before the stretch
    stretch_events: int = 4  # events per candidate stretch
    embed: int = 64
    hidden: int = 64
    layers: int = 1
    dropout: float = 0.1
    # Start from the judged model's own token embedding, frozen (embed must equal its width): the
    # critic then reads tokens the way the model does, and has far fewer weights to overfit with.
    pretrained_embed: bool = False
    # How the model's continuations are sampled (the live [answer] defaults).
    temperature: float = 1.0
    top_p: float = 0.95
    positions_per_piece: int = 8  # example points per piece (every stretch, from the 8th event on)
    held_out_percent: float = 20.0  # pieces (by name) kept for the ROC-AUC
    batch: int = 128
    lr: float = 2e-3
    epochs: int = 30
    max_minutes: float = 12.0
    seed: int = 0

    def validate(self) -> None:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"[critic] {key} = {getattr(self, key)!r}: {why}")

        if not 2 <= self.context_tokens <= 1024:
            raise bad("context_tokens", "must be 2..1024")
        if not 1 <= self.stretch_events <= 64:
            raise bad("stretch_events", "must be 1..64")
        for key in ("embed", "hidden"):
            if not 1 <= getattr(self, key) <= 4096:
                raise bad(key, "must be 1..4096")
        if not 1 <= self.layers <= 4:
            raise bad("layers", "must be 1..4")
        if not 0 < self.held_out_percent < 100:
            raise bad("held_out_percent", "must be in (0, 100)")

    @property
    def length(self) -> int:
        return self.context_tokens + 2 * self.stretch_events


def load_critic_config(path: str | Path) -> CriticConfig:
    data = load_toml(path)
    cfg = parse_section("critic", data.get("critic"), CriticConfig)
    cfg.validate()
    return cfg


class CriticNet(nn.Module):
    """tokens [B, C + 2S] (context, then the stretch) → logit [B]: real (> 0) or the model's."""

    def __init__(self, vocab_size: int, cfg: CriticConfig) -> None:
        super().__init__()
        self.context = cfg.context_tokens
        self.embed = nn.Embedding(vocab_size, cfg.embed, padding_idx=PAD)
        self.segment = nn.Embedding(2, cfg.embed)
        self.rnn = nn.LSTM(cfg.embed, cfg.hidden, cfg.layers, batch_first=True, bidirectional=True,
                           dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(2 * cfg.hidden, 1)
        seg = torch.zeros(cfg.length, dtype=torch.long)
        seg[cfg.context_tokens:] = 1
        self.register_buffer("seg", seg, persistent=False)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.drop(self.embed(tokens) + self.segment(self.seg)[None])  # [B, T, E]
        y, _ = self.rnn(x)  # [B, T, 2H]
        pooled = y[:, self.context:].mean(dim=1)  # [B, 2H] over the stretch
        return self.head(self.drop(pooled))[:, 0]  # [B]


# -- examples --------------------------------------------------------------------------------

def _piece_names(data: Dataset) -> list[str]:
    pieces = data.manifest.get("pieces") or []
    return [str(p.get("name", i)) if isinstance(p, dict) else str(i) for i, p in enumerate(pieces)]


def excluded_names(datasets: list[Dataset], calls: int) -> frozenset[str]:
    """Names of the pieces the live evaluation plays from these folders (its first `calls` excerpts;
    0: every validation piece), so that the critic never trains on an evaluated call."""
    if calls <= 0:
        return frozenset(n for d in datasets for n, s in zip(_piece_names(d), d.split) if s == 1)
    from liveduet.live.evaluate import excerpts

    return frozenset(ex.name for d in datasets for ex in excerpts(d, 8, calls))


def held_out(name: str, percent: float) -> bool:
    """The critic's own split, by piece name (all transpositions on one side). Salted: the data's
    validation split is itself a crc32 of the name, so an unsalted crc would put every piece out."""
    return (zlib.crc32(f"critic:{name}".encode()) % 10_000) < percent * 100


def example_plan(datasets: list[Dataset], cfg: CriticConfig, exclude: frozenset[str]) -> list[tuple]:
    """(tokens, name, points) for every validation piece used: where its stretches start (after
    event 8, every S events), at most `positions_per_piece` of them."""
    S = cfg.stretch_events
    plan = []
    for data in datasets:
        names = _piece_names(data)
        for i, (a, b, split) in enumerate(zip(data.offsets[:-1], data.offsets[1:], data.split)):
            name = names[i] if i < len(names) else str(i)
            if split != 1 or name in exclude:
                continue
            tokens = data.tokens[a:b].astype(np.int64)
            points = list(range(1 + 2 * 8, len(tokens) - 2 * S - 1, 2 * S))[: cfg.positions_per_piece]
            if points:
                plan.append((tokens, name, points))
    return plan


def held_out_flags(plan: list[tuple], cfg: CriticConfig) -> np.ndarray:
    """One flag per example (two per point: real, then the model's), in `build_examples`' order."""
    return np.array([held_out(name, cfg.held_out_percent) for _, name, points in plan for _ in range(2 * len(points))],
                    dtype=bool)


def build_examples(runtime: object, datasets: list[Dataset], cfg: CriticConfig, exclude: frozenset[str] = frozenset(),
                   log=lambda line: None) -> dict[str, np.ndarray]:
    """Real and sampled stretches after contexts from the *validation* pieces of `datasets` (the pieces
    the default model never trained on), less the pieces named in `exclude` (the evaluation sets'
    calls). Returns tokens [N, T], label [N], held_out [N] (bool)."""
    from liveduet.model.sampling import Sampler

    C, S = cfg.context_tokens, cfg.stretch_events
    sampler = Sampler(runtime, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)  # type: ignore[arg-type]
    rows: list[np.ndarray] = []
    labels: list[int] = []
    plan = example_plan(datasets, cfg, exclude)
    started = time.perf_counter()
    for n, (tokens, _, points) in enumerate(plan):
        sampler.reset()  # <bos> fed: tokens[0] is <bos>
        fed = 1
        for p in points:
            while fed < p:
                sampler.feed(int(tokens[fed]))
                fed += 1
            ctx = tokens[max(0, p - C):p]
            ctx = np.concatenate([np.full(C - len(ctx), PAD), ctx])
            mark = sampler.checkpoint()
            fake: list[int] = []
            for _ in range(S):
                fake += runtime.vocab.encode([sampler.sample_event()])  # type: ignore[attr-defined]
            sampler.restore(mark)
            rows += [np.concatenate([ctx, tokens[p:p + 2 * S]]), np.concatenate([ctx, fake])]
            labels += [1, 0]
        if n % 100 == 99:
            log(f"examples: {len(rows)} from {n + 1}/{len(plan)} pieces after {time.perf_counter() - started:.0f} s")
    return {"tokens": np.stack(rows).astype(np.int64), "label": np.array(labels, dtype=np.float32),
            "held_out": held_out_flags(plan, cfg)}


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (ties count half): P(a real example scores above a model one)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    s = scores[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos = labels > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        return float("nan")
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def train_critic(examples: dict[str, np.ndarray], vocab_size: int, cfg: CriticConfig,
                 log=lambda line: None, embedding: Tensor | None = None) -> tuple[CriticNet, dict]:
    """Train on the examples of the training pieces (time-limited), keep the epoch with the best
    held-out ROC-AUC; returns the network (eval mode) and its figures. `embedding` [V, E]: the
    judged model's, copied in and frozen."""
    torch.manual_seed(cfg.seed)
    net = CriticNet(vocab_size, cfg)
    if embedding is not None:
        if tuple(embedding.shape) != tuple(net.embed.weight.shape):
            raise ConfigError(f"[critic] embed = {cfg.embed}: the model's embedding is {tuple(embedding.shape)}")
        with torch.no_grad():
            net.embed.weight.copy_(embedding)
        net.embed.weight.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.01)
    tok, lab, held = (torch.from_numpy(examples["tokens"]), torch.from_numpy(examples["label"]),
                      examples["held_out"])
    tr, te = np.flatnonzero(~held), np.flatnonzero(held)
    rng = np.random.default_rng(cfg.seed)
    best: tuple[float, dict, int] = (-1.0, {}, -1)
    started = time.perf_counter()
    history = []
    for epoch in range(cfg.epochs):
        net.train()
        order = rng.permutation(tr)
        total = 0.0
        for i in range(0, len(order), cfg.batch):
            idx = order[i:i + cfg.batch]
            loss = F.binary_cross_entropy_with_logits(net(tok[idx]), lab[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            total += loss.item() * len(idx)
        auc = evaluate_auc(net, tok[te], lab[te].numpy())
        history.append({"epoch": epoch + 1, "train_loss": round(total / max(1, len(tr)), 4),
                        "held_out_auc": round(auc, 4)})
        log(f"epoch {epoch + 1}: loss {total / max(1, len(tr)):.4f}, held-out ROC-AUC {auc:.4f}")
        if auc > best[0]:
            best = (auc, {k: v.clone() for k, v in net.state_dict().items()}, epoch + 1)
        if time.perf_counter() - started > cfg.max_minutes * 60:
            break
    net.load_state_dict(best[1])
    net.eval()
    figures = {"held_out_auc": round(best[0], 4), "best_epoch": best[2], "epochs_run": len(history),
               "train_examples": int(len(tr)), "held_out_examples": int(len(te)),
               "seconds": round(time.perf_counter() - started, 1), "history": history}
    return net, figures


@torch.no_grad()
def evaluate_auc(net: nn.Module, tokens: Tensor, labels: np.ndarray) -> float:
    was = net.training
    net.eval()
    scores = torch.cat([net(tokens[i:i + 512]) for i in range(0, len(tokens), 512)]).numpy()
    net.train(was)
    return roc_auc(scores, labels)


# -- export and load -------------------------------------------------------------------------

def export_critic(net: CriticNet, cfg: CriticConfig, vocab: Vocabulary, out: Path, figures: dict,
                  model_card: dict | None = None, data: list[str] | None = None) -> dict:
    """critic.ts + critic.json into the model folder `out` (beside the model it judges)."""
    from liveduet.model.card import sha256_of

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit.*")
        scripted = torch.jit.script(net.eval())
        tmp = out / (CRITIC_FILE + ".tmp")
        scripted.save(str(tmp))
    tmp.replace(out / CRITIC_FILE)
    card = {"format": FORMAT, "file": CRITIC_FILE, "sha256": sha256_of(out / CRITIC_FILE),
            "config": asdict(cfg), "vocab_size": len(vocab), "vocab_fingerprint": vocab.fingerprint(),
            "judges": (model_card or {}).get("sha256"), "data": data or [],
            "params": sum(p.numel() for p in net.parameters()), **figures}
    write_atomic(out / CRITIC_CARD, (json.dumps(card, indent=1) + "\n").encode())
    return card


class Critic:
    """A loaded critic: `score(tokens [B, T])` → logits [B] (higher = more like the composer)."""

    def __init__(self, module: object, cfg: CriticConfig, card: dict, path: Path) -> None:
        self.module, self.cfg, self.card, self.path = module, cfg, card, path

    @classmethod
    def load(cls, folder: str | Path, vocab: Vocabulary) -> Critic:
        """The critic beside a model; a missing, damaged or foreign-vocabulary one → ModelLoadError."""
        from liveduet.model.card import sha256_of

        folder = Path(folder)
        try:
            card = json.loads((folder / CRITIC_CARD).read_text())
        except FileNotFoundError as err:
            raise ModelLoadError(f"{folder} has no critic ({CRITIC_CARD}); train one with "
                                 "`python -m liveduet.model.critic` or set [answer] candidates = 1") from err
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ModelLoadError(f"{folder}/{CRITIC_CARD} is damaged: {err}") from err
        if not isinstance(card, dict) or card.get("format") != FORMAT:
            raise ModelLoadError(f"{folder}/{CRITIC_CARD} is not a liveduet critic")
        if card.get("vocab_fingerprint") != vocab.fingerprint():
            raise ModelLoadError(f"{folder}: the critic was trained with vocabulary {card.get('vocab_fingerprint')}, "
                                 f"the model uses {vocab.fingerprint()}; retrain the critic for this model")
        file = folder / CRITIC_FILE
        if not file.is_file() or sha256_of(file) != card.get("sha256"):
            raise ModelLoadError(f"{file} is missing or does not match the checksum in {CRITIC_CARD}")
        try:
            cfg = CriticConfig(**card["config"])
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit.*")
                module = torch.jit.load(str(file), map_location="cpu")
        except Exception as err:  # a damaged archive: torch raises RuntimeError/ValueError
            raise ModelLoadError(f"{file} cannot be loaded ({str(err).strip().splitlines()[0][:200]})") from err
        critic = cls(module, cfg, card, folder)
        critic.score(torch.full((2, cfg.length), PAD, dtype=torch.long))  # warm up
        return critic

    def score(self, tokens: Tensor) -> Tensor:
        """[B, T] → logits [B]. oneDNN's LSTM is on for this call only: over a whole sequence it is
        ~1.5x faster than the plain kernel (the runtime turns it off for one-token steps)."""
        was = torch.backends.mkldnn.enabled
        torch.backends.mkldnn.enabled = True
        try:
            with torch.inference_mode():
                return self.module(tokens)
        finally:
            torch.backends.mkldnn.enabled = was


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m liveduet.model.critic", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=Path("configs/critic.toml"))
    p.add_argument("--data", type=Path, nargs="+", required=True, help="prepared folders (their validation pieces)")
    p.add_argument("--model", type=Path, default=Path("models/default"), help="the model whose answers it judges")
    p.add_argument("--out", type=Path, help="where critic.ts/critic.json go (default: --model)")
    p.add_argument("--exclude", type=Path, nargs="*", default=[],
                   help="prepared folders whose live-evaluation calls must not be used (their validation pieces)")
    p.add_argument("--exclude-calls", type=int, default=0,
                   help="only the first N calls `evaluate --live --calls N` plays from each --exclude folder "
                        "(default 0: every validation piece)")
    p.add_argument("--examples", type=Path, help="cache of the built examples (.npz)")
    args = p.parse_args(argv)
    from liveduet.model.runtime import ModelRuntime
    from liveduet.music.dataset import load_dataset

    torch.set_num_threads(1)
    cfg = load_critic_config(args.config)
    runtime = ModelRuntime.load(args.model)
    datasets = [load_dataset(d) for d in args.data]
    for d in datasets:
        runtime.vocab.check_compatible(d.vocab, "the model")
    exclude = excluded_names([load_dataset(d) for d in args.exclude], args.exclude_calls)
    print(f"excluding {len(exclude)} pieces the live evaluation plays")
    if args.examples and args.examples.exists():
        ex = dict(np.load(args.examples))
        ex["held_out"] = held_out_flags(example_plan(datasets, cfg, exclude), cfg)  # the split, recomputed
    else:
        ex = build_examples(runtime, datasets, cfg, exclude, log=print)
        if args.examples:
            np.savez_compressed(args.examples, **ex)
    torch.backends.mkldnn.enabled = True  # training: oneDNN helps (the runtime turned it off for stepping)
    embedding = None
    if cfg.pretrained_embed:
        embedding = dict(runtime.module.named_parameters())["model.embed.weight"].detach().clone()
    net, figures = train_critic(ex, len(runtime.vocab), cfg, log=print, embedding=embedding)
    figures["examples_per_class"] = int(len(ex["label"]) // 2)
    card = export_critic(net, cfg, runtime.vocab, args.out or args.model, figures, runtime.card,
                         [str(d) for d in args.data])
    print(json.dumps({k: v for k, v in card.items() if k != "history"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

