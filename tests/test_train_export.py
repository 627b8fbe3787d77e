"""End to end on a tiny dataset: prepare → train → export → runtime → generate, in seconds.

Also: exact resumption (after a finished epoch and after Ctrl-C mid-epoch), refusal of damaged
checkpoints and model folders, and DistributedDataParallel with two gloo CPU processes.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from liveduet import cli
from liveduet.errors import ConfigError, ModelLoadError
from liveduet.model.export import export_run
from liveduet.model.runtime import ModelRuntime, default_model_dir
from liveduet.model.train import TrainRequest, load_checkpoint, model_from_checkpoint, train
from liveduet.music.midifile import notes_to_midi, read_midi, save_atomic
from liveduet.music.tokens import BOS

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.toml"
C_MAJOR = [60, 62, 64, 65, 67, 69, 71, 72]


@pytest.fixture(autouse=True)
def _one_thread():
    # Two cores shared with other test processes: oneDNN's spinning threads would fight.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
    torch.backends.mkldnn.enabled = True


def write_pieces(folder: Path, count: int = 8) -> None:
    """Small scale-wise melodies with a few chords and rests, in C major (piece03 is validation)."""
    rng = random.Random(7)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        notes, beat, idx = [], 0.0, rng.randrange(len(C_MAJOR))
        for _ in range(40):
            dur = rng.choice([0.5, 0.5, 1.0, 1.0, 2.0, 0.25])
            idx = max(0, min(len(C_MAJOR) - 1, idx + rng.choice([-2, -1, 1, 1, 2])))
            pitches = [C_MAJOR[idx]]
            if rng.random() < 0.2:
                pitches += [C_MAJOR[idx] - 12, C_MAJOR[idx] - 8]
            notes += [(beat, beat + dur, p, 80) for p in pitches]
            beat += dur + (0.5 if rng.random() < 0.05 else 0.0)
        save_atomic(notes_to_midi(notes, bpm=100), folder / f"piece{i:02d}.mid")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    write_pieces(root / "midi")
    out = root / "data"
    rc = cli.main(["prepare", str(root / "midi"), "--out", str(out), "--transpose", "-1..1",
                   "--val-percent", "25", "--jobs", "1", "--quiet"])
    assert rc == 0
    return out


def run_train(data: Path, out: Path, *extra: str) -> int:
    return cli.main(["train", "--data", str(data), "--out", str(out), "--quiet", *extra])


@pytest.fixture(scope="module")
def tiny_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "r"
    assert run_train(tiny_data, out, "--config", str(TINY), "--seed", "3") == 0
    return out


@pytest.fixture(scope="module")
def tiny_model(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models") / "tiny"
    assert cli.main(["export", str(tiny_run), "--out", str(out)]) == 0
    return out


def weights(run: Path, name: str = "last.pt") -> dict[str, torch.Tensor]:
    return load_checkpoint(run / name)["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# -- training ------------------------------------------------------------------------------------

def test_train_writes_run_folder(tiny_run: Path) -> None:
    for name in ("run.json", "vocab.json", "last.pt", "best.pt", "history.json", "loss.png"):
        assert (tiny_run / name).is_file(), name
    history = json.loads((tiny_run / "history.json").read_text())
    assert [round(h["epoch"]) for h in history] == [1, 2]
    assert all(h["val_nll"] > 0 and h["tokens_per_s"] > 0 for h in history)
    # It learned something: the loss fell well below a uniform guess over the vocabulary.
    vocab_size = json.loads((tiny_run / "run.json").read_text())["config"]["model"]["vocab_size"]
    assert history[-1]["val_nll"] < 0.8 * torch.log(torch.tensor(float(vocab_size)))
    ckpt = load_checkpoint(tiny_run / "last.pt")
    assert (ckpt["epoch"], ckpt["step"]) == (2, 0)


def test_same_seed_same_weights(tiny_data: Path, tiny_run: Path, tmp_path: Path) -> None:
    assert run_train(tiny_data, tmp_path / "again", "--config", str(TINY), "--seed", "3") == 0
    assert_same_weights(weights(tiny_run), weights(tmp_path / "again"))
    assert run_train(tiny_data, tmp_path / "other", "--config", str(TINY), "--seed", "4") == 0
    assert not torch.equal(weights(tiny_run)["embed.weight"], weights(tmp_path / "other")["embed.weight"])


def test_resume_after_an_epoch_is_exact(tiny_data: Path, tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    assert run_train(tiny_data, out, "--config", str(TINY), "--seed", "3", "--epochs", "1") == 0
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    assert run_train(tiny_data, out, "--resume", "--epochs", "2") == 0
    assert_same_weights(weights(tiny_run), weights(out))
    assert len(json.loads((out / "history.json").read_text())) == 2


def test_ctrl_c_mid_epoch_checkpoints_and_resume_is_exact(tiny_data: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY.read_text().replace("patience = 0", "patience = 0\neval_every = 10"))
    full = tmp_path / "full"
    train(TrainRequest(tiny_data, full, cfg, seed=5, quiet=True))
    evals = []

    def press_ctrl_c(row: dict) -> None:
        evals.append(row)
        if len(evals) == 1:  # mid-epoch, after step 10
            os.kill(os.getpid(), signal.SIGINT)

    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train(TrainRequest(tiny_data, cut, cfg, seed=5, quiet=True), on_eval=press_ctrl_c)
    ckpt = load_checkpoint(cut / "last.pt")
    assert (ckpt["epoch"], ckpt["step"]) == (0, 11)  # saved at the boundary after the step in progress
    train(TrainRequest(tiny_data, cut, None, seed=5, resume=True, quiet=True))
    assert_same_weights(weights(full), weights(cut))


def test_new_run_refuses_existing_folder_and_resume_refuses_other_config(tiny_data: Path, tiny_run: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    assert run_train(tiny_data, tiny_run, "--config", str(TINY)) == 2
    assert "--resume" in capsys.readouterr().err
    assert run_train(tiny_data, tiny_run, "--resume", "--config", str(REPO / "configs" / "gru.toml")) == 2
    assert "differs from the config" in capsys.readouterr().err


def test_bf16_autocast_training_keeps_fp32_weights(tiny_data: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "bf16.toml"
    cfg.write_text(TINY.read_text().replace("patience = 0", "patience = 0\nprecision = \"bf16\""))
    from liveduet.model.train import cpu_has_bf16

    if not cpu_has_bf16():  # the same request must fail in one line, not in oneDNN
        with pytest.raises(ConfigError, match="AVX512-BF16 or AMX"):
            train(TrainRequest(tiny_data, tmp_path / "r", cfg, epochs=1, quiet=True))
        return
    summary = train(TrainRequest(tiny_data, tmp_path / "r", cfg, epochs=1, quiet=True))
    assert math.isfinite(summary["best_val_nll"])
    assert json.loads((tmp_path / "r" / "run.json").read_text())["precision"] == "bf16 autocast"
    assert all(w.dtype == torch.float32 for w in weights(tmp_path / "r").values())


def test_bad_config_is_one_line_error(tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[train]\nbatch = 0\n")
    assert run_train(tiny_data, tmp_path / "r", "--config", str(cfg)) == 2
    err = capsys.readouterr().err.strip()
    assert err == "liveduet train: error: [train] batch = 0: must be 1..100000"


# -- damaged checkpoints ---------------------------------------------------------------------------

class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "pickle", "foreign"])
def test_damaged_checkpoint_is_refused(tiny_data: Path, tiny_run: Path, tmp_path: Path, damage: str,
                                       capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "r"
    shutil.copytree(tiny_run, run)
    path = run / "last.pt"
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(2000))
    elif damage == "pickle":
        torch.save({"format": "liveduet-checkpoint/1", "x": _Payload()}, path)
    else:
        torch.save({"weights": torch.zeros(3)}, path)
    monkeypatch.chdir(tmp_path)
    assert run_train(tiny_data, run, "--resume") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "last.pt" in err
    assert ("damaged" in err) or ("not a liveduet checkpoint" in err)
    assert not (tmp_path / "PWNED").exists()
    with pytest.raises(ModelLoadError):
        load_checkpoint(path)


def test_checkpoint_with_wrong_shapes_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    ckpt = load_checkpoint(tiny_run / "best.pt")
    ckpt["model"]["embed.weight"] = torch.zeros(3, 3)
    torch.save(ckpt, tmp_path / "best.pt")
    with pytest.raises(ModelLoadError, match="do not fit"):
        model_from_checkpoint(load_checkpoint(tmp_path / "best.pt"), tmp_path / "best.pt")


# -- export and runtime ------------------------------------------------------------------------------

def test_export_writes_a_described_folder(tiny_model: Path, tiny_run: Path) -> None:
    for name in ("model.ts", "vocab.json", "config.json", "card.json", "card.md", "loss.png"):
        assert (tiny_model / name).is_file(), name
    card = json.loads((tiny_model / "card.json").read_text())
    assert card["format"] == "torchscript" and card["arch"] == "lstm"
    assert card["val_nll"] == pytest.approx(load_checkpoint(tiny_run / "best.pt")["val_nll"], abs=1e-5)
    assert card["params"] > 0 and card["export_parity_max_abs"] <= 1e-5
    assert any(c.startswith("liveduet train") for c in card["reproduce"])
    assert "validation NLL" in (tiny_model / "card.md").read_text()


def test_runtime_step_matches_eager_forward(tiny_model: Path, tiny_run: Path, tiny_data: Path) -> None:
    rt = ModelRuntime.load(tiny_model)
    assert not torch.backends.mkldnn.enabled and torch.get_num_threads() == 1
    model = model_from_checkpoint(load_checkpoint(tiny_run / "best.pt")).eval()
    tokens = torch.from_numpy(np.load(tiny_data / "tokens.npy")[:80]).long()
    with torch.no_grad():
        full, _ = model(tokens[None])  # [1, T, V]
    scale = max(1.0, float(full.abs().max()))
    state = rt.initial_state()
    for t, tok in enumerate(tokens.tolist()):
        logits, state = rt.step(tok, state)
        assert logits.shape == (len(rt.vocab),) and logits.dtype == torch.float32
        assert float((logits - full[0, t]).abs().max()) <= 1e-5 * scale
    scored, _ = rt.forward(tokens[None])
    assert float((scored - full).abs().max()) <= 1e-5 * scale
    assert rt.vocab.fingerprint() == rt.card["vocab_fingerprint"]


def test_export_refuses_existing_folder_without_force(tiny_run: Path, tiny_model: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["export", str(tiny_run), "--out", str(tiny_model)]) == 2
    assert "--force" in capsys.readouterr().err
    assert cli.main(["export", str(tiny_run.parent / "missing"), "--out", str(tiny_model)]) == 2


@pytest.mark.parametrize("damage", ["missing", "no-card", "flipped", "truncated-unchecked", "vocab"])
def test_runtime_refuses_damaged_model_folder(tiny_model: Path, tmp_path: Path, damage: str) -> None:
    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    verify = True
    if damage == "missing":
        model = tmp_path / "nothing"
    elif damage == "no-card":
        (model / "card.json").unlink()
    elif damage == "flipped":
        data = bytearray((model / "model.ts").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (model / "model.ts").write_bytes(bytes(data))
    elif damage == "truncated-unchecked":
        data = (model / "model.ts").read_bytes()
        (model / "model.ts").write_bytes(data[: len(data) // 3])
        verify = False  # even without the checksum, a broken archive is a ModelLoadError
    else:
        vocab = json.loads((model / "vocab.json").read_text())
        vocab["chords"] = vocab["chords"][:-1]
        vocab.pop("fingerprint")
        (model / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(ModelLoadError) as err:
        ModelRuntime.load(model, verify=verify)
    assert str(model) in str(err.value)


def test_default_model_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LIVEDUET_MODEL", str(tmp_path))
    assert default_model_dir() == tmp_path


# -- generate -------------------------------------------------------------------------------------------

def test_generate_writes_midi_with_rhythm(tiny_model: Path, tmp_path: Path, tiny_data: Path) -> None:
    primer = tmp_path / "primer.mid"
    save_atomic(notes_to_midi([(0, 1, 60, 80), (1, 1.5, 62, 80), (1.5, 2, 64, 80)], bpm=90), primer)
    args = ["generate", "--model", str(tiny_model), "--tokens", "40", "--temperature", "1.0", "--seed", "1"]
    assert cli.main([*args, "--primer", str(primer), "--out", str(tmp_path / "a.mid")]) == 0
    assert cli.main([*args, "--primer", str(primer), "--out", str(tmp_path / "b.mid")]) == 0
    assert (tmp_path / "a.mid").read_bytes() == (tmp_path / "b.mid").read_bytes()  # same seed
    midi = read_midi(tmp_path / "a.mid")
    assert midi.first_bpm == pytest.approx(90, abs=0.01)  # the primer's tempo
    assert [n[2] for n in midi.notes[:3]] == [60, 62, 64]  # the primer comes first
    assert len(midi.notes) >= 3 + 20 - 5  # 20 events sampled (rests carry no note)
    assert len({n[1] - n[0] for n in midi.notes}) > 1  # durations vary: rhythm, not a grid
    assert cli.main([*args[:-2], "--seed", "2", "--answer-only", "--bpm", "140", "--out", str(tmp_path / "c.mid")]) == 0
    assert read_midi(tmp_path / "c.mid").first_bpm == pytest.approx(140, abs=0.01)


@pytest.mark.parametrize("case", ["primer-missing", "out-exists", "out-folder-missing", "model-missing",
                                  "bad-temperature"])
def test_generate_bad_input_is_one_line(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                        case: str) -> None:
    out = tmp_path / "o.mid"
    args = ["generate", "--model", str(tiny_model), "--tokens", "10", "--temperature", "1", "--seed", "0",
            "--out", str(out)]
    if case == "primer-missing":
        args += ["--primer", str(tmp_path / "none.mid")]
    elif case == "out-exists":
        out.write_bytes(b"x")
    elif case == "out-folder-missing":
        args[-1] = str(tmp_path / "no" / "o.mid")
    elif case == "model-missing":
        args[2] = str(tmp_path / "nomodel")
    else:
        args[6] = "-1"
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("liveduet generate: error:") and err.count("\n") == 1


# -- distributed ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_ddp_two_gloo_processes_match_one_process(tiny_data: Path, tmp_path: Path) -> None:
    """torchrun with 2 CPU processes: each takes half of every batch; DDP averages the gradients,
    so the weights match a single process training on the whole batches (dropout is 0 here)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "liveduet", "train", "--data", str(tiny_data), "--config", str(TINY), "--out",
           str(tmp_path / "ddp"), "--seed", "3", "--epochs", "1", "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "ddp" / "run.json").read_text())["world_size"] == 2
    train(TrainRequest(tiny_data, tmp_path / "one", TINY, seed=3, epochs=1, quiet=True))
    a, b = weights(tmp_path / "ddp"), weights(tmp_path / "one")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4), k


def test_export_function_returns_card(tiny_run: Path, tmp_path: Path) -> None:
    card = export_run(tiny_run, tmp_path / "m", evaluation={"model_nll": 1.0})
    assert card["evaluation"] == {"model_nll": 1.0}
    assert "model_nll" in (tmp_path / "m" / "card.md").read_text()
    rt = ModelRuntime.load(tmp_path / "m")
    logits, _ = rt.step(BOS, rt.initial_state())
    assert torch.isfinite(logits).all()
