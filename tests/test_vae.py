"""The phrase VAE (model/vae.py, model/vae_export.py): phrase cutting on bar lines, the family in the
one training loop, export parity, loading, and the collapse guard."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from liveduet.errors import ConfigError, LiveduetError, ModelLoadError
from liveduet.model.export import export_run
from liveduet.model.phrases import cut_phrases, duration_table, input_positions, pack_phrases
from liveduet.model.runtime import ModelRuntime
from liveduet.model.train import TrainRequest, train
from liveduet.model.vae import PhraseVAE, VAEConfig, beat_spans
from liveduet.model.vae_eval import reconstruction_metrics
from liveduet.model.vae_export import FORMAT, best_row, check_not_collapsed, check_parity, load_vae, script_vae
from liveduet.music.dataset import write_dataset
from liveduet.music.tokens import BOS, EOS, TICKS, TokenizerSettings, Vocabulary

VOCAB = Vocabulary(TokenizerSettings())
TINY = """
[model]
family = "vae"
embed = 16
enc_hidden = 16
dec_hidden = 24
head_dim = 0
z_dim = 8
beta = 0.2
kl_warmup_steps = 10
val_phrases = 40

[train]
batch = 16
lr = 3e-3
warmup_steps = 0
epochs = 2
patience = 0
"""


def piece(events: list[tuple[tuple[int, ...], int]]) -> np.ndarray:
    return np.array([BOS, *VOCAB.encode(events), EOS], dtype=np.int32)


def tune(k: int, bars: int = 8) -> list[tuple[tuple[int, ...], int]]:
    """A folk-like tune: eighths and quarters over a scale, different per k, `bars` 4/4 bars long."""
    scale = [60, 62, 64, 65, 67, 69, 71, 72]
    out = []
    for bar in range(bars):
        for i, d in enumerate((6, 6, 12, 6, 6, 12)):
            out.append(((scale[(k + bar + 2 * i) % 8],), d))
    return out


def make_data(root: Path, n: int = 40) -> Path:
    pieces = [piece(tune(k)) for k in range(n)]
    split = [1 if k % 5 == 0 else 0 for k in range(n)]
    listing = [{"name": f"t{k}", "transpose": 0, "split": "val" if s else "train"} for k, s in enumerate(split)]
    write_dataset(root, pieces, split, VOCAB, {"sources": ["synthetic"], "pieces": listing})
    return root


def test_phrases_are_cut_on_bar_lines_and_end_on_the_window():
    cfg = VAEConfig(vocab_size=len(VOCAB))
    # Onsets 0, 18, 24, 36, 54, 90, 102; the piece ends at 126 twelfths (10.5 beats).
    events = [((60,), 18), ((62,), 6), ((64,), 12), ((65,), 18), ((67,), 36), ((69,), 12), ((71,), 24)]
    phrases = cut_phrases(piece(events), VOCAB, cfg)
    width = cfg.window_beats * TICKS
    # Bar lines at beats 0 and 4 could start an 8-beat window: beat 4 (48) has no onset, and no later
    # window fits in the piece. The one window holds 60 .. 69, and the 69 is cut at the window's end.
    assert len(phrases) == 1
    p = phrases[0]
    assert [VOCAB.pitches_of(int(t)) for t in p[0::2]] == [(60,), (62,), (64,), (65,), (67,), (69,)]
    durs = [VOCAB.duration_of(int(t)) for t in p[1::2]]
    assert durs == [18, 6, 12, 18, 36, 6] and sum(durs) == width


def test_a_window_needs_an_onset_on_its_bar_line():
    cfg = VAEConfig(vocab_size=len(VOCAB), window_beats=4, hop_beats=4)
    events = [((60,), 12), ((62,), 42), ((64,), 6), ((65,), 36)]  # 62 is held across beat 4
    phrases = cut_phrases(piece(events), VOCAB, cfg)
    assert len(phrases) == 1, "the window on beat 4 has no onset there and is skipped; beat 8 runs out"


@pytest.mark.parametrize("latent", ["phrase", "beats"])
def test_training_through_the_one_loop_then_export_and_load(tmp_path: Path, latent: str):
    data = make_data(tmp_path / "data")
    z_dim = 8 if latent == "phrase" else 16
    extra = f'z_dim = {z_dim}\nposition_embed = 8\nlatent = "{latent}"'
    (tmp_path / "vae.toml").write_text(TINY.replace("z_dim = 8", extra))
    torch.set_num_threads(1)
    summary = train(TrainRequest(data=data, out=tmp_path / "run", config=tmp_path / "vae.toml", quiet=True))
    assert summary["val_key"] == "val_select" and summary["global_step"] > 0
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    row = history[-1]
    assert row["val_select"] == row["val_elbo"], "select = 'elbo' by default"
    for key in ("val_elbo", "val_kl", "val_tf_acc", "val_greedy_acc", "active_units", "train_loss", "kl"):
        assert key in row, key
    assert (tmp_path / "run" / "loss.png").exists()
    card = export_run(tmp_path / "run", tmp_path / "vary")
    assert card["family"] == "vae" and card["export_parity_max_abs"] < 1e-5
    vae = load_vae(tmp_path / "vary")
    mu, logvar = vae.encode(VOCAB.encode(tune(3)[:8]))
    assert mu.shape == logvar.shape == (1, z_dim)
    assert "phrase VAE" in (tmp_path / "vary" / "card.md").read_text()
    # The language model's loader refuses the VAE folder, in one line.
    with pytest.raises(ModelLoadError, match="is a VAE \\(family vae\\), not"):
        ModelRuntime.load(tmp_path / "vary")


def test_a_language_model_folder_is_not_a_vae():
    with pytest.raises(ModelLoadError, match="language model \\(family lm\\), not a VAE"):
        load_vae(Path("models/default"))


def test_a_damaged_vae_file_is_refused(tmp_path: Path):
    vae_dir = tmp_path / "vary"
    vae_dir.mkdir()
    (vae_dir / "card.json").write_text(json.dumps({"family": "vae", "format": FORMAT, "sha256": "0"}))
    (vae_dir / "vae.ts").write_bytes(b"junk")
    with pytest.raises(ModelLoadError, match="checksum"):
        load_vae(vae_dir)


@pytest.mark.parametrize(("position_embed", "latent"), [(0, "phrase"), (8, "phrase"), (8, "beats")])
def test_export_parity_of_the_scripted_step(position_embed: int, latent: str):
    torch.manual_seed(0)
    model = PhraseVAE(VAEConfig(vocab_size=len(VOCAB), embed=16, enc_hidden=16, dec_hidden=24, z_dim=16,
                                position_embed=position_embed, latent=latent)).eval()
    model.set_durations(duration_table(VOCAB))
    tokens = torch.tensor([VOCAB.encode(tune(1)[:12])])
    assert check_parity(model, script_vae(model), tokens, duration_table(VOCAB)) < 1e-5


def test_beat_latents_read_the_encoder_around_their_beat():
    events = [((60,), 6), ((62,), 18), ((), 12), ((64,), 12)]
    tokens = torch.tensor([VOCAB.encode(events)])  # onsets 0 0 6 6 24 24 36 36
    last, first = beat_spans(tokens, torch.tensor([8]), duration_table(VOCAB), 4, TICKS)
    # beat 1 (12–24) has no onset: 62 sounds through it (its duration token, 3) and the rest (4) follows
    assert last.tolist() == [[3, 3, 5, 7]] and first.tolist() == [[0, 4, 4, 6]]


def test_beat_latents_encode_a_padded_batch_as_one_phrase():
    torch.manual_seed(0)
    model = PhraseVAE(VAEConfig(vocab_size=len(VOCAB), embed=16, enc_hidden=16, dec_hidden=24, z_dim=16,
                                position_embed=8, latent="beats")).eval()
    model.set_durations(duration_table(VOCAB))
    short, long = VOCAB.encode(tune(1)[:6]), VOCAB.encode(tune(2)[:12])
    rows = pack_phrases([np.array(short), np.array(long)], 30)
    post = model.encode_packed(torch.from_numpy(rows.tokens.astype(np.int64)), torch.from_numpy(rows.lengths))
    for k, toks in enumerate((short, long)):
        mu, _ = model.encode_one(torch.tensor([toks]))
        assert torch.allclose(post.mu[k], mu[0], atol=1e-6)
    assert post.mu.shape == (2, 16)


def test_beat_latents_need_a_z_per_beat():
    with pytest.raises(ConfigError, match="latent"):
        VAEConfig(vocab_size=len(VOCAB), z_dim=12, position_embed=8, latent="beats").validate()


def test_decoder_positions_count_the_twelfths_read():
    events = [((60,), 6), ((62,), 18), ((), 12)]
    dec_in = torch.tensor([[BOS, *VOCAB.encode(events)]])
    # <bos> 0; after 60: still 0; after its 6: 6; after 62: 6; after 18: 24; rest: 24; after 12: 36 → clamped
    assert input_positions(dec_in, duration_table(VOCAB), 30).tolist() == [[0, 0, 6, 6, 24, 24, 30]]


def test_a_collapsed_vae_fails():
    """KL ≈ 0: z carries nothing about the phrase, every call would get the same answer."""
    torch.manual_seed(0)
    cfg = VAEConfig(vocab_size=len(VOCAB), embed=16, enc_hidden=16, dec_hidden=24, z_dim=8)
    model = PhraseVAE(cfg).eval()
    phrases = pack_phrases([np.array(VOCAB.encode(tune(k)[:12])) for k in range(10)], cfg.max_tokens)
    masks = torch.from_numpy(VOCAB.pitch_mask), torch.from_numpy(VOCAB.duration_mask)
    with torch.no_grad():  # an encoder whose μ moves with the phrase
        model.to_posterior.weight.mul_(30)
    healthy = reconstruction_metrics(model, phrases, *masks, cfg.active_threshold, torch.device("cpu"),
                                     duration_table(VOCAB))
    check_not_collapsed(healthy)
    with torch.no_grad():  # collapse: the posterior is N(0, I) whatever the phrase
        model.to_posterior.weight.zero_()
        model.to_posterior.bias.zero_()
    collapsed = reconstruction_metrics(model, phrases, *masks, cfg.active_threshold, torch.device("cpu"),
                                       duration_table(VOCAB))
    assert collapsed["val_kl"] == pytest.approx(0.0, abs=1e-6) and collapsed["active_units"] == 0
    with pytest.raises(LiveduetError, match="posterior collapsed"):
        check_not_collapsed(collapsed)


def test_select_names_the_figure_that_picks_the_checkpoint(tmp_path: Path):
    with pytest.raises(ConfigError, match="select"):
        VAEConfig(vocab_size=len(VOCAB), select="loss").validate()
    data = make_data(tmp_path / "data", n=20)
    (tmp_path / "vae.toml").write_text(TINY.replace("val_phrases = 40", 'val_phrases = 20\nselect = "greedy"')
                                       .replace("epochs = 2", "epochs = 1"))
    torch.set_num_threads(1)
    train(TrainRequest(data=data, out=tmp_path / "run", config=tmp_path / "vae.toml", quiet=True))
    row = json.loads((tmp_path / "run" / "history.json").read_text())[-1]
    assert row["val_select"] == pytest.approx(1 - row["val_greedy_acc"], abs=1e-4)
    assert row["val_select"] != row["val_elbo"]


def test_the_card_reports_the_exported_checkpoints_evaluation():
    history = [{"step": 10, "val_elbo": 2.0, "val_kl": 5.0}, {"step": 20, "val_elbo": 2.5, "val_kl": 9.0}]
    assert best_row(history, 20)["val_kl"] == 9.0, "the checkpoint's own row, not the best ELBO's"
    assert best_row(history)["step"] == 10
