"""Baselines: smoothed distributions are proper, context helps, sampling follows the grammar."""

from __future__ import annotations

import math

import numpy as np
import pytest

from liveduet.model.baselines import Markov, Score, Unigram, grammar_mask
from liveduet.music.tokens import BOS, EOS, PAD, TokenizerSettings, Vocabulary


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return Vocabulary(TokenizerSettings(), chords=[(60, 64, 67), (57, 60, 64)])


def _piece(vocab: Vocabulary, events: list[tuple[tuple[int, ...], int]]) -> np.ndarray:
    return np.array([BOS, *vocab.encode(events), EOS], dtype=np.int64)


def _random_pieces(vocab: Vocabulary, n: int, length: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    pitches = [(), (60,), (62,), (64,), (65,), (67,), (60, 64, 67), (57, 60, 64)]
    return [
        _piece(vocab, [(pitches[rng.integers(len(pitches))], int(rng.choice([3, 6, 12, 24]))) for _ in range(length)])
        for _ in range(n)
    ]


def _repetitive_pieces(vocab: Vocabulary, n: int, length: int) -> list[np.ndarray]:
    riff = [((60,), 6), ((64,), 6), ((67,), 12), ((60, 64, 67), 24), ((), 6)]
    return [_piece(vocab, [riff[(i + k) % len(riff)] for i in range(length)]) for k in range(n)]


@pytest.mark.parametrize("order", [1, 3, 8])
def test_markov_distributions_sum_to_one_and_are_positive(vocab: Vocabulary, order: int) -> None:
    model = Markov.fit(_random_pieces(vocab, 20, 60, seed=1), len(vocab), order=order)
    rng = np.random.default_rng(2)
    # Contexts both seen (from training-like data) and unseen (random tokens, including specials).
    histories = [*_random_pieces(vocab, 3, 10, seed=3), rng.integers(0, len(vocab), 30)]
    for history in histories:
        for cut in (1, 2, 5, len(history)):
            p = model.probs(model.start(history[:cut]))
            assert p.shape == (len(vocab),)
            assert math.isclose(p.sum(), 1.0, rel_tol=1e-9)
            assert p.min() > 0


def test_markov_batched_distributions_match_single(vocab: Vocabulary) -> None:
    pieces = _random_pieces(vocab, 10, 40, seed=4)
    model = Markov.fit(pieces, len(vocab), order=4)
    states = model._piece_states(pieces[0])
    batch = model.distributions(states)
    for i in (0, 7, len(states) - 1):
        np.testing.assert_allclose(batch[i], model.probs(states[i]))
    # Advancing token by token reaches the same states as the vectorised walk over a piece.
    state = model.start(pieces[0][:1])
    for i, token in enumerate(pieces[0][1:], start=1):
        state = model.advance(state, int(token))
        np.testing.assert_array_equal(state, states[i])


@pytest.mark.parametrize("order", [1, 2, 8])
def test_markov_prob_of_and_predict_agree_with_distributions(vocab: Vocabulary, order: int) -> None:
    # Scoring avoids [B, V] distributions (V is 33k on real data); it must give the same numbers.
    model = Markov.fit(_random_pieces(vocab, 30, 50, seed=8), len(vocab), order=order)
    rng = np.random.default_rng(9)
    histories = [*_random_pieces(vocab, 4, 30, seed=10), rng.integers(0, len(vocab), 40)]
    states = np.concatenate([model._piece_states(h) for h in histories])
    dense = model.distributions(states)
    tokens = rng.integers(0, len(vocab), len(states))
    tokens[::2] = np.concatenate(histories)[1::2][: len(tokens[::2])]  # plenty of seen continuations
    np.testing.assert_allclose(model.prob_of(states, tokens), dense[np.arange(len(states)), tokens], rtol=1e-12)
    best = model.predict(states)
    # Ties may break differently; the chosen token must reach the maximum.
    np.testing.assert_allclose(dense[np.arange(len(states)), best], dense.max(axis=1), rtol=1e-12)
    assert (best == dense.argmax(axis=1)).mean() > 0.9


def test_unigram_is_add_k_and_sums_to_one(vocab: Vocabulary) -> None:
    pieces = [np.array([BOS, 10, 10, 20, EOS])]
    model = Unigram.fit(pieces, len(vocab), k=1.0)
    assert math.isclose(model.probs().sum(), 1.0)
    # Targets exclude <bos>: counts 10→2, 20→1, <eos>→1 over 4 tokens, plus k=1 for each of V.
    assert math.isclose(model.probs()[10], 3 / (4 + len(vocab)))
    assert math.isclose(model.probs()[BOS], 1 / (4 + len(vocab)))


def test_markov_beats_unigram_on_repetitive_music(vocab: Vocabulary) -> None:
    train, val = _repetitive_pieces(vocab, 8, 50), _repetitive_pieces(vocab, 3, 30)
    uni = Unigram.fit(train, len(vocab)).score(val)
    markov = Markov.fit(train, len(vocab), order=8).score(val)
    assert uni.tokens == markov.tokens == sum(len(p) - 1 for p in val)
    assert markov.nll < 0.3 < 1.5 < uni.nll
    assert markov.accuracy > 0.9 > 0.5 > uni.accuracy
    assert math.isclose(markov.perplexity, math.exp(markov.nll))


def test_higher_order_helps_when_contexts_are_long(vocab: Vocabulary) -> None:
    # Which note follows C4 d1/2 depends on what came two events before: order 2 cannot know.
    a = [((60,), 6), ((64,), 6), ((60,), 6), ((67,), 6)]
    b = [((62,), 6), ((64,), 6), ((60,), 6), ((65,), 6)]
    train = [_piece(vocab, (a if i % 2 else b) * 10) for i in range(10)]
    val = [_piece(vocab, a * 5), _piece(vocab, b * 5)]
    low = Markov.fit(train, len(vocab), order=2).score(val)
    high = Markov.fit(train, len(vocab), order=8).score(val)
    assert high.nll < low.nll - 0.1


def test_contexts_do_not_cross_pieces(vocab: Vocabulary) -> None:
    # Each piece is one event; joined, "<eos> <bos>" would be a context, but the first prediction
    # of a piece must only see <bos>.
    pieces = [_piece(vocab, [((60 + i % 3,), 12)]) for i in range(30)]
    model = Markov.fit(pieces, len(vocab), order=4)
    state = model.start([BOS])
    assert (state[1:] == -1).all()
    p = model.probs(state)
    top = set(np.argsort(p)[-3:].tolist())
    assert top == {vocab.pitch_id([60]), vocab.pitch_id([61]), vocab.pitch_id([62])}


def test_score_ignores_pad(vocab: Vocabulary) -> None:
    pieces = _random_pieces(vocab, 5, 20, seed=5)
    model = Unigram.fit(pieces, len(vocab))
    padded = [np.concatenate([p, [PAD] * 7]) for p in pieces]
    assert model.score(padded) == model.score(pieces)
    markov = Markov.fit(pieces, len(vocab), order=3)
    assert markov.score(padded) == markov.score(pieces)


@pytest.mark.parametrize("kind", ["unigram", "markov"])
def test_generate_follows_grammar_and_is_seeded(vocab: Vocabulary, kind: str) -> None:
    train = _random_pieces(vocab, 10, 40, seed=6)
    model = Unigram.fit(train, len(vocab)) if kind == "unigram" else Markov.fit(train, len(vocab), order=6)
    prime = list(train[0][:9])
    out = model.generate(vocab, prime, 100, np.random.default_rng(7))
    assert out == model.generate(vocab, prime, 100, np.random.default_rng(7))
    assert 0 < len(out) <= 100
    assert EOS not in out[:-1]
    last = prime[-1]
    for token in out:
        assert grammar_mask(vocab, last)[token], (vocab.tokens[last], vocab.tokens[token])
        last = token
    assert PAD not in out and BOS not in out


def test_score_from_sums() -> None:
    s = Score.from_sums(nll_sum=20.0, correct=3, tokens=10)
    assert (s.nll, s.accuracy, s.tokens) == (2.0, 0.3, 10)
    assert math.isclose(s.perplexity, math.exp(2.0))
    assert Score.from_sums(0.0, 0, 0).tokens == 0
