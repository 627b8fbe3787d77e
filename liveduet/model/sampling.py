"""Sampling answers from a model runtime, one token at a time, with the state cached.

Every call steps the model once: `feed(token)` advances with a known token (the player's call, as
it arrives), `sample()` draws the next token and feeds it. The draw is shaped, in this order, by:

1. the grammar: after <bos>, <eos> or a duration only pitch tokens (and <eos> if allowed); after a
   pitch token only durations; <pad> and <bos> never;
2. the scale lock (`set_pitch_classes`): pitch tokens with a pitch class outside the set are
   masked; the rest is always allowed; and the call's pitch classes (`follow_pitch_classes`): a
   soft bias, added to each pitch token's score, of how common its pitch classes were in the call
   (a partner takes up the material it was given; the model alone forgets it within a phrase);
   the same for durations and the call's rhythm (`follow_durations`); and complexity
   (`set_complexity`), a bias on note density added to the durations' (see COMPLEXITY_SLOPE);
3. the repetition guard (pitch tokens only, durations are free to repeat):
   - one pitch token may not come more than `max_repeat` times in a row (default 4, so no fifth
     identical note or chord);
   - a figure of 2..`loop_period` pitch tokens (default 8) that has just been played `max_loop`
     times in a row (default 4) may not start again: its first token is masked.
   0 turns either rule off. Music repeats on purpose (Alberti basses, sequences), so the guard
   only cuts what has already gone on long; it is a hard mask, not a soft penalty, so its effect is the same at every
   temperature. If it would mask every option, it is ignored for that draw;
4. temperature (0 = greedy), then top-k, then top-p (nucleus).

Masks are precomputed tensors (the scale lock is folded into the pitch mask when set); a draw
is one fused mask-and-scale pass, a softmax and an inverse-CDF pick (~30 µs for V = 2,000).
"""

from __future__ import annotations

import math
import os
import random
from collections import deque
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from liveduet.model.lstm import State
from liveduet.model.runtime import ModelRuntime
from liveduet.music.tokens import BOS, EOS, Event

NEG_INF = float("-inf")
RECENT_TOKENS = 512
REGISTER_MIN_SPREAD = 4.0  # semitones: a call on one note still leaves the answer room to move
FOLLOW_FLOOR = 0.02  # a pitch class absent from the call still has this share: disfavoured, not banned
# Complexity is note density (Generate's knob and the live SetComplexity command): each duration d
# (twelfths of a beat) has its probability multiplied by d ** -k, k = COMPLEXITY_SLOPE * (complexity
# - 0.5) — a bias of -k·log d on its score, added to the call's rhythm bias, never replacing it. At
# 0.5 it is no bias at all; at 1 (k = 3) an eighth note is 8x as likely, relative to a quarter, as the
# model alone would make it (denser); at 0 the reverse (sparser). Pitch choice is left to the model.
# (No share-plus-floor as in `follow_durations`: the floor would flatten every duration the model
# actually plays and leave the knob's ends with almost no effect.)
COMPLEXITY_SLOPE = 6.0
COMPLEXITY_NEUTRAL = 0.5


def complexity_weights(complexity: float, max_duration: int) -> dict[int, float]:
    """Duration (twelfths) → weight for a complexity in 0..1; see COMPLEXITY_SLOPE."""
    k = COMPLEXITY_SLOPE * (complexity - COMPLEXITY_NEUTRAL)
    return {d: d ** -k for d in range(1, max_duration + 1)}


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

        pitch = torch.from_numpy(self.vocab.pitch_mask)
        dur = torch.from_numpy(self.vocab.duration_mask)
        zero, ninf = torch.zeros(V), torch.full((V,), NEG_INF)
        self._grammar_duration = torch.where(dur, zero, ninf)  # [V] after a pitch token
        self._mask_duration = self._grammar_duration
        self._rhythm: Tensor | None = None  # [V] the call's duration bias, 0 off duration tokens
        self._density: Tensor | None = None  # [V] the complexity bias, 0 off duration tokens
        self.complexity = COMPLEXITY_NEUTRAL
        self._grammar_pitch = torch.where(pitch, zero, ninf)  # [V] after <bos>/<eos>/a duration
        self._rng = random.Random(seed if seed is not None else int.from_bytes(os.urandom(8), "little"))
        # Pitch classes of each pitch token, for the scale lock: [number of pitch sets, 12].
        self._pcs = np.zeros((len(self.vocab.pitchsets), 12), dtype=np.bool_)
        for i, ps in enumerate(self.vocab.pitchsets):
            self._pcs[i, [p % 12 for p in ps]] = True
        self.pitch_classes: frozenset[int] | None = None
        self._follow: Tensor | None = None  # [V] the call's pitch-class bias, 0 off pitch tokens
        self._register: Tensor | None = None  # [V] the call's register bias, 0 off pitch tokens
        self._set_means = torch.tensor([sum(c) / len(c) if c else 0.0 for c in self.vocab.pitchsets])
        self.set_pitch_classes(None)
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
        mask = self._grammar_pitch.clone()  # [V]: the grammar and the scale in one additive mask
        if allowed is not None:
            if any(not 0 <= pc < 12 for pc in allowed):
                raise ValueError(f"pitch classes must be 0..11, got {sorted(allowed)}")
            outside = np.ones(12, dtype=np.bool_)
            outside[list(allowed)] = False
            bad = (self._pcs & outside).any(axis=1)  # [pitch sets]; the rest has no pitch class: never bad
            mask[self.vocab.rest_id :][torch.from_numpy(bad)] = NEG_INF
        for bias in (self._follow, self._register):
            if bias is not None:
                mask = mask + bias
        self._mask_pitch = mask
        self._mask_pitch_eos = mask.clone()
        self._mask_pitch_eos[EOS] = 0.0
        self.pitch_classes = None if allowed is None else frozenset(allowed)

    def follow_pitch_classes(self, weights: Sequence[float] | None, strength: float) -> None:
        """Bias pitch tokens toward a pitch-class distribution (12 weights, e.g. the call's note
        durations per pitch class); None or strength 0 removes the bias. A set scores the mean, over
        its pitch classes, of log(share + FLOOR) less that mean's expectation under the call, so the
        call's usual notes are neutral, its frequent ones favoured and absent ones disfavoured,
        never forbidden. Rests stay neutral."""
        if weights is None or strength <= 0 or sum(weights) <= 0:
            self._follow = None
        else:
            w = np.asarray(weights, dtype=np.float64)
            share = w / w.sum()
            log_share = np.log(share + FOLLOW_FLOOR)
            log_share -= float((share * log_share).sum())
            sizes = np.maximum(self._pcs.sum(axis=1), 1)
            per_set = (self._pcs * log_share).sum(axis=1) / sizes  # [pitch sets]; the rest: 0
            bias = torch.zeros(len(self.vocab))
            bias[self.vocab.rest_id :] = torch.from_numpy(strength * per_set).float()
            self._follow = bias
        self.set_pitch_classes(None if self.pitch_classes is None else set(self.pitch_classes))

    def follow_register(self, mean: float | None, spread: float, strength: float) -> None:
        """Bias pitch tokens toward a register: each set scores -strength/2 · z², z its mean pitch's
        distance from `mean` in units of `spread` (semitones, at least REGISTER_MIN_SPREAD) — a
        Gaussian prior around the call's register. None or strength 0 removes it; rests stay neutral."""
        if mean is None or strength <= 0:
            self._register = None
        else:
            z = (self._set_means - mean) / max(spread, REGISTER_MIN_SPREAD)
            bias = torch.zeros(len(self.vocab))
            bias[self.vocab.rest_id + 1 :] = -0.5 * strength * z[1:] ** 2
            self._register = bias
        self.set_pitch_classes(None if self.pitch_classes is None else set(self.pitch_classes))

    def follow_durations(self, counts: dict[int, float] | None, strength: float) -> None:
        """Bias duration tokens toward a distribution of durations (twelfths → weight, e.g. the
        call's events), as `follow_pitch_classes` does for pitch classes; None or 0 removes it."""
        self._rhythm = self._duration_bias(counts, strength)
        self._fold_durations()

    def set_complexity(self, value: float) -> None:
        """Note density in 0..1 (COMPLEXITY_NEUTRAL: no bias); see COMPLEXITY_SLOPE."""
        if not 0.0 <= value <= 1.0:  # NaN fails too
            raise ValueError(f"complexity must be in 0..1, got {value}")
        self.complexity = float(value)
        if value == COMPLEXITY_NEUTRAL:
            self._density = None
        else:
            weights = complexity_weights(value, self.vocab.settings.max_duration)
            bias = torch.zeros(len(self.vocab))
            logs = [math.log(weights[d]) for d in sorted(weights)]  # durations 1..max, in token order
            bias[self.vocab.dur_base : self.vocab.rest_id] = torch.tensor(logs)
            self._density = bias
        self._fold_durations()

    def _duration_bias(self, counts: dict[int, float] | None, strength: float) -> Tensor | None:
        """[V] strength · (log(share + FLOOR) less its expectation) on each duration token; None for no bias."""
        if not counts or strength <= 0 or sum(counts.values()) <= 0:
            return None
        total = sum(counts.values())
        n = self.vocab.settings.max_duration
        share = np.zeros(n)
        for d, w in counts.items():
            if 1 <= d <= n:
                share[d - 1] += w / total
        log_share = np.log(share + FOLLOW_FLOOR)
        log_share -= float((share * log_share).sum())
        bias = torch.zeros(len(self.vocab))
        bias[self.vocab.dur_base : self.vocab.rest_id] = torch.from_numpy(strength * log_share).float()
        return bias

    def _fold_durations(self) -> None:
        """The grammar and both duration biases in one additive mask (one pass per draw)."""
        mask = self._grammar_duration
        for bias in (self._rhythm, self._density):
            if bias is not None:
                mask = mask + bias
        self._mask_duration = mask

    # -- stepping ----------------------------------------------------------------------------
    def reset(self) -> None:
        """Fresh state, primed with <bos>."""
        self.state: State = self.runtime.initial_state()
        self.history: list[int] = []  # recent pitch tokens, for the repetition guard
        # The most recent tokens fed since the reset, for inspection; bounded, a session runs for hours.
        self.tokens: deque[int] = deque(maxlen=RECENT_TOKENS)
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
        return (self.state, self._logits, list(self.history), list(self.tokens), self._expect_duration)

    def restore(self, checkpoint: tuple) -> None:
        self.state, self._logits, history, tokens, self._expect_duration = checkpoint
        self.history = list(history)
        self.tokens = deque(tokens, maxlen=RECENT_TOKENS)

    def banned(self, history: list[int] | None = None) -> list[int]:
        """Pitch tokens the repetition guard forbids next (after `history`, default this sampler's)."""
        h = self.history if history is None else history
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

    def masks(self) -> tuple[Tensor, Tensor]:
        """The additive masks now in force ([V] each): after a duration (grammar, scale lock, the call's
        pitch-class and register biases) and after a pitch (grammar, the call's rhythm bias)."""
        return (self._mask_pitch_eos if self.allow_eos else self._mask_pitch), self._mask_duration

    @property
    def expects_duration(self) -> bool:
        return self._expect_duration

    def _scores(self, use_guard: bool) -> tuple[Tensor, bool]:
        """The logits after temperature, grammar, scale and guard masks ([V], a new tensor), and
        whether the guard masked anything."""
        if self._expect_duration:
            mask = self._mask_duration
        else:
            mask = self._mask_pitch_eos if self.allow_eos else self._mask_pitch
        inv_t = 1.0 / self._temperature if self._temperature > 0 else 1.0
        x = torch.add(mask, self._logits, alpha=inv_t)  # one pass: mask + logits / T
        banned = self.banned() if use_guard and not self._expect_duration else []
        for t in banned:
            x[t] = NEG_INF
        return x, bool(banned)

    def sample(self) -> int:
        """Draw the next token, feed it, and return it."""
        with torch.inference_mode():
            x, guarded = self._scores(use_guard=True)
            if guarded and float(x.max()) == NEG_INF:  # the guard masked every option: let it go
                x, _ = self._scores(use_guard=False)
            token = self._draw(x)
        self.feed(token)
        return token

    def _draw(self, x: Tensor) -> int:
        if self._temperature == 0:
            return int(torch.argmax(x))
        idx: Tensor | None = None
        if 0 < self._top_k < x.numel():
            x, idx = torch.topk(x, self._top_k)  # sorted, descending
        probs = torch.softmax(x, dim=0)
        if self._top_p < 1.0:
            if idx is None:
                probs, idx = self._top_mass(probs, self._top_p)
            # The smallest prefix whose mass reaches top_p (at least one token).
            keep = int(torch.searchsorted(probs.cumsum(0), self._top_p)) + 1
            probs, idx = probs[:keep], idx[:keep]
        # Inverse-CDF draw from one uniform number: ~10x cheaper than torch.multinomial here.
        cdf = probs.cumsum(0)
        u = self._rng.random() * float(cdf[-1])
        pick = min(int(torch.searchsorted(cdf, u, right=True)), cdf.numel() - 1)
        return int(idx[pick]) if idx is not None else pick

    @staticmethod
    def _top_mass(probs: Tensor, p: float) -> tuple[Tensor, Tensor]:
        """The likeliest tokens, sorted, enough of them to hold mass p. A full sort of V costs
        ~0.1 ms; a model's distribution is peaked, so a top-32 usually suffices."""
        k = 32
        while True:
            vals, idx = torch.topk(probs, min(k, probs.numel()))
            if k >= probs.numel() or float(vals.sum()) >= p:
                return vals, idx
            k *= 4

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


def draw_rows(x: Tensor, temperature: float, top_k: int, top_p: float, uniforms: Sequence[float]) -> list[int]:
    """One token per row of masked scores x [K, V] (temperature already applied), as `Sampler._draw`
    draws one: greedy at temperature 0, else top-k, then the smallest prefix of mass top_p (searched
    among the likeliest 64 tokens, which hold it for a peaked model), then an inverse-CDF pick with
    the row's uniform number. One pass for all K candidates."""
    if temperature == 0:
        return [int(t) for t in torch.argmax(x, dim=1)]
    k = min(x.shape[1], top_k if top_k > 0 else 64)
    vals, idx = torch.topk(x, k, dim=1)  # [K, k] sorted descending
    probs = torch.softmax(vals, dim=1) if top_k > 0 else torch.softmax(x, dim=1).gather(1, idx)
    cdf = probs.cumsum(1)  # [K, k]
    if top_p < 1.0:
        keep = (cdf - probs) < top_p  # the prefix that reaches top_p (the first token always)
        probs = probs * keep
        cdf = probs.cumsum(1)
    u = torch.tensor(uniforms, dtype=cdf.dtype)[:, None] * cdf[:, -1:]  # [K, 1]
    pick = torch.searchsorted(cdf, u, right=True).clamp_(max=k - 1)  # [K, 1]
    return idx.gather(1, pick)[:, 0].tolist()
