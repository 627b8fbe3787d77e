"""The phrase VAE: a phrase's tokens → a latent z → the phrase again, varied.

It reads top to bottom: config → phrase cutting → module → the training family. MusicVAE's recipe
at liveduet's scale: a bidirectional GRU encoder reads the phrase's tokens (liveduet-tokens/1, the
language model's vocabulary) into μ and log σ² of a `z_dim` Gaussian; a one-layer GRU decoder
whose state starts at tanh(W z) and which reads z (and, with `position_embed`, its place in the
window) beside every input token writes the phrase back autoregressively. Against posterior
collapse: KL warm-up (β ramps from 0), free bits (each latent dimension's KL counts at least
`free_bits` nats) and word dropout on the decoder's inputs (it cannot copy the phrase from its own
teacher-forced inputs alone). Greedy decoding and the validation figures: model/vae_eval.py.

Phrases are cut on bar lines. The token stream has no bar token and no metre, so bars are counted
as `bar_beats` (4) beats from the piece's first onset: a window starts on such a bar line where an
event starts, holds the events that start within `window_beats`, and its last event is cut at the
window's end. Windows whose piece ends early, that hold only rests, or that exceed `max_tokens`
are skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from liveduet.errors import ConfigError
from liveduet.model.config import TrainConfig
from liveduet.model.family import Dist, Family
from liveduet.music.dataset import Dataset
from liveduet.music.tokens import BOS, EOS, PAD, TICKS, Vocabulary

# `select` → the evaluate() figure that picks the best checkpoint (lower is better).
SELECT = {"elbo": "val_elbo", "recon": "val_recon_nll", "greedy": "val_greedy_err"}


@dataclass
class VAEConfig:
    vocab_size: int = 0  # from the data's vocabulary
    embed: int = 128
    enc_hidden: int = 256  # per direction
    dec_hidden: int = 256
    # Width of the output head's input: 0 = dec_hidden. The head's V × width product is most of a
    # training step's cost (and of a live step's bytes) with a 2,188-token vocabulary.
    head_dim: int = 128
    z_dim: int = 64
    # Width of an embedding of the decoder's place in the window (twelfths elapsed, read beside each input
    # token; 0 = none). A GRU decoding a whole phrase from one vector must otherwise count its way
    # through it; told where it is, it looks up that part of z (MusicVAE's conductor does this per bar).
    position_embed: int = 0
    dropout: float = 0.1
    word_dropout: float = 0.25  # decoder inputs replaced by <pad> at this rate while training
    # The objective: loss = recon + β · Σ_d max(KL_d, free_bits), β ramping 0 → beta.
    beta: float = 0.2
    kl_warmup_steps: int = 2000
    free_bits: float = 0.1  # nats per latent dimension (batch mean)
    # Phrases.
    window_beats: int = 8  # two 4/4 bars
    hop_beats: int = 4  # a window may start on every bar line
    bar_beats: int = 4
    max_tokens: int = 80  # phrase tokens (pitch, duration, ...) without <bos>/<eos>
    epoch_phrases: int = 0  # phrases drawn per epoch (0 = all); a fresh sample each epoch
    val_phrases: int = 1000  # validation phrases evaluated (transposition 0 first, fixed)
    active_threshold: float = 0.01  # a latent unit is active when Var_x(μ_d) exceeds this
    # Which validation figure picks best.pt (the exported weights): "elbo" (the bound), "recon" (NLL
    # decoded from μ) or "greedy" (1 − greedy token accuracy from μ: what σ = 0 plays back). At a low β
    # the ELBO keeps falling while reconstruction stalls, or the reverse: a copy tool selects on copying.
    select: str = "elbo"

    def validate(self) -> None:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"[model] {key} = {getattr(self, key)!r}: {why}")

        for key in ("embed", "enc_hidden", "dec_hidden"):
            if not 1 <= getattr(self, key) <= 8192:
                raise bad(key, "must be 1..8192")
        if not 0 <= self.head_dim <= 8192:
            raise bad("head_dim", "must be 0..8192 (0 = dec_hidden)")
        if not 1 <= self.z_dim <= 1024:
            raise bad("z_dim", "must be 1..1024")
        if not 0 <= self.position_embed <= 1024:
            raise bad("position_embed", "must be 0..1024 (0 = none)")
        for key in ("dropout", "word_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise bad(key, "must be in [0, 1)")
        if not 0.0 <= self.beta <= 10.0:
            raise bad("beta", "must be in [0, 10]")
        if self.kl_warmup_steps < 0:
            raise bad("kl_warmup_steps", "must be >= 0")
        if not 0.0 <= self.free_bits <= 10.0:
            raise bad("free_bits", "must be in [0, 10] nats")
        if not 1 <= self.bar_beats <= 16:
            raise bad("bar_beats", "must be 1..16")
        if not 1 <= self.window_beats <= 64 or self.window_beats % self.bar_beats:
            raise bad("window_beats", f"must be 1..64 and whole bars of {self.bar_beats} beats")
        if not 1 <= self.hop_beats <= self.window_beats or self.hop_beats % self.bar_beats:
            raise bad("hop_beats", f"must be whole bars of {self.bar_beats} beats, at most window_beats")
        if not 2 <= self.max_tokens <= 4096 or self.max_tokens % 2:
            raise bad("max_tokens", "must be an even number in 2..4096")
        if self.epoch_phrases < 0 or self.val_phrases < 1:
            raise bad("epoch_phrases" if self.epoch_phrases < 0 else "val_phrases", "must be positive")
        if self.active_threshold <= 0:
            raise bad("active_threshold", "must be > 0")
        if self.select not in SELECT:
            raise bad("select", f"must be one of {', '.join(SELECT)}")


# -- phrases ---------------------------------------------------------------------------------

def phrase_events(piece: np.ndarray, vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray]:
    """A piece's tokens (<bos> p d p d ... <eos>) → its pitch tokens and durations in twelfths."""
    body = piece[(piece != BOS) & (piece != EOS) & (piece != PAD)]
    n = len(body) // 2
    pitches = body[0 : 2 * n : 2].astype(np.int64)
    durs = body[1 : 2 * n : 2].astype(np.int64) - vocab.dur_base + 1
    return pitches, durs


def cut_phrases(piece: np.ndarray, vocab: Vocabulary, cfg: VAEConfig) -> list[np.ndarray]:
    """The piece's windows on bar lines (see the module docstring), each as phrase tokens."""
    pitches, durs = phrase_events(piece, vocab)
    if len(pitches) == 0:
        return []
    onsets = np.concatenate([[0], np.cumsum(durs)])  # [n + 1]: the last is the piece's end
    end = int(onsets[-1])
    width, hop = cfg.window_beats * TICKS, cfg.hop_beats * TICKS
    out: list[np.ndarray] = []
    for start in range(0, end - width + 1, hop):
        i = int(np.searchsorted(onsets, start))
        if i >= len(pitches) or onsets[i] != start:
            continue  # no onset on this bar line (a note is held across it)
        j = int(np.searchsorted(onsets, start + width))  # events i..j-1 start inside the window
        p = pitches[i:j]
        d = durs[i:j].copy()
        d[-1] = start + width - onsets[j - 1]  # the last event is cut at the window's end
        if 2 * len(p) > cfg.max_tokens or np.all(p == vocab.rest_id):
            continue
        toks = np.empty(2 * len(p), dtype=np.int64)
        toks[0::2] = p
        toks[1::2] = d + vocab.dur_base - 1
        out.append(toks)
    return out


def phrase_beats(tokens: np.ndarray | list[int], vocab: Vocabulary) -> float:
    """How long a phrase's tokens last, in beats."""
    return sum(vocab.duration_of(int(t)) for t in tokens if vocab.duration_mask[int(t)]) / TICKS


class PhraseSet(NamedTuple):
    tokens: np.ndarray  # int16 [N, max_tokens]: phrase tokens, <pad> after the end
    lengths: np.ndarray  # int64 [N]


def pack_phrases(phrases: list[np.ndarray], max_tokens: int) -> PhraseSet:
    arr = np.full((len(phrases), max_tokens), PAD, dtype=np.int16)
    for k, p in enumerate(phrases):
        arr[k, : len(p)] = p
    return PhraseSet(arr, np.array([len(p) for p in phrases], dtype=np.int64))


def duration_table(vocab: Vocabulary) -> Tensor:
    """int64 [V]: each duration token's length in twelfths, 0 for every other token."""
    table = np.zeros(len(vocab), dtype=np.int64)
    table[vocab.duration_mask] = np.arange(1, int(vocab.duration_mask.sum()) + 1)
    return torch.from_numpy(table)


def input_positions(dec_in: Tensor, durations: Tensor, limit: int) -> Tensor:
    """Decoder inputs [B, T] → twelfths elapsed once each input is read [B, T] (at most `limit`): where in
    the window the token the decoder predicts next begins (or, after a pitch, the note it times)."""
    return torch.cumsum(durations[dec_in], dim=1).clamp(max=limit)


def batch_tensors(tokens: np.ndarray, lengths: np.ndarray) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Phrase rows → (encoder input [B, T], lengths [B], decoder input [B, T + 1], targets [B, T + 1]).
    The decoder reads <bos> + phrase and predicts phrase + <eos>; <pad> targets are ignored."""
    B, T = len(lengths), int(lengths.max())
    enc = torch.from_numpy(tokens[:, :T].astype(np.int64))  # [B, T]
    lens = torch.from_numpy(lengths.astype(np.int64))
    dec_in = torch.cat([torch.full((B, 1), BOS, dtype=torch.long), enc], dim=1)  # [B, T + 1]
    tgt = torch.cat([enc, torch.full((B, 1), PAD, dtype=torch.long)], dim=1)  # [B, T + 1]
    tgt[torch.arange(B), lens] = EOS
    return enc, lens, dec_in, tgt


# -- the module ------------------------------------------------------------------------------

class Posterior(NamedTuple):
    mu: Tensor  # [B, Z]
    logvar: Tensor  # [B, Z]


class DecoderState(NamedTuple):
    h: Tensor  # [1, B, H]
    z: Tensor  # [B, Z]: read beside every input token
    pos: Tensor  # [B]: twelfths decoded so far


class PhraseVAE(nn.Module):
    """tokens → bidirectional GRU → (μ, log σ²); z → GRU decoder (state from z, z at every step) → logits."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        cfg.validate()
        if cfg.vocab_size < 4:
            raise ConfigError(f"[model] vocab_size = {cfg.vocab_size}: must come from a vocabulary (>= 4)")
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed)  # shared by encoder and decoder
        self.encoder = nn.GRU(cfg.embed, cfg.enc_hidden, batch_first=True, bidirectional=True)
        self.to_posterior = nn.Linear(2 * cfg.enc_hidden, 2 * cfg.z_dim)
        self.z_to_h = nn.Linear(cfg.z_dim, cfg.dec_hidden)
        self.window = cfg.window_beats * TICKS  # positions are clamped here
        self.pos_embed = nn.Embedding(self.window + 1, cfg.position_embed) if cfg.position_embed else None
        self.decoder = nn.GRU(cfg.embed + cfg.z_dim + cfg.position_embed, cfg.dec_hidden, batch_first=True)
        self.drop = nn.Dropout(cfg.dropout)
        width = cfg.head_dim or cfg.dec_hidden
        self.proj = nn.Linear(cfg.dec_hidden, width, bias=False) if width != cfg.dec_hidden else None
        self.head = nn.Linear(width, cfg.vocab_size)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def encode_packed(self, tokens: Tensor, lengths: Tensor) -> Posterior:
        """tokens [B, T] (padded), lengths [B] → the posterior's μ, log σ² [B, Z] each."""
        x = self.drop(self.embed(tokens))  # [B, T, E]
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h = self.encoder(packed)  # h: [2, B, He]: forward's last step, backward's first
        mu, logvar = self.to_posterior(torch.cat([h[0], h[1]], dim=1)).chunk(2, dim=1)  # [B, Z] each
        return Posterior(mu, logvar)

    def encode_one(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """tokens [1, T] unpadded → μ, log σ² [1, Z] (the scriptable path the daemon uses)."""
        x = self.embed(tokens)  # [1, T, E]
        _, h = self.encoder(x)  # [2, 1, He]
        mu, logvar = self.to_posterior(torch.cat([h[0], h[1]], dim=1)).chunk(2, dim=1)
        return mu, logvar

    def initial_h(self, z: Tensor) -> Tensor:
        """z [B, Z] → the decoder's first state [1, B, H]."""
        return torch.tanh(self.z_to_h(z)).unsqueeze(0)

    def decode_run(self, tokens: Tensor, z: Tensor, h: Tensor, pos: Tensor) -> tuple[Tensor, Tensor]:
        """tokens [B, T], z [B, Z], h [1, B, H], pos [B, T] (input_positions; unused without position_embed)
        → logits [B, T, V], h after the last token."""
        x = self.drop(self.embed(tokens))  # [B, T, E]
        zs = z.unsqueeze(1).expand(-1, tokens.shape[1], -1)  # [B, T, Z]
        parts = [x, zs]
        if self.pos_embed is not None:
            parts.append(self.pos_embed(pos.clamp(0, self.window)))  # [B, T, P]
        y, h = self.decoder(torch.cat(parts, dim=2), h)  # y: [B, T, H]
        if self.proj is not None:
            y = self.proj(y)  # [B, T, D]
        return self.head(self.drop(y)), h  # [B, T, V]

    @torch.jit.unused
    def forward(self, enc: Tensor, lengths: Tensor, dec_in: Tensor, pos: Tensor, z_noise: Tensor | None = None
                ) -> tuple[Tensor, Posterior]:
        """Teacher-forced: logits [B, T + 1, V] for dec_in [B, T + 1], with z = μ + σ·noise (μ if None)."""
        post = self.encode_packed(enc, lengths)
        z = post.mu if z_noise is None else post.mu + torch.exp(0.5 * post.logvar) * z_noise
        logits, _ = self.decode_run(dec_in, z, self.initial_h(z), pos)
        return logits, post

    @torch.jit.unused
    def start(self, z: Tensor) -> DecoderState:
        return DecoderState(self.initial_h(z), z, torch.zeros(z.shape[0], dtype=torch.long))

    @torch.jit.unused
    def step(self, token: Tensor, state: DecoderState, durations: Tensor) -> tuple[Tensor, DecoderState]:
        """token [B] → logits [B, V], next state: one decoder step with the cached state."""
        pos = state.pos + durations[token]
        logits, h = self.decode_run(token[:, None], state.z, state.h, pos[:, None])
        return logits[:, 0], DecoderState(h, state.z, pos)


def kl_per_dim(post: Posterior) -> Tensor:
    """KL(q(z|x) ‖ N(0, I)) per phrase and dimension [B, Z], in nats."""
    return 0.5 * (post.mu.pow(2) + post.logvar.exp() - 1.0 - post.logvar)


# -- the training family ---------------------------------------------------------------------

class VAEFamily(Family):
    """The phrase VAE in the one training loop: batches of phrases, the β-VAE step, evaluation."""

    name = "vae"
    config_cls = VAEConfig
    val_key = "val_select"  # the figure `select` names (SELECT), under one name for the loop
    plot_keys = ("train_loss", "val_elbo", "val_recon_nll")

    def __init__(self, cfg: VAEConfig, tcfg: TrainConfig, data: Dataset, seed: int, device: torch.device,
                 dd: Dist | None = None) -> None:
        super().__init__(cfg, tcfg, data, seed, device, dd or Dist())
        cfg.vocab_size = len(data.vocab)
        cfg.validate()
        self.vocab = data.vocab
        self.train_set = pack_phrases(self._cut("train"), cfg.max_tokens)
        self.val_set = pack_phrases(self._val_phrases(), cfg.max_tokens)
        if len(self.train_set.lengths) == 0:
            raise ConfigError(f"no {cfg.window_beats}-beat training phrases in the data")
        torch.manual_seed(seed)
        self.modules = {"model": PhraseVAE(cfg).to(device)}
        self.pitch_mask = torch.from_numpy(self.vocab.pitch_mask).to(device)
        self.dur_mask = torch.from_numpy(self.vocab.duration_mask).to(device)
        self.durations = duration_table(self.vocab).to(device)
        self._order: tuple[int, np.ndarray] | None = None

    def _cut(self, which: str, transpose: int | None = None) -> list[np.ndarray]:
        want = {"train": 0, "val": 1}[which]
        listing = self.data.manifest.get("pieces") or []
        out: list[np.ndarray] = []
        for k, (a, b, s) in enumerate(zip(self.data.offsets[:-1], self.data.offsets[1:], self.data.split)):
            if s != want:
                continue
            if transpose is not None and k < len(listing) and listing[k].get("transpose", 0) != transpose:
                continue
            out += cut_phrases(self.data.tokens[a:b], self.vocab, self.cfg)
        return out

    def _val_phrases(self) -> list[np.ndarray]:
        """A fixed validation sample: untransposed pieces' phrases, evenly spaced, up to val_phrases."""
        phrases = self._cut("val", transpose=0) or self._cut("val")
        if len(phrases) > self.cfg.val_phrases:
            pick = np.linspace(0, len(phrases) - 1, self.cfg.val_phrases).round().astype(int)
            phrases = [phrases[i] for i in pick]
        return phrases

    # -- batches ---------------------------------------------------------------------------
    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(len(self.train_set.lengths))
            if self.cfg.epoch_phrases:
                order = order[: self.cfg.epoch_phrases]
            self._order = (epoch, order)
        return self._order[1]

    def steps_per_epoch(self) -> int:
        n = len(self.train_set.lengths)
        n = min(n, self.cfg.epoch_phrases) if self.cfg.epoch_phrases else n
        return max(1, math.ceil(n / self.tcfg.batch))

    def batch(self, epoch: int, step: int) -> dict:
        order = self._epoch_order(epoch)
        per = self.tcfg.batch // self.dd.world
        idx = order[(step * self.tcfg.batch + self.dd.rank * per + np.arange(per)) % len(order)]
        enc, lens, dec_in, tgt = batch_tensors(self.train_set.tokens[idx], self.train_set.lengths[idx])
        d = self.device
        return {"enc": enc.to(d), "lens": lens, "dec_in": dec_in.to(d), "tgt": tgt.to(d),
                "global_step": epoch * self.steps_per_epoch() + step}

    def units(self, batch: dict) -> int:
        return int((batch["tgt"] != PAD).sum())

    def beta_at(self, global_step: int) -> float:
        warm = self.cfg.kl_warmup_steps
        return self.cfg.beta * (min(1.0, global_step / warm) if warm else 1.0)

    # -- one step --------------------------------------------------------------------------
    def train_step(self, batch: dict, opts: dict[str, torch.optim.Optimizer]) -> dict[str, float]:
        model: PhraseVAE = self.modules["model"]  # type: ignore[assignment]
        model.train()
        cfg, opt = self.cfg, opts["model"]
        dec_in, tgt = batch["dec_in"], batch["tgt"]
        pos = input_positions(dec_in, self.durations, model.window)  # from the true inputs, dropped or not
        if cfg.word_dropout > 0:
            drop = torch.rand(dec_in.shape, device=dec_in.device) < cfg.word_dropout
            drop[:, 0] = False  # <bos> stays
            dec_in = dec_in.masked_fill(drop, PAD)
        post = model.encode_packed(batch["enc"], batch["lens"])
        z = post.mu + torch.exp(0.5 * post.logvar) * torch.randn_like(post.mu)  # [B, Z]
        logits, _ = model.decode_run(dec_in, z, model.initial_h(z), pos)  # [B, T + 1, V]
        B = tgt.shape[0]
        recon = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=PAD,
                                reduction="sum") / B  # nats per phrase
        kl_d = kl_per_dim(post).mean(0)  # [Z]
        beta = self.beta_at(int(batch["global_step"]))
        per_phrase = float((tgt != PAD).sum()) / B
        loss = (recon + beta * torch.clamp(kl_d, min=cfg.free_bits).sum()) / per_phrase  # per token
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.tcfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.tcfg.grad_clip)
        opt.step()
        return {"loss": float(loss.detach()), "recon": float(recon.detach()) / per_phrase,
                "kl": float(kl_d.detach().sum()), "beta": beta}

    # -- evaluation ------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        model: PhraseVAE = self.modules["model"]  # type: ignore[assignment]
        was_training = model.training
        model.eval()
        try:
            from liveduet.model.vae_eval import reconstruction_metrics  # vae_eval imports this module

            figures = reconstruction_metrics(model, self.val_set, self.pitch_mask, self.dur_mask,
                                             self.cfg.active_threshold, self.device, self.durations)
            figures["val_greedy_err"] = 1.0 - figures["val_greedy_acc"]
            return {"val_select": figures[SELECT[self.cfg.select]], **figures}
        finally:
            model.train(was_training)

    @classmethod
    def export(cls, run_dir: Any, ckpt: dict, out: Any, force: bool, name: str | None,  # type: ignore[override]
               evaluation: dict | None) -> dict:
        """The exported folder (model/vae_export.py); called on the class, with the loop's checkpoint."""
        from liveduet.model.vae_export import export_vae

        return export_vae(run_dir, ckpt, out, force, name, evaluation)
