"""The phrase VAE: a phrase's tokens → a latent z → the phrase again, varied.

It reads top to bottom: config → module → the training family (phrases: model/phrases.py). MusicVAE's recipe
at liveduet's scale: a bidirectional GRU encoder reads the phrase's tokens (liveduet-tokens/1, the
language model's vocabulary) into μ and log σ² of a `z_dim` Gaussian; a one-layer GRU decoder
whose state starts at tanh(W z) and which reads z (and, with `position_embed`, its place in the
window) beside every input token writes the phrase back autoregressively. Against posterior
collapse: KL warm-up (β ramps from 0), free bits (each latent dimension's KL counts at least
`free_bits` nats) and word dropout on the decoder's inputs (it cannot copy the phrase from its own
teacher-forced inputs alone). With `latent = "beats"` z is one slice per beat of the window (see
VAEConfig.latent). Greedy decoding and the validation figures: model/vae_eval.py.
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
from liveduet.model.phrases import (
    batch_tensors,
    cut_phrases,
    duration_table,
    input_positions,
    pack_phrases,
)
from liveduet.music.dataset import Dataset
from liveduet.music.tokens import PAD, TICKS

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
    # "phrase": one z for the whole window. "beats": z is window_beats slices (z_dim / window_beats dims
    # each), one per beat, read from the encoder around that beat; the decoder reads the slice of the
    # beat it is in beside the whole z. A copy then is local (a few tokens from a slice) instead of a
    # GRU unpacking 40 events from one vector; σ and slerp act on the whole z as before.
    latent: str = "phrase"
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
        if self.latent not in ("phrase", "beats"):
            raise bad("latent", 'must be "phrase" or "beats"')
        if self.latent == "beats" and (self.z_dim % self.window_beats or not self.position_embed):
            raise bad("latent", f"beats needs z_dim a multiple of window_beats ({self.window_beats}) "
                                "and position_embed > 0")
        if self.epoch_phrases < 0 or self.val_phrases < 1:
            raise bad("epoch_phrases" if self.epoch_phrases < 0 else "val_phrases", "must be positive")
        if self.active_threshold <= 0:
            raise bad("active_threshold", "must be > 0")
        if self.select not in SELECT:
            raise bad("select", f"must be one of {', '.join(SELECT)}")


def beat_spans(tokens: Tensor, lengths: Tensor, durations: Tensor, beats: int, ticks: int) -> tuple[Tensor, Tensor]:
    """Where each beat's latent slice reads the encoder: tokens [B, T] → (last, first) [B, beats], the index
    of the beat's last token (the forward GRU there has heard everything up to the beat's end) and of its
    first (the backward GRU there hears everything from its start). A beat with no onset (a held note, a
    rest) reads the sounding event forward and the next event backward."""
    dur = durations[tokens]  # [B, T]
    onset = torch.cumsum(dur, dim=1) - dur  # twelfths before each token's event
    valid = torch.arange(tokens.shape[1], device=tokens.device)[None, :] < lengths[:, None]
    edges = torch.arange(beats + 1, device=tokens.device) * ticks  # [beats + 1]
    before = ((onset[:, None, :] < edges[None, :, None]) & valid[:, None, :]).sum(2)  # [B, beats + 1]
    return (before[:, 1:] - 1).clamp(min=0), torch.minimum(before[:, :-1], lengths[:, None] - 1)


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
        self.beats = cfg.window_beats if cfg.latent == "beats" else 0
        per = cfg.z_dim // self.beats if self.beats else cfg.z_dim
        self.to_posterior = nn.Linear(2 * cfg.enc_hidden, 2 * per)
        # Each token's length in twelfths (durations only), to find the beats' tokens; set from the
        # vocabulary by the family (set_durations) and saved with a beats latent's weights.
        self.register_buffer("dur_table", torch.zeros(cfg.vocab_size, dtype=torch.long), persistent=self.beats > 0)
        self.z_to_h = nn.Linear(cfg.z_dim, cfg.dec_hidden)
        self.window = cfg.window_beats * TICKS  # positions are clamped here
        self.ticks = TICKS  # a module attribute: TorchScript cannot read the global
        self.pos_embed = nn.Embedding(self.window + 1, cfg.position_embed) if cfg.position_embed else None
        width_in = cfg.embed + cfg.z_dim + cfg.position_embed + (per if self.beats else 0)
        self.decoder = nn.GRU(width_in, cfg.dec_hidden, batch_first=True)
        self.drop = nn.Dropout(cfg.dropout)
        width = cfg.head_dim or cfg.dec_hidden
        self.proj = nn.Linear(cfg.dec_hidden, width, bias=False) if width != cfg.dec_hidden else None
        self.head = nn.Linear(width, cfg.vocab_size)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def set_durations(self, table: Tensor) -> None:
        """The vocabulary's duration table (phrases.duration_table): where each token's beat is."""
        self.dur_table.copy_(table)

    def encode_packed(self, tokens: Tensor, lengths: Tensor) -> Posterior:
        """tokens [B, T] (padded), lengths [B] → the posterior's μ, log σ² [B, Z] each."""
        x = self.drop(self.embed(tokens))  # [B, T, E]
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, h = self.encoder(packed)  # h: [2, B, He]: forward's last step, backward's first
        if self.beats == 0:
            return self._posterior(torch.cat([h[0], h[1]], dim=1))
        y, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])
        return self._posterior(self._beat_features(y, tokens, lengths))

    def encode_one(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """tokens [1, T] unpadded → μ, log σ² [1, Z] (the scriptable path the daemon uses)."""
        y, h = self.encoder(self.embed(tokens))  # y: [1, T, 2 He], h: [2, 1, He]
        if self.beats == 0:
            post = self._posterior(torch.cat([h[0], h[1]], dim=1))
        else:
            post = self._posterior(self._beat_features(y, tokens, torch.tensor([tokens.shape[1]])))
        return post.mu, post.logvar

    def _beat_features(self, y: Tensor, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Encoder outputs y [B, T, 2 He] → one vector per beat [B, beats, 2 He] (see beat_spans)."""
        he = y.shape[2] // 2
        last, first = beat_spans(tokens, lengths.to(tokens.device), self.dur_table, self.beats, self.ticks)
        fwd = y[:, :, :he].gather(1, last[:, :, None].expand(-1, -1, he))
        bwd = y[:, :, he:].gather(1, first[:, :, None].expand(-1, -1, he))
        return torch.cat([fwd, bwd], dim=2)

    def _posterior(self, features: Tensor) -> Posterior:
        """[B, 2 He] or [B, beats, 2 He] → μ, log σ² [B, Z] each (beats' slices in order)."""
        mu, logvar = self.to_posterior(features).chunk(2, dim=-1)
        return Posterior(mu.reshape(mu.shape[0], -1), logvar.reshape(logvar.shape[0], -1))

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
        if self.beats > 0:  # the slice of the beat the next token starts in
            beat = torch.div(pos, self.ticks, rounding_mode="floor").clamp(0, self.beats - 1)  # [B, T]
            slices = z.reshape(z.shape[0], self.beats, -1)  # [B, beats, Z / beats]
            parts.append(slices.gather(1, beat[:, :, None].expand(-1, -1, slices.shape[2])))
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
        self.durations = duration_table(self.vocab).to(device)
        model = PhraseVAE(cfg).to(device)
        model.set_durations(self.durations)
        self.modules = {"model": model}
        self.pitch_mask = torch.from_numpy(self.vocab.pitch_mask).to(device)
        self.dur_mask = torch.from_numpy(self.vocab.duration_mask).to(device)
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
