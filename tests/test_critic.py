"""The critic (model/critic.py): ROC-AUC, examples from validation pieces only, a short training
that learns an easy difference, export beside a model and a checked load; the shipped critic fits
the shipped model; the CLI refuses an unfit critic in one line (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from liveduet import cli
from liveduet.errors import ModelLoadError
from liveduet.model.critic import CRITIC_FILE, Critic, CriticConfig, CriticNet, export_critic, roc_auc, train_critic
from liveduet.model.runtime import ModelRuntime
from liveduet.music.tokens import PAD

REPO = Path(__file__).resolve().parents[1]


def test_roc_auc() -> None:
    labels = np.array([1, 1, 0, 0], dtype=np.float32)
    assert roc_auc(np.array([0.9, 0.8, 0.1, 0.2]), labels) == 1.0
    assert roc_auc(np.array([0.1, 0.2, 0.9, 0.8]), labels) == 0.0
    assert roc_auc(np.array([0.5, 0.5, 0.5, 0.5]), labels) == 0.5
    assert roc_auc(np.array([0.9, 0.3, 0.5, 0.1]), labels) == 0.75


def test_training_learns_an_easy_difference_and_exports(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    cfg = CriticConfig(context_tokens=4, stretch_events=2, embed=8, hidden=8, epochs=8, batch=32, lr=1e-2)
    rng = np.random.default_rng(0)
    n = 400
    tokens = rng.integers(3, 20, size=(n, cfg.length))
    label = (np.arange(n) % 2).astype(np.float32)
    tokens[label == 1, cfg.context_tokens:] = 7  # "real" stretches are all token 7
    held = np.arange(n) >= 300
    net, figures = train_critic({"tokens": tokens, "label": label, "held_out": held}, 30, cfg)
    assert figures["held_out_auc"] > 0.95

    class V:  # a vocabulary stand-in: only its fingerprint and size are read
        def fingerprint(self) -> str:
            return "0123456789abcdef"

        def __len__(self) -> int:
            return 30

    card = export_critic(net, cfg, V(), tmp_path, figures)  # type: ignore[arg-type]
    assert card["vocab_fingerprint"] == "0123456789abcdef"
    critic = Critic.load(tmp_path, V())  # type: ignore[arg-type]
    x = torch.from_numpy(tokens[:8]).long()
    torch.testing.assert_close(critic.score(x), net(x).detach())
    (tmp_path / CRITIC_FILE).write_bytes(b"damaged")
    with pytest.raises(ModelLoadError, match="checksum"):
        Critic.load(tmp_path, V())  # type: ignore[arg-type]


def test_shipped_critic_fits_the_shipped_model() -> None:
    folder = REPO / "models" / "default"
    if not (folder / "critic.json").exists():
        pytest.skip("no critic shipped yet")
    runtime = ModelRuntime.load(folder)
    critic = Critic.load(folder, runtime.vocab)
    card = json.loads((folder / "critic.json").read_text())
    assert card["held_out_auc"] > 0.5
    scores = critic.score(torch.full((3, critic.cfg.length), PAD, dtype=torch.long))
    assert scores.shape == (3,)


def test_run_refuses_a_critic_made_for_another_vocabulary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(REPO / "models" / "default", model)
    cfg = CriticConfig(embed=4, hidden=4)
    (model / "critic.json").unlink(missing_ok=True)

    class V:
        def fingerprint(self) -> str:
            return "ffffffffffffffff"

        def __len__(self) -> int:
            return 2188

    export_critic(CriticNet(2188, cfg), cfg, V(), model, {})  # type: ignore[arg-type]
    live = tmp_path / "live.toml"
    live.write_text("[answer]\ncandidates = 4\n")
    rc = cli.main(["run", "--in", str(REPO / "examples" / "call-and-response.mid"), "--model", str(model),
                   "--config", str(live), "--no-dashboard"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "vocabulary" in err[0], err
