"""Baselines the LSTM has to beat: a unigram and a variable-order Markov model over the same tokens.

Both are fitted on TRAIN pieces and give a full distribution over the vocabulary for the next
token, so they are scored (NLL, perplexity, top-1) exactly like the model and can sample.

The Markov model is the Continuator's idea (continue the longest context seen before) made into a
proper probability model: **interpolated modified Kneser-Ney** (Chen & Goodman 1998, as in KenLM)
over contexts of up to `order` tokens. Each level discounts its counts by D1, D2 or D3+ (from the
count-of-counts) and gives the freed mass to the next shorter context; lower levels count in how
many distinct contexts a token continues (continuation counts), except for n-grams that start at
<bos>, which have no left context and keep raw counts. The empty context interpolates with the
uniform distribution, so every token has non-zero probability. Contexts never cross a piece
boundary: the first tokens of a piece only see the piece so far, as the LSTM does.

Storage is numpy, not dicts (10M tokens × 9 levels of tuple keys would need tens of GB): level m
holds the sorted keys `prefix_id * V + token` of every distinct m-gram, where `prefix_id` is the
index of its first m-1 tokens in level m-1. Sorted keys put all followers of one context in one
contiguous slice, so a context's distribution is a slice, and looking a context up is one
`searchsorted` per level.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from liveduet.music.tokens import BOS, EOS, PAD, Vocabulary


@dataclass(frozen=True)
class Score:
    """Next-token prediction quality over `tokens` predicted tokens (<bos> and <pad> excluded)."""

    nll: float  # mean negative log-likelihood per token, nats
    perplexity: float
    accuracy: float  # top-1
    tokens: int

    @classmethod
    def from_sums(cls, nll_sum: float, correct: int, tokens: int) -> Score:
        nll = nll_sum / max(tokens, 1)
        return cls(nll=nll, perplexity=math.exp(min(nll, 700.0)), accuracy=correct / max(tokens, 1), tokens=tokens)

    def to_dict(self) -> dict:
        return asdict(self)


def grammar_mask(vocab: Vocabulary, last: int) -> np.ndarray:
    """Tokens allowed after `last`: a duration after a pitch set; a pitch set or <eos> otherwise."""
    if vocab.pitch_mask[last]:
        return vocab.duration_mask.copy()
    allowed = vocab.pitch_mask.copy()
    allowed[EOS] = True
    return allowed


class _Baseline:
    """Shared scoring and sampling over `start`/`advance`/`probs` (a state per history)."""

    name = "baseline"
    vocab_size: int

    def start(self, prime: Sequence[int]) -> object:
        raise NotImplementedError

    def advance(self, state: object, token: int) -> object:
        raise NotImplementedError

    def probs(self, state: object) -> np.ndarray:
        """Next-token distribution [V] after the history `state` stands for."""
        raise NotImplementedError

    def score(self, pieces: Sequence[np.ndarray]) -> Score:
        raise NotImplementedError

    def generate(self, vocab: Vocabulary, prime: Sequence[int], length: int, rng: np.random.Generator,
                 temperature: float = 1.0) -> list[int]:
        """Up to `length` tokens after `prime`, sampled under the token grammar; stops at <eos>."""
        if len(prime) == 0:
            prime = [BOS]
        state = self.start(prime)
        last = int(prime[-1])
        out: list[int] = []
        for _ in range(length):
            p = self.probs(state) * grammar_mask(vocab, last)
            if temperature != 1.0:
                p = np.power(p, 1.0 / temperature)
            p /= p.sum()
            token = int(rng.choice(len(p), p=p))
            out.append(token)
            if token == EOS:
                break
            state = self.advance(state, token)
            last = token
        return out


def _targets(pieces: Sequence[np.ndarray]) -> np.ndarray:
    """Every token a model is asked to predict: all but each piece's first (<bos>), no <pad>."""
    parts = [np.asarray(p[1:], dtype=np.int64) for p in pieces if len(p) > 1]
    t = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return t[t != PAD]


class Unigram(_Baseline):
    """Token frequencies with add-k smoothing over the whole vocabulary."""

    name = "unigram"

    def __init__(self, counts: np.ndarray, k: float = 0.5) -> None:
        self.vocab_size = len(counts)
        self.k = k
        self.p = (counts + k) / (counts.sum() + k * len(counts))
        self.logp = np.log(self.p)

    @classmethod
    def fit(cls, pieces: Sequence[np.ndarray], vocab_size: int, k: float = 0.5) -> Unigram:
        return cls(np.bincount(_targets(pieces), minlength=vocab_size).astype(np.float64), k)

    def start(self, prime: Sequence[int]) -> None:
        return None

    def advance(self, state: object, token: int) -> None:
        return None

    def probs(self, state: object = None) -> np.ndarray:
        return self.p

    def score(self, pieces: Sequence[np.ndarray]) -> Score:
        t = _targets(pieces)
        correct = int((t == int(np.argmax(self.p))).sum())
        return Score.from_sums(float(-self.logp[t].sum()), correct, len(t))


@dataclass
class _Level:
    """All distinct m-grams (sorted keys) and, per context (an (m-1)-gram id), its follower slice."""

    keys: np.ndarray  # int64 [K]: prefix_id * V + token, sorted
    value: np.ndarray  # float64 [K]: discounted count / context total
    start: np.ndarray  # int64 [C + 1]: followers of context c are keys[start[c]:start[c + 1]]
    gamma: np.ndarray  # float64 [C]: backoff weight; 1 where the context was never seen
    discounts: tuple[float, float, float]
    best: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # [C]: most likely next token


def _discounts(counts: np.ndarray) -> tuple[float, float, float]:
    """Modified Kneser-Ney discounts D1, D2, D3+ from the count-of-counts (Chen & Goodman eq. 26)."""
    n = [int((counts == k).sum()) for k in (1, 2, 3, 4)]
    fallback = (0.5, 1.0, 1.5)
    if min(n) == 0:
        return fallback  # too little data for the estimate (tiny corpora, tests)
    y = n[0] / (n[0] + 2 * n[1])
    d = (1 - 2 * y * n[1] / n[0], 2 - 3 * y * n[2] / n[1], 3 - 4 * y * n[3] / n[2])
    # Each discount must stay below the count it applies to, or mass would go negative.
    d1, d2, d3 = (float(min(max(x, 0.05), k - 0.05)) for k, x in zip((1, 2, 3), d))
    return d1, d2, d3


def _segment_argmax(values: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per slice values[start[c]:start[c + 1]]: (max, index of its first maximum); (-inf, -1) if empty."""
    n = len(start) - 1
    lengths = np.diff(start)
    nonempty = lengths > 0
    top = np.full(n, -np.inf)
    where = np.full(n, -1, dtype=np.int64)
    if not nonempty.any():
        return top, where
    # Empty slices are left out of reduceat, so each reduction runs to the next non-empty start.
    top[nonempty] = np.maximum.reduceat(values, start[:-1][nonempty])
    owner = np.repeat(np.arange(n), lengths)
    hits = np.flatnonzero(values == top[owner])
    slices, first = np.unique(owner[hits], return_index=True)
    where[slices] = hits[first]
    return top, where


def _set_best(levels: list[_Level], suffixes: list[np.ndarray], p0: np.ndarray, V: int) -> None:
    """Store in every level the argmax of the full distribution after each of its contexts.

    Top-1 accuracy then costs one lookup per position instead of a [V] distribution (V is 33k on
    the default data). After context c the tokens that follow c in training have their own
    probability; every other token has gamma(c) times its probability after c's suffix, whose
    maximum is the suffix's best. So best(c) is the larger of the two, level by level upwards.
    `full[e]` is the probability of m-gram e's last token after its first m-1 tokens:
    value + gamma × full[suffix of e]."""
    full = p0[levels[0].keys % V]
    best, best_p = np.array([int(np.argmax(p0))]), np.array([float(p0.max())])
    levels[0].best = best
    for m in range(1, len(levels)):
        level, suffix = levels[m], suffixes[m]
        owner = np.repeat(np.arange(len(level.gamma)), np.diff(level.start))
        full = level.value + level.gamma[owner] * full[suffix]
        top, where = _segment_argmax(full, level.start)
        context_suffix = suffixes[m - 1]  # a context here is an (m)-gram of the level below
        below_p = level.gamma * best_p[context_suffix]
        use_top = top >= below_p  # never where c has no followers: top is -inf there
        best = best[context_suffix]
        best[use_top] = level.keys[where[use_top]] % V
        best_p = np.where(use_top, top, below_p)
        level.best = best


def _slices(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(which slice, flat index) for every element of the slices [starts[i], ends[i])."""
    lengths = ends - starts
    owner = np.repeat(np.arange(len(starts)), lengths)
    first = np.cumsum(lengths) - lengths
    return owner, np.repeat(starts - first, lengths) + np.arange(int(lengths.sum()))


class Markov(_Baseline):
    """Variable-order Markov model with interpolated modified Kneser-Ney smoothing (see module doc).

    A state is the ids of the contexts of length 1..order ending at the last token ([order],
    -1 where unseen or reaching before the piece start).
    """

    name = "markov"

    def __init__(self, vocab_size: int, order: int, levels: list[_Level], p0: np.ndarray, fit_seconds: float) -> None:
        self.vocab_size = vocab_size
        self.order = order
        self.levels = levels  # levels[m - 1] holds the m-grams, m = 1..order + 1
        self.p0 = p0  # [V] distribution after the empty context, already mixed with uniform
        self.fit_seconds = fit_seconds

    # -- fitting -------------------------------------------------------------------------------
    @classmethod
    def fit(cls, pieces: Sequence[np.ndarray], vocab_size: int, order: int = 8) -> Markov:
        if order < 1:
            raise ValueError(f"order must be at least 1, got {order}")
        started = time.perf_counter()
        V = vocab_size
        pieces = [np.asarray(p, dtype=np.int64) for p in pieces if len(p)]
        tok = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
        pos = np.concatenate([np.arange(len(p)) for p in pieces]) if pieces else np.zeros(0, dtype=np.int64)
        target = pos >= 1  # an n-gram ending at <bos> is a context only, never a prediction
        keys_by_level: list[np.ndarray] = []
        counts_by_level: list[np.ndarray] = []
        suffix_by_level: list[np.ndarray] = []  # per m-gram: id of its last m-1 tokens in level m-1
        prev = np.zeros(len(tok), dtype=np.int64)  # id of the (m-1)-gram ending at each position
        for m in range(1, order + 2):
            valid = pos >= m - 1
            key = np.full(len(tok), -1, dtype=np.int64)
            if m == 1:
                key[:] = tok
            else:
                key[1:] = prev[:-1] * V + tok[1:]
            keys, first, inverse = np.unique(key[valid], return_index=True, return_inverse=True)
            ids = np.full(len(tok), -1, dtype=np.int64)
            ids[valid] = inverse.reshape(-1)
            raw = np.bincount(ids[valid & target], minlength=len(keys)).astype(np.float64)
            if m >= 2:
                # Continuation counts of the (m-1)-grams: each distinct m-gram adds one to its suffix.
                suffix = prev[np.flatnonzero(valid)[first]]
                cont = np.bincount(suffix, minlength=len(counts_by_level[-1])).astype(np.float64)
                # An n-gram with no left extension starts at <bos>: Kneser-Ney keeps its raw count.
                counts_by_level[-1] = np.where(cont > 0, cont, counts_by_level[-1])
            else:
                suffix = np.zeros(len(keys), dtype=np.int64)  # the empty context
            keys_by_level.append(keys)
            counts_by_level.append(raw)
            suffix_by_level.append(suffix)
            prev = ids
        levels = []
        n_contexts = 1  # level 1's only context is the empty one
        for keys, counts in zip(keys_by_level, counts_by_level):
            levels.append(cls._level(keys, counts, n_contexts, V))
            n_contexts = len(keys)
        uniform = np.full(V, 1.0 / V)
        first_level = levels[0]
        p0 = first_level.gamma[0] * uniform
        lo, hi = first_level.start[0], first_level.start[1]
        p0[first_level.keys[lo:hi] % V] += first_level.value[lo:hi]
        _set_best(levels, suffix_by_level, p0, V)
        return cls(V, order, levels, p0, time.perf_counter() - started)

    @staticmethod
    def _level(keys: np.ndarray, counts: np.ndarray, n_contexts: int, V: int) -> _Level:
        d1, d2, d3 = _discounts(counts)
        start = np.searchsorted(keys, np.arange(n_contexts + 1, dtype=np.int64) * V)

        def per_context(x: np.ndarray) -> np.ndarray:
            cs = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
            return cs[start[1:]] - cs[start[:-1]]

        total = per_context(counts)
        freed = d1 * per_context(counts == 1) + d2 * per_context(counts == 2) + d3 * per_context(counts >= 3)
        seen = total > 0
        safe_total = np.where(seen, total, 1.0)
        gamma = np.where(seen, freed / safe_total, 1.0)
        discount = np.select([counts >= 3, counts == 2, counts == 1], [d3, d2, d1], 0.0)
        owner = np.repeat(np.arange(n_contexts), np.diff(start))
        value = np.maximum(counts - discount, 0.0) / safe_total[owner]
        return _Level(keys, value, start, gamma, (d1, d2, d3))

    # -- contexts ------------------------------------------------------------------------------
    def _lookup(self, level: int, prefix: np.ndarray, token: np.ndarray) -> np.ndarray:
        """Ids in levels[level] of the n-grams (prefix id, token); -1 where absent or prefix is -1."""
        keys = self.levels[level].keys
        q = prefix * self.vocab_size + token
        i = np.searchsorted(keys, q)
        found = (prefix >= 0) & (i < len(keys))
        found[found] = keys[i[found]] == q[found]
        return np.where(found, i, -1)

    def _extend(self, states: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """States [B, order] after appending tokens [B]."""
        out = np.empty_like(states)
        out[:, 0] = self._lookup(0, np.zeros(len(tokens), dtype=np.int64), tokens)
        for j in range(1, self.order):
            out[:, j] = self._lookup(j, states[:, j - 1], tokens)
        return out

    def _piece_states(self, piece: np.ndarray) -> np.ndarray:
        """[len, order]: the state after each token of a piece (contexts start at the piece)."""
        n = len(piece)
        states = np.full((n, self.order), -1, dtype=np.int64)
        tok = np.asarray(piece, dtype=np.int64)
        states[:, 0] = self._lookup(0, np.zeros(n, dtype=np.int64), tok)
        for j in range(1, self.order):
            states[1:, j] = self._lookup(j, states[:-1, j - 1], tok[1:])
        return states

    def start(self, prime: Sequence[int]) -> np.ndarray:
        return self._piece_states(np.asarray(prime, dtype=np.int64))[-1]

    def advance(self, state: np.ndarray, token: int) -> np.ndarray:
        return self._extend(state[None, :], np.array([token], dtype=np.int64))[0]

    def probs(self, state: np.ndarray) -> np.ndarray:
        return self.distributions(state[None, :])[0]

    def _weights(self, states: np.ndarray) -> np.ndarray:
        """[B, order + 1]: column j is the product of the gammas of the contexts longer than j.

        Interpolation unrolled: p = Σ_j weight_j a_j, where a_j holds the discounted counts after
        the length-j context (a_0 = p0, already mixed with uniform)."""
        B = len(states)
        gammas = np.ones((B, self.order + 1))
        for j in range(1, self.order + 1):
            ctx = states[:, j - 1]
            ok = ctx >= 0
            gammas[ok, j] = self.levels[j].gamma[ctx[ok]]
        longer = np.cumprod(gammas[:, ::-1], axis=1)[:, ::-1]  # product over contexts of length ≥ j
        return np.concatenate([longer[:, 1:], np.ones((B, 1))], axis=1)

    def distributions(self, states: np.ndarray) -> np.ndarray:
        """[B, V] next-token distributions after states [B, order]: one dense write, sparse adds."""
        V = self.vocab_size
        weight = self._weights(states)
        out = weight[:, 0:1] * self.p0[None, :]
        flat = out.reshape(-1)
        for j in range(1, self.order + 1):
            level = self.levels[j]
            ctx = states[:, j - 1]
            rows = np.flatnonzero(ctx >= 0)
            if not len(rows):
                continue
            owner, idx = _slices(level.start[ctx[rows]], level.start[ctx[rows] + 1])
            row = rows[owner]
            # (row, token) pairs are unique within one level, so a plain fancy add is exact.
            flat[row * V + level.keys[idx] % V] += weight[row, j] * level.value[idx]
        return out

    def prob_of(self, states: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """[B]: probability of tokens [B] after states [B, order], without building distributions."""
        weight = self._weights(states)
        p = weight[:, 0] * self.p0[tokens]
        for j in range(1, self.order + 1):
            idx = self._lookup(j, states[:, j - 1], tokens)
            hit = idx >= 0
            p[hit] += weight[hit, j] * self.levels[j].value[idx[hit]]
        return p

    def predict(self, states: np.ndarray) -> np.ndarray:
        """[B]: the most likely next token after each state (exact argmax of `distributions`)."""
        # Contexts nest: an unseen context has no seen extension, so the seen ones are a prefix.
        depth = np.cumprod(states >= 0, axis=1).sum(axis=1)
        out = np.full(len(states), int(self.levels[0].best[0]), dtype=np.int64)
        for j in range(1, self.order + 1):
            rows = depth == j
            out[rows] = self.levels[j].best[states[rows, j - 1]]
        return out

    # -- scoring -------------------------------------------------------------------------------
    def score(self, pieces: Sequence[np.ndarray]) -> Score:
        states, targets = [], []
        for piece in pieces:
            piece = np.asarray(piece, dtype=np.int64)
            if len(piece) < 2:
                continue
            keep = piece[1:] != PAD
            states.append(self._piece_states(piece)[:-1][keep])
            targets.append(piece[1:][keep])
        if not states:
            return Score.from_sums(0.0, 0, 0)
        all_states, all_targets = np.concatenate(states), np.concatenate(targets)
        nll = -float(np.log(self.prob_of(all_states, all_targets)).sum())
        correct = int((self.predict(all_states) == all_targets).sum())
        return Score.from_sums(nll, correct, len(all_targets))

    def sizes(self) -> list[int]:
        """Distinct n-grams per level, n = 1..order + 1."""
        return [len(level.keys) for level in self.levels]
