"""C-RNN-GAN: note features round trip, G/D shapes, the family through the one training loop
(train → resume → export → load → generate MIDI), and the one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train_export import write_pieces

from liveduet import cli
from liveduet.errors import ModelLoadError
from liveduet.model.crnngan import (
    NF,
    Discriminator,
    GANConfig,
    Generator,
    event_notes,
    features_to_events,
    normalise,
    piece_features,
    stat_gap,
)
from liveduet.music.tokens import BOS, EOS, TokenizerSettings, Vocabulary

SETTINGS = TokenizerSettings()
SMALL = """
[model]
family = "crnngan"
seq_len = 8
noise = 4
hidden = 16
layers = 1
d_hidden = 8
d_layers = 1
eval_samples = 16

[train]
batch = 8
lr = 1e-3
warmup_steps = 0
lr_schedule = "constant"
optimizer = "adam"
epochs = 2
patience = 0
"""


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_features_round_trip_monophonic_with_rests() -> None:
    events = [((60,), 6), ((62,), 6), ((), 12), ((64,), 3), ((65,), 9), ((67,), 24)]
    feats = normalise(event_notes(events))
    assert feats.shape == (5, NF)
    assert features_to_events(feats, SETTINGS) == events


def test_piece_features_matches_the_event_reader() -> None:
    vocab = Vocabulary(SETTINGS, [(48, 52, 55)])
    events = [((48, 52, 55), 12), ((60,), 6), ((), 6), ((62,), 3)]
    tokens = np.array([BOS, *vocab.encode(events), EOS])
    raw = event_notes(events)
    assert raw[0, 0] == 55  # a chord's note is its top note
    np.testing.assert_allclose(piece_features(vocab, tokens), normalise(raw))


def test_generated_values_round_to_grid_and_piano_range() -> None:
    feats = np.array([[9.0, 0.1, -1.0, 0.3], [-9.0, 5.0, 0.37, 0.0], [0.5, -6.0, -9.0, 0.0]], dtype=np.float32)
    events = features_to_events(feats, SETTINGS)
    pitches = [p for ps, _ in events for p in ps]
    assert min(pitches) >= 21 and max(pitches) <= 108
    assert all(1 <= d <= SETTINGS.max_duration for _, d in events)


def test_generator_and_discriminator_shapes_and_primer() -> None:
    cfg = GANConfig(seq_len=6, noise=3, hidden=8, layers=1, d_hidden=4, d_layers=1)
    gen, disc = Generator(cfg), Discriminator(cfg)
    z = torch.randn(2, 6, 3)
    out = gen(z)
    assert out.shape == (2, 6, NF)
    logits, feats = disc(out)
    assert logits.shape == (2, 6) and feats.shape == (2, 6, 8)
    primed = gen(z, primer=torch.zeros(2, 3, NF))
    assert primed.shape == (2, 6, NF) and not torch.allclose(primed, out)
    g1 = gen.sample(1, 5, torch.Generator().manual_seed(3))
    g2 = gen.sample(1, 5, torch.Generator().manual_seed(3))
    assert torch.equal(g1, g2)


def test_stat_gap_is_zero_for_identical_sets() -> None:
    x = np.random.default_rng(0).normal(size=(4, 8, NF)).astype(np.float32)
    assert stat_gap(x, x) == pytest.approx(0.0)
    assert stat_gap(x + 1, x) > 1


@pytest.fixture(scope="module")
def gan_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gan")
    write_pieces(root / "midi")
    out = root / "data"
    assert cli.main(["prepare", str(root / "midi"), "--out", str(out), "--val-percent", "25", "--jobs", "1",
                     "--quiet"]) == 0
    return out


def test_train_resume_export_generate(gan_data: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "gan.toml"
    cfg.write_text(SMALL)
    run = tmp_path / "run"
    assert cli.main(["train", "--data", str(gan_data), "--out", str(run), "--config", str(cfg), "--quiet",
                     "--epochs", "1"]) == 0
    assert cli.main(["train", "--data", str(gan_data), "--out", str(run), "--resume", "--quiet",
                     "--epochs", "2"]) == 0
    history = json.loads((run / "history.json").read_text())
    assert {"g_loss", "d_loss", "val_stat_gap", "spread_ratio"} <= set(history[-1])
    assert (run / "loss.png").exists()
    # A straight two-epoch run equals the resumed one (checkpoint/resume bit-exact).
    run2 = tmp_path / "run2"
    assert cli.main(["train", "--data", str(gan_data), "--out", str(run2), "--config", str(cfg), "--quiet",
                     "--epochs", "2"]) == 0
    h2 = json.loads((run2 / "history.json").read_text())
    assert [r["val_stat_gap"] for r in h2] == [r["val_stat_gap"] for r in history]

    model = tmp_path / "models" / "gan"
    assert cli.main(["export", str(run), "--out", str(model)]) == 0
    card = json.loads((model / "card.json").read_text())
    assert card["family"] == "crnngan" and (model / "card.md").exists()
    mid = tmp_path / "gan.mid"
    assert cli.main(["generate", "--model", str(model), "--tokens", "40", "--temperature", "1", "--seed", "1",
                     "--out", str(mid)]) == 0
    from liveduet.music.midifile import read_midi

    notes = read_midi(mid).notes
    assert notes and all(21 <= p <= 108 for _, _, p in notes)
    first = mid.read_bytes()
    mid.unlink()
    assert cli.main(["generate", "--model", str(model), "--tokens", "40", "--temperature", "1", "--seed", "1",
                     "--out", str(mid)]) == 0
    assert mid.read_bytes() == first  # same seed, same file

    # The GAN folder where a step model is needed: one line, exit 2.
    from liveduet.model.runtime import ModelRuntime

    with pytest.raises(ModelLoadError, match="C-RNN-GAN"):
        ModelRuntime.load(model)
    from liveduet.model.crnngan_io import load_gan

    with pytest.raises(ModelLoadError, match="not a C-RNN-GAN"):
        load_gan(Path(__file__).resolve().parents[1] / "models" / "default")
