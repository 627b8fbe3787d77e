"""Best of K: the answer plays, stretch by stretch, the candidate the critic rates most real.

`CandidateSampler` wraps the model's Sampler and is a LiveSampler itself, so the engine and the
AnswerPlayer do not change: `sample_event()` still returns one event. Behind it:

    plan      the chosen stretch (S events), handed out one event per call
    batch     K candidate continuations of what the plan ends with, grown one event per call,
              all K in one model step (the state batched [L, K, H]): K = 4 costs about one step

When the plan runs out, the critic scores the K grown candidates (context + stretch), the best
becomes the plan, the sampler's state jumps to its end, and K new candidates start from there.
Only the very first stretch of an answer is grown all at once. So each call costs about one batched
event (two model steps and K draws), and every S-th call adds one critic call (~0.3 ms): short
steps between which the AnswerPlayer's send guard can yield to the scheduler.

Invariant: with K = 1 (or no critic) this is the wrapped sampler, call for call; with any K, the
events returned are exactly the tokens the sampler's state has been fed, in order.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

import torch
from torch import Tensor

from liveduet.model.critic import Critic
from liveduet.model.sampling import NEG_INF, Sampler, draw_rows
from liveduet.music.tokens import PAD, Event

# Batch dimension of each state field (AttnState's keys/values are [B, W, H], pos is shared).
BATCH_DIM = {"h": 1, "c": 1, "keys": 0, "values": 0}


def repeat_state(state: Any, k: int) -> Any:
    """A batch-1 state → the same state K times (a NamedTuple of the same type)."""
    return type(state)(*(t.repeat_interleave(k, dim=BATCH_DIM[f]) if f in BATCH_DIM else t
                         for f, t in zip(state._fields, state)))


def stack_states(states: list[Any]) -> Any:
    """Batch-1 states → one batched state."""
    first = states[0]
    return type(first)(*(torch.cat([s[i] for s in states], dim=BATCH_DIM[f]) if f in BATCH_DIM else first[i]
                         for i, f in enumerate(first._fields)))


def row_state(state: Any, j: int) -> Any:
    """Row j of a batched state, as a batch-1 state."""
    return type(state)(*(t.narrow(BATCH_DIM[f], j, 1).contiguous() if f in BATCH_DIM else t
                         for f, t in zip(state._fields, state)))


def step_batch(runtime: Any, tokens: list[int], state: Any) -> tuple[Tensor, Any]:
    """One model step for K states at once: tokens [K] → (logits [K, V], next batched state)."""
    with torch.inference_mode():
        logits, flat = runtime.module(torch.tensor(tokens, dtype=torch.long), list(state))
    return logits, type(state)(*flat)


class CandidateBatch:
    """K continuations of the sampler's present, grown in lockstep one event at a time."""

    def __init__(self, base: Sampler, k: int, rng: random.Random, events: int) -> None:
        self.base, self.k, self.rng, self.events = base, k, rng, events
        self.state = repeat_state(base.state, k)
        self.logits = base._logits.expand(k, -1)  # [K, V] the present's next-token scores
        self.history = [list(base.history) for _ in range(k)]
        self.context = list(base.tokens)  # what the critic reads before the stretch
        self.tokens: list[list[int]] = [[] for _ in range(k)]
        self.grown = 0

    @property
    def done(self) -> bool:
        return self.grown >= self.events

    def _draw(self, mask: Tensor, guard: bool) -> list[int]:
        b = self.base
        inv_t = 1.0 / b.temperature if b.temperature > 0 else 1.0
        x = torch.add(mask, self.logits, alpha=inv_t)  # [K, V]
        if guard:
            for j, h in enumerate(self.history):
                banned = b.banned(h)
                if banned:
                    row = x[j].clone()
                    row[banned] = NEG_INF
                    if float(row.max()) > NEG_INF:  # the guard may not mask every option
                        x[j] = row
        return draw_rows(x, b.temperature, b.top_k, b.top_p, [self.rng.random() for _ in range(self.k)])

    def grow(self) -> None:
        """One event for every candidate: a pitch token, then a duration token (two batched steps)."""
        mask_pitch, mask_duration = self.base.masks()
        with torch.inference_mode():
            pitch = self._draw(mask_pitch, guard=True)
            self.logits, self.state = step_batch(self.base.runtime, pitch, self.state)
            dur = self._draw(mask_duration, guard=False)
            self.logits, self.state = step_batch(self.base.runtime, dur, self.state)
        for j in range(self.k):
            self.tokens[j] += [pitch[j], dur[j]]
            self.history[j].append(pitch[j])
        self.grown += 1

    def rows(self, context_tokens: int) -> Tensor:
        """[K, C + 2S] what the critic reads: the context (left-padded) and each candidate."""
        ctx = self.context[-context_tokens:]
        ctx = [PAD] * (context_tokens - len(ctx)) + ctx
        return torch.tensor([ctx + t for t in self.tokens], dtype=torch.long)

    def commit(self, j: int) -> None:
        """Move the wrapped sampler to the end of candidate j, as if it had sampled it itself."""
        b = self.base
        b.restore((row_state(self.state, j), self.logits[j].clone(), self.history[j],
                   self.context + self.tokens[j], False))


class CandidateSampler:
    """A LiveSampler playing the critic's pick of K candidates per stretch (see the module docstring)."""

    def __init__(self, base: Sampler, critic: Critic | None, k: int, seed: int | None = None) -> None:
        if k < 1:
            raise ValueError(f"candidates must be >= 1, got {k}")
        if k > 1 and critic is None:
            raise ValueError("best of K needs a critic")
        self.base, self.critic, self.k = base, critic, k
        self.stretch = critic.cfg.stretch_events if critic is not None else 1
        self.rng = random.Random(seed)
        self.plan: deque[Event] = deque()
        self.batch: CandidateBatch | None = None
        self.picks: list[int] = []  # which candidate won each stretch (for stats and tests)
        self.scores: list[list[float]] = []

    # -- the LiveSampler protocol: settings pass through; anything that moves the state drops the plan
    @property
    def temperature(self) -> float:
        return self.base.temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self.base.temperature = value

    def __getattr__(self, name: str) -> Any:  # top_k, top_p, tokens, vocab, runtime ... of the sampler
        return getattr(self.base, name)

    def _drop(self) -> None:
        self.plan.clear()
        self.batch = None

    def feed(self, token: int) -> None:
        self._drop()
        self.base.feed(token)

    def reset(self) -> None:
        self._drop()
        self.base.reset()

    def checkpoint(self) -> object:
        return self.base.checkpoint()

    def restore(self, checkpoint: object) -> None:
        self._drop()
        self.base.restore(checkpoint)  # type: ignore[arg-type]

    def set_pitch_classes(self, allowed: set[int] | frozenset[int] | None) -> None:
        self.batch = None  # candidates drawn under the old mask are not grown further
        self.base.set_pitch_classes(allowed)

    def follow_pitch_classes(self, weights: Any, strength: float) -> None:
        self.batch = None
        self.base.follow_pitch_classes(weights, strength)

    def follow_durations(self, counts: Any, strength: float) -> None:
        self.batch = None
        self.base.follow_durations(counts, strength)

    def follow_register(self, mean: float | None, spread: float, strength: float) -> None:
        self.batch = None
        self.base.follow_register(mean, spread, strength)

    def set_complexity(self, value: float) -> None:
        self.batch = None
        self.base.set_complexity(value)

    # -- sampling --------------------------------------------------------------------------------
    def sample_event(self) -> Event | None:
        if self.k == 1 or self.base.allow_eos or (not self.plan and self.base.expects_duration):
            return self.base.sample_event()
        if not self.plan:
            if self.batch is None:
                self.batch = CandidateBatch(self.base, self.k, self.rng, self.stretch)
            while not self.batch.done:  # the first stretch of an answer: grown at once
                self.batch.grow()
            self._choose(self.batch)
            self.batch = CandidateBatch(self.base, self.k, self.rng, self.stretch)
        event = self.plan.popleft()
        if self.batch is not None and not self.batch.done:
            self.batch.grow()  # the next stretch's candidates, one event per event played
        return event

    def _choose(self, batch: CandidateBatch) -> None:
        assert self.critic is not None
        scores = self.critic.score(batch.rows(self.critic.cfg.context_tokens))  # [K]
        j = int(torch.argmax(scores))  # ties: the first
        self.picks.append(j)
        self.scores.append([round(float(s), 4) for s in scores])
        batch.commit(j)
        vocab = self.base.vocab
        self.plan.extend(vocab.decode(batch.tokens[j]))


def best_of_k(sampler: Sampler, model_dir: Any, k: int, seed: int | None = None) -> Sampler | CandidateSampler:
    """The sampler the engine gets for `[answer] candidates = k`: the plain one for k = 1, else the
    wrapper with the critic shipped beside the model (ModelLoadError naming the problem if it is
    missing or made for another vocabulary)."""
    if k <= 1:
        return sampler
    critic = Critic.load(model_dir, sampler.vocab)
    return CandidateSampler(sampler, critic, k, seed)


__all__ = ["CandidateBatch", "CandidateSampler", "best_of_k", "repeat_state", "row_state", "stack_states",
           "step_batch"]
