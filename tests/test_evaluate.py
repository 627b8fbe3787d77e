"""liveduet evaluate: scoring arithmetic on a fake runtime, then end to end on a tiny trained model."""

from __future__ import annotations

import json
import math
from pathlib import Path

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
        self.vocab = range(vocab_size)  # only its length is used

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


@pytest.mark.parametrize("batch,window", [(1, 1000), (3, 4), (16, 1), (2, None)])
def test_score_model_carries_state_and_ignores_pad(batch: int, window: int | None) -> None:
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


@pytest.mark.parametrize(
    "field,value", [("prime", 32), ("max_tokens", 0), ("order", 0), ("temperature", 0.0), ("threads", 0)]
)
def test_options_refuse_bad_values(field: str, value: float) -> None:
    from liveduet.errors import LiveduetError

    with pytest.raises(LiveduetError, match=field.replace("_", "-")):
        EvalOptions(**{field: value}).validate()


# -- end to end ----------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def _write_midi_corpus(folder: Path, n: int, seed: int, chords: list[tuple[int, ...]]) -> None:
    """`n` short pieces: a walking melody in C major over held chords, so a model has something to learn."""
    from liveduet.music.midifile import notes_to_midi, save_atomic

    rng = np.random.default_rng(seed)
    scale = [60, 62, 64, 65, 67, 69, 71, 72]
    for k in range(n):
        notes, beat, step = [], 0.0, int(rng.integers(len(scale)))
        for bar in range(12):
            for p in chords[(bar + k) % len(chords)]:
                notes.append((beat, beat + 2.0, p - 12, 70))
            for _ in range(4):
                step = int(np.clip(step + rng.choice([-1, 1, 2]), 0, len(scale) - 1))
                length = float(rng.choice([0.5, 0.5, 1.0]))
                notes.append((beat, beat + length, scale[step], 80))
                beat += length
        save_atomic(notes_to_midi(notes), folder / f"piece{k:02d}.mid")


def _cli(*argv: str) -> int:
    from liveduet.cli import main

    return main(list(argv))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A prepared dataset, a tiny model trained on it for a few seconds, and its export."""
    root = tmp_path_factory.mktemp("evaluate")
    _write_midi_corpus(root / "midi", 16, seed=1, chords=[(60, 64, 67), (57, 60, 64), (65, 69, 72), (55, 59, 62)])
    data = root / "data"
    assert _cli("prepare", str(root / "midi"), "--out", str(data), "--val-percent", "30", "--min-count", "1",
                "--jobs", "1", "--quiet") == 0
    run = root / "run"
    assert _cli("train", "--data", str(data), "--config", str(REPO / "configs" / "tiny.toml"), "--out", str(run),
                "--epochs", "2", "--max-minutes", "0.2", "--quiet") == 0
    model = root / "model"
    assert _cli("export", str(run), "--out", str(model)) == 0
    return {"root": root, "data": data, "run": run, "model": model}


def test_evaluate_json_end_to_end(tiny_model: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    args = ["evaluate", "--model", str(tiny_model["model"]), "--data", str(tiny_model["data"]), "--json",
            "--samples", "4", "--length", "40", "--prime", "9", "--order", "4", "--seed", "3", "--quiet"]
    capsys.readouterr()
    assert _cli(*args) == 0
    report = json.loads(capsys.readouterr().out)
    for name in ("model", "unigram", "markov"):
        row = report[name]
        assert row["tokens"] == report["val"]["tokens"] > 0
        assert 0 < row["nll"] < 10 and math.isclose(row["perplexity"], math.exp(row["nll"]))
        assert 0 <= row["accuracy"] <= 1
    # On strictly patterned music even a few seconds of training and a Markov model beat frequencies.
    assert report["markov"]["nll"] < report["unigram"]["nll"]
    assert set(report["metrics"]) == {"data", "model", "markov"}
    for column in report["metrics"].values():
        assert column["sequences"] == 4
        assert 0 < column["events"] <= 20  # 40 tokens at most: 20 events
        assert 0 <= column["pitch_class_entropy"] <= math.log2(12)
        assert 0 < column["in_scale_ratio"] <= 1
        assert math.isclose(sum(column["duration_histogram"].values()), 1.0)
    # The real continuations are all C major.
    assert report["metrics"]["data"]["in_scale_ratio"] == 1.0
    # Same seed, same report (timings aside).
    assert _cli(*args) == 0
    again = json.loads(capsys.readouterr().out)
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in report.items() if k != "seconds"}


def test_evaluate_table(tiny_model: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert _cli("evaluate", "--model", str(tiny_model["model"]), "--data", str(tiny_model["data"]),
                "--samples", "2", "--length", "20", "--prime", "9", "--quiet") == 0
    out = capsys.readouterr().out
    for text in ("Next-token prediction", "unigram", "Markov", "pitch-class entropy", "in-scale ratio"):
        assert text in out


def test_evaluate_refuses_another_vocabulary(tiny_model: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    root = tiny_model["root"]
    # Other chords → another chord list → another vocabulary.
    _write_midi_corpus(root / "other_midi", 6, seed=2, chords=[(62, 66, 69), (64, 68, 71)])
    other = root / "other_data"
    assert _cli("prepare", str(root / "other_midi"), "--out", str(other), "--val-percent", "30",
                "--min-count", "1", "--jobs", "1", "--quiet") == 0
    capsys.readouterr()
    code = _cli("evaluate", "--model", str(tiny_model["model"]), "--data", str(other), "--json", "--quiet")
    captured = capsys.readouterr()
    assert code != 0
    assert captured.out == ""
    assert "vocabulary mismatch" in captured.err and "--vocab" in captured.err
    assert len(captured.err.strip().splitlines()) == 1
