"""The one training loop trains any family: a toy two-module, two-optimiser family (as a GAN has)
runs through `liveduet train`, resumes bit for bit, plots its own curves; family names and
folders of the wrong family are one-line errors."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from test_train_export import write_pieces

from liveduet import cli
from liveduet.errors import ConfigError, ModelLoadError
from liveduet.model import family as fam
from liveduet.model.family import Family, family_class, load_family_config, make_optimizer
from liveduet.model.runtime import ModelRuntime


@dataclass
class Toy:
    width: int = 8
    vocab_size: int = 0

    def validate(self) -> None:
        if self.width < 1:
            raise ConfigError(f"[model] width = {self.width}: must be >= 1")


class ToyFamily(Family):
    """Two modules, two optimisers: 'model' predicts a token's id mod 4, 'aux' its parity."""

    name: ClassVar[str] = "toy"
    config_cls: ClassVar[type] = Toy
    val_key: ClassVar[str] = "val_toy"
    plot_keys: ClassVar[tuple[str, ...]] = ("a_loss", "b_loss")

    def __init__(self, cfg, tcfg, data, seed, device, dd) -> None:
        super().__init__(cfg, tcfg, data, seed, device, dd)
        self.stream = torch.from_numpy(data.stream("train").astype(np.int64))
        self.modules = {"model": torch.nn.Sequential(torch.nn.Embedding(cfg.vocab_size, cfg.width),
                                                     torch.nn.Dropout(0.3), torch.nn.Linear(cfg.width, 4)),
                        "aux": torch.nn.Sequential(torch.nn.Embedding(cfg.vocab_size, cfg.width),
                                                   torch.nn.Linear(cfg.width, 2))}

    def optimizers(self):
        return {"model": make_optimizer(self.modules["model"], self.tcfg),
                "aux": torch.optim.SGD(self.modules["aux"].parameters(), lr=self.tcfg.lr)}

    def steps_per_epoch(self) -> int:
        return 6

    def batch(self, epoch: int, step: int):
        g = torch.Generator().manual_seed(self.seed * 1000 + epoch * 10 + step)
        return self.stream[torch.randint(len(self.stream), (16,), generator=g)]

    def units(self, batch) -> int:
        return len(batch)

    def train_step(self, batch, opts):
        a = torch.nn.functional.cross_entropy(self.modules["model"](batch), batch % 4)
        b = torch.nn.functional.cross_entropy(self.modules["aux"](batch) + torch.randn(len(batch), 2), batch % 2)
        for o in opts.values():
            o.zero_grad()
        (a + b).backward()
        for o in opts.values():
            o.step()
        return {"loss": float((a + b).detach()), "a_loss": float(a.detach()), "b_loss": float(b.detach())}

    def evaluate(self):
        x = torch.from_numpy(self.data.stream("val").astype(np.int64))
        return {"val_toy": float(torch.nn.functional.cross_entropy(self.modules["model"](x), x % 4)), "other": 1.0}


@pytest.fixture()
def toy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setitem(fam.FAMILIES, "toy", f"{__name__}:ToyFamily")
    cfg = tmp_path / "toy.toml"
    cfg.write_text('[model]\nfamily = "toy"\nwidth = 6\n[train]\nepochs = 3\nlr = 0.01\nwarmup_steps = 0\n'
                   'lr_schedule = "constant"\npatience = 0\n')
    return cfg


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fam")
    write_pieces(root / "midi", 6)
    assert cli.main(["prepare", str(root / "midi"), "--out", str(root / "d"), "--val-percent", "25", "--jobs", "1",
                     "--quiet"]) == 0
    return root / "d"


def _train(data: Path, out: Path, *extra: str) -> int:
    return cli.main(["train", "--data", str(data), "--out", str(out), "--quiet", *extra])


def test_any_family_trains_and_resumes_bit_for_bit(toy: Path, data: Path, tmp_path: Path) -> None:
    assert _train(data, tmp_path / "full", "--config", str(toy)) == 0
    assert _train(data, tmp_path / "half", "--config", str(toy), "--epochs", "1") == 0
    assert _train(data, tmp_path / "half", "--resume", "--epochs", "3") == 0
    full = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    half = torch.load(tmp_path / "half" / "last.pt", weights_only=True)
    assert full["family"] == "toy" and set(full["modules"]) == {"aux"} and set(full["optimizers"]) == {"aux"}
    for key in ("model",):
        for name, t in full[key].items():
            assert torch.equal(t, half[key][name]), name
    for name, t in full["modules"]["aux"].items():
        assert torch.equal(t, half["modules"]["aux"][name]), name
    history = json.loads((tmp_path / "full" / "history.json").read_text())
    assert [round(h["epoch"]) for h in history] == [1, 2, 3]
    assert {"train_loss", "a_loss", "b_loss", "val_toy", "other"} <= set(history[0])
    assert (tmp_path / "full" / "best.pt").exists()
    run = json.loads((tmp_path / "full" / "run.json").read_text())
    assert run["family"] == "toy" and run["summary"]["val_key"] == "val_toy"


def test_family_names_and_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\nfamily = "vea"\n')
    with pytest.raises(ConfigError, match="family = 'vea': must be one of lm, vae, crnngan"):
        load_family_config(bad)
    assert family_class("lm").name == "lm"
    lm = tmp_path / "lm.toml"
    lm.write_text('[model]\nfamily = "lm"\nhidden = 32\n')
    name, mcfg, _ = load_family_config(lm)
    assert name == "lm" and mcfg.hidden == 32


def test_train_cli_unknown_family_is_one_line(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "x.toml"
    cfg.write_text('[model]\nfamily = "gan"\n')
    assert _train(data, tmp_path / "r", "--config", str(cfg)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "family = 'gan'" in err


def test_runtime_refuses_another_family(tmp_path: Path) -> None:
    folder = tmp_path / "vary"
    folder.mkdir()
    (folder / "card.json").write_text(json.dumps({"family": "vae", "format": "torchscript"}))
    with pytest.raises(ModelLoadError, match=r"vary is a VAE \(family vae\), not a step model"):
        ModelRuntime.load(folder)
