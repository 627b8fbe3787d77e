"""C-RNN-GAN (Mogren 2016): an LSTM generator over continuous note features and a
bidirectional-LSTM discriminator that scores every step.

It reads top to bottom: note features (derived from the prepared tokens) → config → generator →
discriminator → the training family (one train step: D, then G) → samples back to events.

**Features.** Each note is four numbers, derived from the tokens (docs/tokens.md) of the prepared
corpus, so the GAN reads exactly the data the language model reads. An event's note is the top
note of its pitch set (the melody: C-RNN-GAN is a one-voice model); a rest lengthens the gap to
the next note. Normalised so that each lies roughly in [-4, 4]:

    pitch     (MIDI pitch - 64) / 12             octaves from E4
    duration  log2(beats)                        1/12 beat → -3.58, 1 beat → 0, 8 beats → 3
    gap       log2(onset gap in beats + 1/12)    from the previous note's onset (first note: 0 beats)
    velocity  (velocity - 64) / 64               the tokens carry no dynamics: every note is 80 (0.25)

Back to music (`features_to_events`): values are rounded to the tokenizer's grid (onsets on the
absolute 16th + triplet grid, ends quantised) and to the piano range, and go through the one
tokenizer, so a sample is a token sequence like any other.

**Stabilisers**: feature matching for G (the mean of D's last hidden layer on real vs generated
batches, as Salimans et al. and Mogren's code do), one-sided label smoothing on real targets,
a D/G step ratio, Mogren's freezing (no D update while D's loss is below `freeze_ratio` × G's),
gradient clipping ([train] grad_clip). Mode collapse is measured at every evaluation (`evaluate`):
the spread of generated windows against real ones and the share of distinct pitch 4-grams.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from liveduet.errors import ConfigError
from liveduet.model.family import Family, make_optimizer
from liveduet.music.stream import tokenize_notes
from liveduet.music.tokens import TICKS, Event, TokenizerSettings, Vocabulary

FEATURES = ("pitch", "duration", "gap", "velocity")
NF = len(FEATURES)
PITCH_CENTRE = 64
VELOCITY = 80
GAP_FLOOR = 1.0 / TICKS  # keeps a zero gap (a piece's first note) finite on the log scale


# -- features --------------------------------------------------------------------------------

def event_notes(events: list[Event]) -> np.ndarray:
    """Events → raw notes [N, 4]: top pitch, duration (beats), onset gap (beats), velocity."""
    rows = []
    pos = 0
    prev = None
    for pitches, dur in events:
        if pitches:
            rows.append((max(pitches), dur / TICKS, 0.0 if prev is None else (pos - prev) / TICKS, VELOCITY))
            prev = pos
        pos += dur
    return np.asarray(rows, dtype=np.float64).reshape(-1, NF)


def normalise(raw: np.ndarray) -> np.ndarray:
    """Raw notes [N, 4] → normalised features [N, 4] float32 (see the module docstring)."""
    out = np.empty(raw.shape, dtype=np.float32)
    out[:, 0] = (raw[:, 0] - PITCH_CENTRE) / 12.0
    out[:, 1] = np.log2(np.maximum(raw[:, 1], GAP_FLOOR))
    out[:, 2] = np.log2(raw[:, 2] + GAP_FLOOR)
    out[:, 3] = (raw[:, 3] - 64.0) / 64.0
    return out


def denormalise(feats: np.ndarray) -> np.ndarray:
    """Normalised features [N, 4] → raw notes [N, 4] (unrounded)."""
    raw = np.empty(feats.shape, dtype=np.float64)
    raw[:, 0] = feats[:, 0] * 12.0 + PITCH_CENTRE
    raw[:, 1] = np.exp2(feats[:, 1])
    raw[:, 2] = np.maximum(np.exp2(feats[:, 2]) - GAP_FLOOR, 0.0)
    raw[:, 3] = feats[:, 3] * 64.0 + 64.0
    return raw


def features_to_notes(feats: np.ndarray, settings: TokenizerSettings) -> list[tuple[float, float, int, int]]:
    """Normalised features → (onset beats, end beats, pitch, velocity), rounded to the grid and the
    piano range: onsets on the absolute grid, at least one grid step long, durations capped."""
    raw = denormalise(np.asarray(feats, dtype=np.float64).reshape(-1, NF))
    notes = []
    onset = 0.0
    for i, (pitch, dur, gap, vel) in enumerate(raw):
        onset += 0.0 if i == 0 else gap
        on = settings.quantize(onset)
        end = max(settings.quantize(onset + min(dur, settings.max_duration / TICKS)), settings.next_grid(on))
        p = int(min(max(round(pitch), settings.min_pitch), settings.max_pitch))
        v = int(min(max(round(vel), 1), 127))
        notes.append((on / TICKS, end / TICKS, p, v))
    return notes


def features_to_events(feats: np.ndarray, settings: TokenizerSettings) -> list[Event]:
    """Normalised features → events through the one tokenizer (two notes on one grid point: a chord)."""
    notes = features_to_notes(feats, settings)
    return tokenize_notes([(a, b, p) for a, b, p, _ in notes], settings)


def piece_features(vocab: Vocabulary, tokens: np.ndarray) -> np.ndarray:
    """One piece's tokens → normalised note features [N, 4], vectorised (~30x a decode loop)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    is_pitch = vocab.pitch_mask[tokens[:-1]] & vocab.duration_mask[tokens[1:]]
    idx = np.flatnonzero(is_pitch)
    if len(idx) == 0:
        return np.zeros((0, NF), dtype=np.float32)
    top = _top_table(vocab)[tokens[idx]]  # [E] top pitch, -1 for the rest
    dur = tokens[idx + 1] - vocab.dur_base + 1  # [E] twelfths
    onset = np.concatenate([[0], np.cumsum(dur)[:-1]])
    keep = top >= 0
    on = onset[keep]
    gaps = np.diff(on, prepend=on[:1]) if len(on) else on
    raw = np.stack([top[keep], dur[keep] / TICKS, gaps / TICKS, np.full(len(on), VELOCITY)], axis=1)
    return normalise(raw.astype(np.float64))


_TOPS: dict[int, np.ndarray] = {}


def _top_table(vocab: Vocabulary) -> np.ndarray:
    key = id(vocab)
    if key not in _TOPS:
        table = np.full(len(vocab), -1, dtype=np.int64)
        for i, ps in enumerate(vocab.pitchsets):
            if ps:
                table[vocab.rest_id + i] = max(ps)
        _TOPS[key] = table
    return _TOPS[key]


# -- config ----------------------------------------------------------------------------------

@dataclass
class GANConfig:
    seq_len: int = 32  # notes per training window
    noise: int = 32  # random inputs per step
    hidden: int = 128  # generator LSTM width
    layers: int = 2
    d_hidden: int = 128  # discriminator LSTM width, per direction
    d_layers: int = 2
    dropout: float = 0.0
    feature_matching: bool = True  # G matches the mean of D's last hidden layer (else the usual -log D(G(z)))
    label_smoothing: float = 0.1  # real targets are 1 - this (one-sided)
    d_steps: int = 1  # discriminator updates per train step
    g_steps: int = 1  # generator updates per train step
    freeze_ratio: float = 0.7  # skip D's update while its loss < ratio × G's adversarial loss (0 = never)
    eval_samples: int = 256  # windows generated at each evaluation

    def validate(self) -> None:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"[model] {key} = {getattr(self, key)!r}: {why}")

        if not 2 <= self.seq_len <= 4096:
            raise bad("seq_len", "must be 2..4096")
        for key in ("noise", "hidden", "d_hidden"):
            if not 1 <= getattr(self, key) <= 4096:
                raise bad(key, "must be 1..4096")
        for key in ("layers", "d_layers"):
            if not 1 <= getattr(self, key) <= 8:
                raise bad(key, "must be 1..8")
        if not 0 <= self.dropout < 1:
            raise bad("dropout", "must be in [0, 1)")
        if not 0 <= self.label_smoothing < 0.5:
            raise bad("label_smoothing", "must be in [0, 0.5)")
        for key in ("d_steps", "g_steps"):
            if not 1 <= getattr(self, key) <= 10:
                raise bad(key, "must be 1..10")
        if not 0 <= self.freeze_ratio <= 1:
            raise bad("freeze_ratio", "must be in [0, 1] (0 = never freeze D)")
        if not 8 <= self.eval_samples <= 10_000:
            raise bad("eval_samples", "must be 8..10000")


# -- generator -------------------------------------------------------------------------------

class GenState(NamedTuple):
    h: Tensor  # [L, B, H]
    c: Tensor  # [L, B, H]
    prev: Tensor  # [B, 4] the previous step's output (the next step's input beside the noise)


class Generator(nn.Module):
    """Per step: [noise z_t, previous output] → LSTM → linear → 4 note features (Mogren's G)."""

    def __init__(self, cfg: GANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.inp = nn.Linear(cfg.noise + NF, cfg.hidden)
        # Cells, not nn.LSTM: the generator runs step by step (its input is its last output), and a
        # one-step nn.LSTM call costs several times a cell's (oneDNN's setup per call).
        self.cells = nn.ModuleList(nn.LSTMCell(cfg.hidden, cfg.hidden) for _ in range(cfg.layers))
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden, NF)

    def initial_state(self, batch: int) -> GenState:
        w = self.out.weight
        h = torch.zeros(self.cfg.layers, batch, self.cfg.hidden, dtype=w.dtype, device=w.device)
        return GenState(h, torch.zeros_like(h), torch.zeros(batch, NF, dtype=w.dtype, device=w.device))

    def step(self, z: Tensor, state: GenState) -> tuple[Tensor, GenState]:
        """z [B, noise] → features [B, 4], next state."""
        x = torch.relu(self.inp(torch.cat([z, state.prev], dim=1)))  # [B, H]
        hs, cs = [], []
        for i, cell in enumerate(self.cells):
            h, c = cell(x, (state.h[i], state.c[i]))  # [B, H] each
            hs.append(h)
            cs.append(c)
            x = self.drop(h) if i + 1 < len(self.cells) else h
        f = self.out(x)  # [B, 4]
        return f, GenState(torch.stack(hs), torch.stack(cs), f)

    def forward(self, z: Tensor, primer: Tensor | None = None) -> Tensor:
        """z [B, T, noise] → features [B, T, 4]. With a primer [B, P, 4] the first P steps are fed the
        primer's notes as their previous output (conditioning) and the output continues after it."""
        B, T, _ = z.shape
        state = self.initial_state(B)
        if primer is not None:
            for t in range(primer.shape[1]):
                _, state = self.step(torch.zeros_like(z[:, 0]), state)
                state = state._replace(prev=primer[:, t])
        outs = []
        for t in range(T):
            f, state = self.step(z[:, t], state)
            outs.append(f)
        return torch.stack(outs, dim=1)  # [B, T, 4]

    @torch.no_grad()
    def sample(self, batch: int, length: int, generator: torch.Generator,
               primer: Tensor | None = None, scale: float = 1.0) -> Tensor:
        """Seeded samples [B, length, 4]; `scale` multiplies the noise (generate's --temperature)."""
        w = self.out.weight
        z = torch.randn(batch, length, self.cfg.noise, generator=generator).to(w.device, w.dtype)
        return self(z * scale, primer)


# -- discriminator ---------------------------------------------------------------------------

class Discriminator(nn.Module):
    """Bidirectional LSTM over the notes; a logit for every step (real = 1) and the last hidden
    layer's features (for feature matching)."""

    def __init__(self, cfg: GANConfig) -> None:
        super().__init__()
        self.inp = nn.Linear(NF, cfg.d_hidden)
        self.rnn = nn.LSTM(cfg.d_hidden, cfg.d_hidden, cfg.d_layers, batch_first=True, bidirectional=True,
                           dropout=cfg.dropout if cfg.d_layers > 1 else 0.0)
        self.head = nn.Linear(2 * cfg.d_hidden, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, T, 4] → logits [B, T], features [B, T, 2H]."""
        y, _ = self.rnn(torch.relu(self.inp(x)))  # [B, T, 2H]
        return self.head(y)[..., 0], y


# -- losses ----------------------------------------------------------------------------------

def d_loss_fn(real_logits: Tensor, fake_logits: Tensor, smoothing: float) -> Tensor:
    """Per-step binary cross-entropy, real targets smoothed to 1 - smoothing."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, 1.0 - smoothing))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def g_adv_loss(fake_logits: Tensor) -> Tensor:
    """The non-saturating generator loss -log D(G(z)), per step."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def feature_matching_loss(real_feats: Tensor, fake_feats: Tensor) -> Tensor:
    """Squared distance between the mean of D's features on real and on generated windows."""
    return F.mse_loss(fake_feats.mean(dim=(0, 1)), real_feats.detach().mean(dim=(0, 1)))


# -- measures (mode collapse, statistics) ----------------------------------------------------

def window_spread(windows: np.ndarray) -> float:
    """Mean distance between random pairs of windows [N, T, 4] (0: every sample the same)."""
    n = len(windows)
    if n < 2:
        return 0.0
    flat = windows.reshape(n, -1)
    rng = np.random.default_rng(0)
    a = rng.integers(0, n, 512)
    b = (a + rng.integers(1, n, 512)) % n
    return float(np.linalg.norm(flat[a] - flat[b], axis=1).mean() / math.sqrt(flat.shape[1]))


def distinct_4grams(windows: np.ndarray) -> float:
    """Share of distinct rounded-pitch 4-grams over all windows (low: the generator repeats itself)."""
    pitches = np.rint(windows[..., 0] * 12).astype(np.int64)  # [N, T]
    grams = [tuple(row[i : i + 4]) for row in pitches for i in range(row.shape[0] - 3)]
    return len(set(grams)) / len(grams) if grams else 0.0


def stat_gap(fake: np.ndarray, real: np.ndarray) -> float:
    """How far generated feature statistics are from real ones: per feature |Δ mean| + |Δ std|, plus
    the L1 distance of the rounded pitch-class histograms. Lower is better; 0 = same statistics."""
    f2, r2 = fake.reshape(-1, NF), real.reshape(-1, NF)
    gap = float(np.abs(f2.mean(0) - r2.mean(0)).sum() + np.abs(f2.std(0) - r2.std(0)).sum())

    def pcs(x: np.ndarray) -> np.ndarray:
        h = np.bincount(np.rint(x[:, 0] * 12 + PITCH_CENTRE).astype(np.int64) % 12, minlength=12)
        return h / max(1, h.sum())

    return gap + float(np.abs(pcs(f2) - pcs(r2)).sum())


def config_dict(cfg: GANConfig) -> dict[str, Any]:
    return asdict(cfg)


# -- the training family ---------------------------------------------------------------------

class NoteWindows:
    """Every window of `seq_len` consecutive notes within one piece, drawn at random per step."""

    def __init__(self, vocab: Vocabulary, pieces: list[np.ndarray], seq_len: int) -> None:
        feats = [piece_features(vocab, p) for p in pieces]
        feats = [f for f in feats if len(f) >= seq_len]
        self.seq_len = seq_len
        self.notes = np.concatenate(feats) if feats else np.zeros((0, NF), dtype=np.float32)  # [N, 4]
        starts, pos = [], 0
        for f in feats:
            starts.append(pos + np.arange(len(f) - seq_len + 1))
            pos += len(f)
        self.starts = np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.starts)

    def take(self, starts: np.ndarray) -> Tensor:
        idx = starts[:, None] + np.arange(self.seq_len)[None, :]  # [B, T]
        return torch.from_numpy(self.notes[idx])  # [B, T, 4]

    def draw(self, rng: np.random.Generator, n: int) -> Tensor:
        return self.take(self.starts[rng.integers(0, len(self.starts), n)])


class GANFamily(Family):
    """C-RNN-GAN under the one training loop: modules "model" (G) and "disc" (D)."""

    name = "crnngan"
    config_cls = GANConfig
    val_key = "val_stat_gap"
    plot_keys = ("g_loss", "d_loss")

    def __init__(self, cfg: GANConfig, tcfg: Any, data: Any, seed: int, device: torch.device, dd: Any) -> None:
        super().__init__(cfg, tcfg, data, seed, device, dd)
        cfg.validate()
        self.train_windows = NoteWindows(data.vocab, data.pieces("train"), cfg.seq_len)
        self.val_windows = NoteWindows(data.vocab, data.pieces("val"), cfg.seq_len)
        if len(self.train_windows) == 0 or len(self.val_windows) == 0:
            raise ConfigError(f"[model] seq_len = {cfg.seq_len}: no training or validation piece has that many notes")
        torch.manual_seed(seed)
        self.gen = Generator(cfg).to(device)
        self.disc = Discriminator(cfg).to(device)
        self.modules = {"model": self.gen, "disc": self.disc}
        rng = np.random.default_rng([seed, 7])
        self.val_real = self.val_windows.draw(rng, cfg.eval_samples).to(device)  # fixed: comparable evaluations

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"model": make_optimizer(self.gen, self.tcfg), "disc": make_optimizer(self.disc, self.tcfg)}

    def steps_per_epoch(self) -> int:
        return max(1, self.train_windows.notes.shape[0] // (self.tcfg.batch * self.cfg.seq_len))

    def batch(self, epoch: int, step: int) -> Tensor:
        rng = np.random.default_rng([self.seed, epoch, step])
        return self.train_windows.draw(rng, self.tcfg.batch).to(self.device)  # [B, T, 4]

    def units(self, batch: Tensor) -> int:
        return batch.shape[0] * batch.shape[1]

    def _noise(self, batch: int) -> Tensor:
        return torch.randn(batch, self.cfg.seq_len, self.cfg.noise, device=self.device)

    def train_step(self, batch: Tensor, opts: dict[str, torch.optim.Optimizer]) -> dict[str, float]:
        cfg, clip = self.cfg, self.tcfg.grad_clip
        B = batch.shape[0]
        d_loss = g_adv = torch.zeros(())
        d_updates = 0
        for _ in range(cfg.d_steps):
            fake = self.gen(self._noise(B)).detach()
            real_logits, _ = self.disc(batch)
            fake_logits, _ = self.disc(fake)
            d_loss = d_loss_fn(real_logits, fake_logits, cfg.label_smoothing)
            g_adv = g_adv_loss(fake_logits.detach())
            # Mogren's freezing: a discriminator far ahead of the generator only stalls it.
            if cfg.freeze_ratio and d_loss.item() < cfg.freeze_ratio * g_adv.item():
                break
            opts["disc"].zero_grad(set_to_none=True)
            d_loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(self.disc.parameters(), clip)
            opts["disc"].step()
            d_updates += 1
        fm = torch.zeros(())
        for _ in range(cfg.g_steps):
            fake = self.gen(self._noise(B))
            fake_logits, fake_feats = self.disc(fake)
            g_adv = g_adv_loss(fake_logits)
            if cfg.feature_matching:
                with torch.no_grad():
                    _, real_feats = self.disc(batch)
                fm = feature_matching_loss(real_feats, fake_feats)
                g_loss = fm
            else:
                g_loss = g_adv
            opts["model"].zero_grad(set_to_none=True)
            self.disc.zero_grad(set_to_none=True)
            g_loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(self.gen.parameters(), clip)
            opts["model"].step()
        g, d = g_adv.item(), d_loss.item()
        return {"loss": g, "g_loss": g, "d_loss": d, "g_feature_match": fm.item(),
                "d_updates": float(d_updates)}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        cfg = self.cfg
        gen = torch.Generator().manual_seed(self.seed + 1)
        fake = self.gen.sample(cfg.eval_samples, cfg.seq_len, gen)  # [N, T, 4]
        real = self.val_real
        real_logits, _ = self.disc(real)
        fake_logits, _ = self.disc(fake)
        f, r = fake.cpu().numpy(), real.cpu().numpy()
        return {
            "val_stat_gap": stat_gap(f, r),
            "val_d_loss": float(d_loss_fn(real_logits, fake_logits, 0.0)),
            "val_d_accuracy": float(((real_logits > 0).float().mean() + (fake_logits < 0).float().mean()) / 2),
            "spread_ratio": window_spread(f) / max(1e-9, window_spread(r)),  # ≪ 1: mode collapse
            "distinct_4grams": distinct_4grams(f),
            "distinct_4grams_real": distinct_4grams(r),
        }

    @classmethod
    def export(cls, run_dir: Any, ckpt: dict, out: Any, force: bool, name: str | None,  # type: ignore[override]
               evaluation: dict | None) -> dict:
        from liveduet.model.crnngan_io import export_gan

        return export_gan(run_dir, ckpt, out, force, name, evaluation)
