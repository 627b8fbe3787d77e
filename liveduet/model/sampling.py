"""Sampling answers from a model runtime, one token at a time, with the state cached.

Every call steps the model once: `feed(token)` advances with a known token (the player's call, as
it arrives), `sample()` draws the next token and feeds it. The draw is shaped, in this order, by:

1. the grammar: after <bos>, <eos> or a duration only pitch tokens (and <eos> if allowed); after a
   pitch token only durations; <pad> and <bos> never;
2. the scale lock (`set_pitch_classes`): pitch tokens with a pitch class outside the set are
   masked; the rest is always allowed;
3. the repetition guard (pitch tokens only, durations are free to repeat):
   - one pitch token may not come more than `max_repeat` times in a row (default 4, so no fifth
     identical note or chord);
   - a figure of 2..`loop_period` pitch tokens (default 8) that has just been played `max_loop`
     times in a row (default 4) may not start again: its first token is masked.
   0 turns either rule off. Music repeats on purpose (Alberti basses, sequences), so the guard only cuts what has already
   gone on long; it is a hard mask, not a soft penalty, so its effect is the same at every
   temperature. If it would mask every option, it is ignored for that draw;
4. temperature (0 = greedy), then top-k, then top-p (nucleus).

Masks are precomputed tensors; a draw allocates only a few V-sized temporaries.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from liveduet.model.lstm import State
from liveduet.model.runtime import ModelRuntime
from liveduet.music.tokens import BOS, EOS, Event

NEG_INF = float("-inf")


class Sampler:
    def __init__(self, runtime: ModelRuntime, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 seed: int | None = None, allow_eos: bool = False, max_repeat: int = 4, max_loop: int = 4,
                 loop_period: int = 8) -> None:
        self.runtime = runtime
        self.vocab = runtime.vocab
        V = len(self.vocab)
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p
        self.allow_eos = allow_eos
        if max_repeat < 0 or max_loop < 0 or loop_period < 2:
            raise ValueError("max_repeat and max_loop must be >= 0 (0 = off), loop_period >= 2")
        self.max_repeat, self.max_loop, self.loop_period = max_repeat, max_loop, loop_period
        self._gen = torch.Generator()
        self._gen.manual_seed(seed if seed is not None else int(torch.seed() & 0x7FFF_FFFF))

        pitch = torch.from_numpy(self.vocab.pitch_mask)
        dur = torch.from_numpy(self.vocab.duration_mask)
        zero, ninf = torch.zeros(V), torch.full((V,), NEG_INF)
        self._mask_duration = torch.where(dur, zero, ninf)  # [V] after a pitch token
        self._mask_pitch = torch.where(pitch, zero, ninf)  # [V] after <bos>/<eos>/a duration
        self._mask_pitch_eos = self._mask_pitch.clone()
        self._mask_pitch_eos[EOS] = 0.0
        # Pitch classes of each pitch token, for the scale lock: [number of pitch sets, 12].
        self._pcs = np.zeros((len(self.vocab.pitchsets), 12), dtype=np.bool_)
        for i, ps in enumerate(self.vocab.pitchsets):
            self._pcs[i, [p % 12 for p in ps]] = True
        self._scale: Tensor | None = None  # additive [V] mask, or None when unlocked
        self.pitch_classes: frozenset[int] | None = None
        self.reset()

    # -- settings ----------------------------------------------------------------------------
    @property
    def temperature(self) -> float:
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        if not (0.0 <= value <= 10.0) or math.isnan(value):
            raise ValueError(f"temperature must be in 0..10 (0 = greedy), got {value}")
        self._temperature = float(value)

    @property
    def top_k(self) -> int:
        return self._top_k

    @top_k.setter
    def top_k(self, value: int) -> None:
        if value < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {value}")
        self._top_k = int(value)

    @property
    def top_p(self) -> float:
        return self._top_p

    @top_p.setter
    def top_p(self, value: float) -> None:
        if not 0.0 < value <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {value}")
        self._top_p = float(value)

    def set_pitch_classes(self, allowed: set[int] | frozenset[int] | None) -> None:
        """Lock pitch tokens to these pitch classes (0 = C .. 11 = B); None unlocks. Rests stay allowed."""
        if allowed is None:
            self._scale, self.pitch_classes = None, None
            return
        if any(not 0 <= pc < 12 for pc in allowed):
            raise ValueError(f"pitch classes must be 0..11, got {sorted(allowed)}")
        outside = np.ones(12, dtype=np.bool_)
        outside[list(allowed)] = False
        bad = (self._pcs & outside).any(axis=1)  # [pitch sets]; the rest has no pitch class: never bad
        mask = torch.zeros(len(self.vocab))
        mask[self.vocab.rest_id :][torch.from_numpy(bad)] = NEG_INF
        self._scale, self.pitch_classes = mask, frozenset(allowed)

    # -- stepping ----------------------------------------------------------------------------
    def reset(self) -> None:
        """Fresh state, primed with <bos>."""
        self.state: State = self.runtime.initial_state()
        self.history: list[int] = []  # recent pitch tokens, for the repetition guard
        self.tokens: list[int] = []  # everything fed since the reset
        self._expect_duration = False
        self.feed(BOS)

    def feed(self, token: int) -> None:
        """Advance the model with a known token (the player's, or one just sampled)."""
        token = int(token)
        if not 0 <= token < len(self.vocab):
            raise ValueError(f"token {token} is outside the vocabulary (0..{len(self.vocab) - 1})")
        self._logits, self.state = self.runtime.step(token, self.state)
        self.tokens.append(token)
        if self.vocab.pitch_mask[token]:
            self._expect_duration = True
            self.history.append(token)
            if len(self.history) > 4 * max(self.max_repeat, self.max_loop * self.loop_period, 8):
                del self.history[: len(self.history) // 2]
        else:
            self._expect_duration = False

    def checkpoint(self) -> tuple:
        """Everything `restore` needs to return here: the daemon re-primes a call heard at another tempo.
        States are never modified in place (each step returns new tensors), so references suffice."""
        return (self.state, self._logits, list(self.history), len(self.tokens), self._expect_duration)

    def restore(self, checkpoint: tuple) -> None:
        self.state, self._logits, history, n_tokens, self._expect_duration = checkpoint
        self.history = list(history)
        del self.tokens[n_tokens:]

    def banned(self) -> list[int]:
        """Pitch tokens the repetition guard forbids next."""
        h = self.history
        out = []
        n = self.max_repeat
        if n and len(h) >= n and all(t == h[-1] for t in h[-n:]):
            out.append(h[-1])
        for p in range(2, self.loop_period + 1 if self.max_loop else 2):
            span = self.max_loop * p
            if len(h) < span:
                break
            if all(h[i] == h[i + p] for i in range(len(h) - span, len(h) - p)):
                out.append(h[-p])
        return out

    def _scores(self, use_guard: bool) -> Tensor:
        """The logits after grammar, scale, guard and temperature masks: [V]."""
        x = self._logits.clone()
        if self._temperature > 0:
            x.div_(self._temperature)
        if self._expect_duration:
            x.add_(self._mask_duration)
        else:
            x.add_(self._mask_pitch_eos if self.allow_eos else self._mask_pitch)
            if self._scale is not None:
                x.add_(self._scale)
            if use_guard:
                for t in self.banned():
                    x[t] = NEG_INF
        return x

    def sample(self) -> int:
        """Draw the next token, feed it, and return it."""
        with torch.inference_mode():
            x = self._scores(use_guard=True)
            if not torch.isfinite(x).any():
                x = self._scores(use_guard=False)
            token = self._draw(x)
        self.feed(token)
        return token

    def _draw(self, x: Tensor) -> int:
        if self._temperature == 0:
            return int(torch.argmax(x))
        if 0 < self._top_k < x.numel():
            kth = torch.topk(x, self._top_k).values[-1]
            x = x.masked_fill(x < kth, NEG_INF)
        if self._top_p < 1.0:
            sorted_x, order = torch.sort(x, descending=True)
            cum = torch.softmax(sorted_x, dim=0).cumsum(dim=0)
            # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
            drop = (cum - torch.softmax(sorted_x, dim=0)) >= self._top_p
            x = x.index_fill(0, order[drop], NEG_INF)
        probs = torch.softmax(x, dim=0)
        return int(torch.multinomial(probs, 1, generator=self._gen))

    def sample_event(self) -> Event | None:
        """Draw one (pitches, duration in twelfths) event; None if the model ended the piece (<eos>)."""
        if self._expect_duration:
            pitch = self.history[-1]  # a pitch was fed: complete its event
        else:
            pitch = self.sample()
            if pitch == EOS:
                return None
        dur = self.sample()
        return self.vocab.pitches_of(pitch), self.vocab.duration_of(dur)
