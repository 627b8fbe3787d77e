"""The model: a token embedding, a recurrent core (LSTM or GRU), an optional local attention over
the last few outputs, and a linear head to the vocabulary.

It reads top to bottom: config → state tuples → blocks → model. One scriptable method, `run`,
does the work for both training (a [B, T] window) and live stepping (T = 1 with the cached state);
`forward` and `step` wrap it with the state as a NamedTuple, so h and c cannot be swapped by
position. The exported step module (model/export.py) calls the same `run`, which is what makes
eager `forward` and exported `step` agree to float precision.

Why local attention and not a transformer: the daemon steps once per token at batch 1 in
real time. An LSTM step is O(1); attention over a bounded ring buffer of the last `attn_window`
outputs keeps it O(window) per token with a fixed-size cache, however long the session runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from liveduet.errors import ConfigError

ARCHS = ("lstm", "gru", "lstm_attn")


@dataclass
class ModelConfig:
    arch: str = "lstm"  # "lstm" | "gru" | "lstm_attn"
    vocab_size: int = 0  # filled in from the data's vocabulary, never from a config file
    embed: int = 256
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.1
    attn_heads: int = 4  # lstm_attn only
    attn_window: int = 64  # lstm_attn only: how many past outputs each token attends to
    # Width of the output head's input: 0 = hidden. A smaller value adds a hidden → head_dim
    # projection; with a large vocabulary the head's V × width matrix is most of what a live step
    # reads from memory, and a step's cost is those bytes (see benchmarks/bench_model.py).
    head_dim: int = 0
    tie_weights: bool = False  # share the embedding with the output head (needs embed == head width)

    def validate(self) -> None:
        """Raise ConfigError naming the first bad key and its value."""
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"[model] {key} = {getattr(self, key)!r}: {why}")

        if self.arch not in ARCHS:
            raise bad("arch", f"must be one of {', '.join(ARCHS)}")
        if self.vocab_size < 0:
            raise bad("vocab_size", "must be positive")
        for key in ("embed", "hidden"):
            if not 1 <= getattr(self, key) <= 8192:
                raise bad(key, "must be 1..8192")
        if not 1 <= self.layers <= 16:
            raise bad("layers", "must be 1..16")
        if not 0.0 <= self.dropout < 1.0:
            raise bad("dropout", "must be in [0, 1)")
        if self.arch == "lstm_attn":
            if not 1 <= self.attn_heads <= 64 or self.hidden % self.attn_heads:
                raise bad("attn_heads", f"must divide hidden ({self.hidden})")
            if not 1 <= self.attn_window <= 4096:
                raise bad("attn_window", "must be 1..4096")
        if not 0 <= self.head_dim <= 8192:
            raise bad("head_dim", "must be 0..8192 (0 = hidden)")
        if self.tie_weights and self.embed != self.head_width:
            raise bad("tie_weights", f"needs embed == the head's width (got {self.embed} and {self.head_width})")

    @property
    def head_width(self) -> int:
        return self.head_dim or self.hidden


# -- state -----------------------------------------------------------------------------------
# Each is a NamedTuple of tensors; `run` takes and returns the same fields as a flat list.

class LSTMState(NamedTuple):
    h: Tensor  # [L, B, H]
    c: Tensor  # [L, B, H]


class GRUState(NamedTuple):
    h: Tensor  # [L, B, H]


class AttnState(NamedTuple):
    h: Tensor  # [L, B, H]
    c: Tensor  # [L, B, H]
    keys: Tensor  # [B, W, H] ring buffer: slot p % W holds the key of token p
    values: Tensor  # [B, W, H]
    pos: Tensor  # [] int64: tokens seen so far (the next token's position)


State = LSTMState | GRUState | AttnState


# -- blocks ----------------------------------------------------------------------------------

class LSTMCore(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.rnn = nn.LSTM(cfg.embed, cfg.hidden, cfg.layers, batch_first=True,
                           dropout=cfg.dropout if cfg.layers > 1 else 0.0)

    def run(self, x: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        y, (h, c) = self.rnn(x, (state[0], state[1]))  # y: [B, T, H]; h, c: [L, B, H]
        return y, [h, c]


class FusedLSTMCore(nn.Module):
    """LSTMCore's inference twin for live stepping: one matrix product per layer per token.

    A batch-1 step is bound by the bytes of weights it reads; what remains is per-op overhead, which
    this trims: the input and hidden weights are concatenated once (one product per layer instead
    of two) and the gates reordered (i, f, o, g) so one sigmoid and one tanh cover them. Measured on
    the default model: ~10 % faster per step than `nn.LSTM` (oneDNN off), TorchScript both.
    Same weights, same function; sums are reassociated, so results differ at float rounding (~1e-7).
    """

    def __init__(self, core: LSTMCore) -> None:
        super().__init__()
        rnn = core.rnn
        self.hidden = rnn.hidden_size
        H = rnn.hidden_size
        order = torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)])
        weights: list[Tensor] = []
        biases: list[Tensor] = []
        with torch.no_grad():
            for layer in range(rnn.num_layers):
                w_ih = getattr(rnn, f"weight_ih_l{layer}")  # [4H, in]
                w_hh = getattr(rnn, f"weight_hh_l{layer}")  # [4H, H]
                b = getattr(rnn, f"bias_ih_l{layer}") + getattr(rnn, f"bias_hh_l{layer}")  # [4H]
                weights.append(torch.cat([w_ih, w_hh], dim=1)[order].t().contiguous().detach())  # [in + H, 4H]
                biases.append(b[order].contiguous().detach())
        self.weights = weights
        self.biases = biases

    def run(self, x: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        H = self.hidden
        h_all, c_all = state[0], state[1]  # [L, B, H]
        outs: list[Tensor] = []
        hs = [h_all[i] for i in range(h_all.shape[0])]
        cs = [c_all[i] for i in range(c_all.shape[0])]
        for t in range(x.shape[1]):
            inp = x[:, t]  # [B, in]
            for layer in range(len(self.weights)):
                gates = torch.addmm(self.biases[layer], torch.cat([inp, hs[layer]], dim=1),
                                    self.weights[layer])  # [B, 4H] as i, f, o | g
                ifo = torch.sigmoid(gates[:, : 3 * H])
                g = torch.tanh(gates[:, 3 * H :])
                c = torch.addcmul(ifo[:, H : 2 * H] * cs[layer], ifo[:, :H], g)  # f*c + i*g
                h = ifo[:, 2 * H :] * torch.tanh(c)
                hs[layer], cs[layer] = h, c
                inp = h
            outs.append(inp)
        return torch.stack(outs, dim=1), [torch.stack(hs), torch.stack(cs)]  # [B, T, H]; [L, B, H] each


class GRUCore(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.rnn = nn.GRU(cfg.embed, cfg.hidden, cfg.layers, batch_first=True,
                          dropout=cfg.dropout if cfg.layers > 1 else 0.0)

    def run(self, x: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        y, h = self.rnn(x, state[0])  # y: [B, T, H]; h: [L, B, H]
        return y, [h]


class LocalAttention(nn.Module):
    """Causal multi-head attention over the last `window` positions (the token itself included).

    The cache is a ring buffer of projected keys and values: a step writes one slot and attends
    over all W slots, so its cost is fixed. No positional encoding: the LSTM output already
    carries position, and without one the ring order of the slots does not matter.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.heads = cfg.attn_heads
        self.window = cfg.attn_window
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.proj = nn.Linear(cfg.hidden, cfg.hidden)
        self.norm = nn.LayerNorm(cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)

    def run(self, x: Tensor, keys: Tensor, values: Tensor, pos: Tensor
            ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        B, T, H = x.shape
        W, nh = self.window, self.heads
        q, k, v = self.qkv(x).split(H, dim=2)  # each [B, T, H]
        # Absolute positions: the cache's slots hold tokens pos-W .. pos-1 (negative = empty).
        slots = torch.arange(W, device=x.device)
        cache_pos = pos - W + torch.remainder(slots - pos, W)  # [W]
        new_pos = pos + torch.arange(T, device=x.device)  # [T]
        key_pos = torch.cat([cache_pos, new_pos])  # [W + T]
        allk = torch.cat([keys, k], dim=1)  # [B, W + T, H]
        allv = torch.cat([values, v], dim=1)  # [B, W + T, H]
        diff = new_pos[:, None] - key_pos[None, :]  # [T, W + T]
        visible = (key_pos[None, :] >= 0) & (diff >= 0) & (diff < W)  # [T, W + T]
        hd = H // nh
        qh = q.view(B, T, nh, hd).transpose(1, 2)  # [B, nh, T, hd]
        kh = allk.view(B, W + T, nh, hd).transpose(1, 2)  # [B, nh, W + T, hd]
        vh = allv.view(B, W + T, nh, hd).transpose(1, 2)  # [B, nh, W + T, hd]
        att = (qh @ kh.transpose(-2, -1)) * (1.0 / math.sqrt(hd))  # [B, nh, T, W + T]
        att = att.masked_fill(~visible, float("-inf"))
        att = self.drop(F.softmax(att, dim=-1))
        y = (att @ vh).transpose(1, 2).reshape(B, T, H)  # [B, T, H]
        out = self.norm(x + self.drop(self.proj(y)))  # [B, T, H]
        # Write the last min(T, W) new keys into their slots.
        n = min(T, W)
        idx = torch.remainder(new_pos[T - n:], W)  # [n]
        keys = keys.index_copy(1, idx, k[:, T - n:])
        values = values.index_copy(1, idx, v[:, T - n:])
        return out, keys, values, pos + T


# -- the model -------------------------------------------------------------------------------

class DuetLM(nn.Module):
    """tokens → embedding → recurrent core (→ local attention) → logits over the vocabulary."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        if cfg.vocab_size < 4:
            raise ConfigError(f"[model] vocab_size = {cfg.vocab_size}: must come from a vocabulary (>= 4)")
        self.config = cfg
        self.layers = cfg.layers
        self.hidden = cfg.hidden
        self.window = cfg.attn_window
        self.has_cell = cfg.arch != "gru"  # LSTMs carry a cell state c beside h
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed)
        self.drop = nn.Dropout(cfg.dropout)
        self.core: nn.Module = GRUCore(cfg) if cfg.arch == "gru" else LSTMCore(cfg)
        self.attn = LocalAttention(cfg) if cfg.arch == "lstm_attn" else None
        self.proj = nn.Linear(cfg.hidden, cfg.head_dim, bias=False) if cfg.head_width != cfg.hidden else None
        self.head = nn.Linear(cfg.head_width, cfg.vocab_size)
        if cfg.tie_weights:
            self.head.weight = self.embed.weight
        self.state_type = {"lstm": LSTMState, "gru": GRUState, "lstm_attn": AttnState}[cfg.arch]

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def initial_state_list(self, batch: int) -> list[Tensor]:
        """The zero state as a flat list (the form `run` and the exported module use)."""
        w = self.embed.weight
        h = torch.zeros(self.layers, batch, self.hidden, dtype=w.dtype, device=w.device)  # [L, B, H]
        state = [h]
        if self.has_cell:
            state.append(torch.zeros_like(h))
        if self.attn is not None:
            kv = torch.zeros(batch, self.window, self.hidden, dtype=w.dtype, device=w.device)  # [B, W, H]
            state += [kv, torch.zeros_like(kv), torch.zeros((), dtype=torch.long, device=w.device)]
        return state

    def run(self, tokens: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """tokens [B, T] int64, state as a flat list → logits [B, T, V], next state (flat list)."""
        x = self.drop(self.embed(tokens))  # [B, T, E]
        y, rnn_state = self.core.run(x, state[:2] if self.attn is not None else state)  # y: [B, T, H]
        if self.attn is not None:
            y, keys, values, pos = self.attn.run(y, state[2], state[3], state[4])
            rnn_state = rnn_state + [keys, values, pos]
        if self.proj is not None:
            y = self.proj(y)  # [B, T, D]
        logits = self.head(self.drop(y))  # [B, T, V]
        return logits, rnn_state

    def fused_for_stepping(self) -> DuetLM:
        """A copy for inference whose LSTM steps through FusedLSTMCore (the GRU is left as it is)."""
        import copy

        fused = copy.deepcopy(self).eval()
        if isinstance(fused.core, LSTMCore):
            fused.core = FusedLSTMCore(fused.core)
        return fused

    @torch.jit.unused
    def initial_state(self, batch: int = 1) -> State:
        return self.state_type(*self.initial_state_list(batch))

    @torch.jit.unused
    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """tokens [B, T] → logits [B, T, V], state after the last token."""
        if state is None:
            state = self.initial_state(tokens.shape[0])
        logits, flat = self.run(tokens, list(state))
        return logits, self.state_type(*flat)

    @torch.jit.unused
    def step(self, token: Tensor, state: State) -> tuple[Tensor, State]:
        """token [B] → logits [B, V], state: one token with the cached state."""
        logits, flat = self.run(token[:, None], list(state))  # [B, 1, V]
        return logits[:, 0], self.state_type(*flat)
