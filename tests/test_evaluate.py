"""liveduet evaluate: scoring arithmetic on a fake runtime, then end to end on a tiny trained model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from liveduet.model.evaluate import EvalOptions, score_model, select_pieces
from liveduet.music.tokens import BOS, EOS, PAD


class CountingRuntime:
    """Predicts token (tokens seen so far) % V with probability 1/2, the rest uniform, so the score
    is only right if the state is carried across windows and each piece starts afresh."""

    def __init__(self, vocab_size: int) -> None:
        self.V = vocab_size

    def forward(self, tokens: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = tokens.shape
        seen = torch.zeros(B, dtype=torch.long) if state is None else state
        pos = seen[:, None] + torch.arange(T)[None, :] + 1  # [B, T]: tokens seen after each input
        probs = torch.full((B, T, self.V), 0.5 / (self.V - 1))
        probs.scatter_(-1, (pos % self.V).unsqueeze(-1), 0.5)
        return probs.log(), seen + T


def _expected(pieces: list[np.ndarray], V: int) -> tuple[float, int, int]:
    nll, correct, n = 0.0, 0, 0
    for piece in pieces:
        for i, target in enumerate(piece[1:], start=1):
            if target == PAD:
                continue
            hit = target == i % V
            nll -= math.log(0.5 if hit else 0.5 / (V - 1))
            correct += int(hit)
            n += 1
    return nll, correct, n


@pytest.mark.parametrize("batch,window", [(1, 1000), (3, 4), (16, 1)])
def test_score_model_carries_state_and_ignores_pad(batch: int, window: int) -> None:
    V = 7
    rng = np.random.default_rng(0)
    pieces = [np.array([BOS, *rng.integers(3, V, n), EOS]) for n in (3, 11, 0, 25, 6)]
    pieces[1][5] = 5 % V  # a few hits
    pieces[3][8:13] = np.arange(8, 13) % V  # (position 7 would be 0, <pad>)
    pieces.append(np.array([BOS, 4, 5, PAD, PAD]))
    nll, correct, n = _expected(pieces, V)
    score = score_model(CountingRuntime(V), pieces, batch=batch, window=window)
    assert score.tokens == n == sum(len(p) - 1 for p in pieces) - 2
    assert score.nll == pytest.approx(nll / n)
    assert score.accuracy == pytest.approx(correct / n)
    assert correct >= 7


def test_select_pieces_caps_tokens_and_is_fixed() -> None:
    pieces = [np.arange(n) for n in (50, 30, 80, 1, 40)]
    chosen = select_pieces(pieces, 100)
    assert sum(len(p) - 1 for p in chosen) == 100
    assert [len(p) for p in chosen] == [len(p) for p in select_pieces(pieces, 100)]
    assert sum(len(p) - 1 for p in select_pieces(pieces, 10**6)) == 49 + 29 + 79 + 39


@pytest.mark.parametrize("field,value", [("prime", 32), ("max_tokens", 0), ("order", 0), ("temperature", 0.0)])
def test_options_refuse_bad_values(field: str, value: float) -> None:
    from liveduet.errors import LiveduetError

    with pytest.raises(LiveduetError, match=field.replace("_", "-")):
        EvalOptions(**{field: value}).validate()
