"""The model's two paths agree (window forward vs cached step, eager vs TorchScript), and configs validate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from liveduet.config import parse_section
from liveduet.errors import ConfigError
from liveduet.model.config import load_train_config
from liveduet.model.export import script_step_module
from liveduet.model.lstm import AttnState, DuetLM, GRUState, LSTMState, ModelConfig

REPO = Path(__file__).resolve().parents[1]
V = 120

ARCHS = {
    "lstm": (LSTMState, ("h", "c")),
    "gru": (GRUState, ("h",)),
    "lstm_attn": (AttnState, ("h", "c", "keys", "values", "pos")),
}


def make(arch: str, **kw: object) -> DuetLM:
    torch.manual_seed(0)
    kw = {"embed": 24, "hidden": 32, **kw}
    cfg = ModelConfig(arch=arch, vocab_size=V, layers=2, dropout=0.1, attn_heads=4, attn_window=6, **kw)
    return DuetLM(cfg).eval()


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("arch", ARCHS)
def test_step_matches_forward(arch: str) -> None:
    model = make(arch)
    tokens = torch.randint(0, V, (3, 25), generator=torch.Generator().manual_seed(1))  # T > attn_window
    with torch.no_grad():
        full, final = model(tokens)
        state = model.initial_state(3)
        steps = []
        for t in range(tokens.shape[1]):
            logits, state = model.step(tokens[:, t], state)
            steps.append(logits)
    assert full.shape == (3, 25, V)
    assert (torch.stack(steps, 1) - full).abs().max() <= 1e-5
    for a, b in zip(state, final):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_chunked_forward_carries_state(arch: str) -> None:
    model = make(arch)
    tokens = torch.randint(0, V, (2, 30), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full, _ = model(tokens)
        a, state = model(tokens[:, :11])
        b, state = model(tokens[:, 11:], state)
    assert (torch.cat([a, b], 1) - full).abs().max() <= 1e-5


@pytest.mark.parametrize("arch", ARCHS)
def test_state_is_a_named_tuple(arch: str) -> None:
    model = make(arch)
    cls, fields = ARCHS[arch]
    state = model.initial_state(2)
    assert type(state) is cls and state._fields == fields
    assert state.h.shape == (2, 2, 32)  # [L, B, H]
    _, state = model.step(torch.tensor([5, 6]), state)
    assert type(state) is cls
    if arch == "lstm_attn":
        assert state.keys.shape == (2, 6, 32)  # the ring buffer stays W slots long
        assert int(state.pos) == 1


def test_state_changes_the_prediction() -> None:
    """The cached state is really used: the same token after different histories predicts differently."""
    model = make("lstm")
    with torch.no_grad():
        a, _ = model(torch.tensor([[5, 7, 9]]))
        b, _ = model(torch.tensor([[8, 7, 9]]))
    assert (a[0, -1] - b[0, -1]).abs().max() > 1e-4


def test_attention_sees_only_its_window() -> None:
    """Position t attends to t-W+1..t: changing an input W or more positions back changes nothing."""
    attn = make("lstm_attn").attn  # window 6
    state = make("lstm_attn").initial_state(1)
    x = torch.randn(1, 20, 32, generator=torch.Generator().manual_seed(3))  # [B, T, H]
    changed = x.clone()
    changed[:, 0] += 1.0
    with torch.no_grad():
        a, *_ = attn.run(x, state.keys, state.values, state.pos)
        b, *_ = attn.run(changed, state.keys, state.values, state.pos)
    assert (a[0, 5] - b[0, 5]).abs().max() > 1e-4  # position 5 still sees position 0
    assert torch.equal(a[0, 6:], b[0, 6:])  # position 6 on do not


@pytest.mark.parametrize("arch, extra", [(a, {}) for a in ARCHS] + [
    ("lstm", {"embed": 16, "head_dim": 16, "tie_weights": True}),  # the default's shape: projection, tied head
])
def test_scripted_step_matches_eager_forward(arch: str, extra: dict) -> None:
    model = make(arch, **extra)
    scripted = script_step_module(model)
    tokens = torch.randint(0, V, (1, 20), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full, _ = model(tokens)
        state = scripted.initial_state(1)
        for t in range(20):
            logits, state = scripted(tokens[:, t], state)
            assert (logits - full[:, t]).abs().max() <= 1e-5
        scored, _ = scripted.score(tokens, scripted.initial_state(1))
    assert (scored - full).abs().max() <= 1e-5


def test_tied_weights_share_the_embedding() -> None:
    model = make("lstm", tie_weights=False)
    cfg = ModelConfig(vocab_size=V, embed=32, hidden=32, tie_weights=True)
    tied = DuetLM(cfg)
    assert tied.head.weight is tied.embed.weight
    assert tied.num_params() < DuetLM(ModelConfig(vocab_size=V, embed=32, hidden=32)).num_params()
    assert model.head.weight is not model.embed.weight


# -- configs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["default", "seed-3x512", "gru", "lstm-attn", "tiny"])
def test_shipped_configs_parse(name: str) -> None:
    model, train = load_train_config(REPO / "configs" / f"{name}.toml")
    model.vocab_size = V
    DuetLM(model)  # buildable
    assert train.seq_len >= 2


def test_default_config_is_the_realtime_size() -> None:
    model, train = load_train_config(REPO / "configs" / "default.toml")
    assert (model.arch, model.layers, model.hidden, model.head_width) == ("lstm", 2, 192, 128)
    seed, seed_train = load_train_config(REPO / "configs" / "seed-3x512.toml")
    assert (seed.layers, seed.hidden, seed.dropout, seed_train.seq_len, seed_train.batch) == (3, 512, 0.3, 100, 64)
    assert seed_train.optimizer == "adam"


@pytest.mark.parametrize("text, message", [
    ("[model]\nhiden = 3\n", "unknown key 'hiden'"),
    ("[model]\nhidden = '256'\n", "hidden = '256': must be int"),
    ("[model]\nhidden = true\n", "hidden = True: must be int"),
    ("[model]\narch = 'transformer'\n", "arch = 'transformer': must be one of"),
    ("[model]\ndropout = 1.5\n", "dropout = 1.5"),
    ("[model]\nvocab_size = 100\n", "unknown key 'vocab_size'"),
    ("[model]\ntie_weights = true\nembed = 64\nhidden = 128\n", "tie_weights = True: needs embed == the head's"),
    ("[model]\nhead_dim = -1\n", "head_dim = -1: must be 0..8192"),
    ("[model]\narch = 'lstm_attn'\nhidden = 30\nattn_heads = 4\n", "attn_heads = 4: must divide hidden"),
    ("[train]\nlr = -1\n", "[train] lr = -1.0"),
    ("[train]\ntargets = 'some'\n", "targets = 'some'"),
    ("[train]\nprecision = 'fp8'\n", "precision = 'fp8': must be one of fp32, bf16, auto"),
    ("[trian]\nlr = 1\n", "unknown section [trian]"),
    ("[train\n", "not valid TOML"),
])
def test_bad_config_names_key_and_value(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_train_config(path)
    assert message in str(err.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_train_config(tmp_path / "nope.toml")


def test_int_is_accepted_for_float_and_section_parser_is_reusable() -> None:
    from dataclasses import dataclass

    @dataclass
    class Live:
        latency_ms: float = 5.0
        port: str | None = None

    live = parse_section("live", {"latency_ms": 3, "port": "Keyboard"}, Live)
    assert live.latency_ms == 3.0 and isinstance(live.latency_ms, float) and live.port == "Keyboard"
    with pytest.raises(ConfigError, match=r"\[live\] port = 3"):
        parse_section("live", {"port": 3}, Live)
