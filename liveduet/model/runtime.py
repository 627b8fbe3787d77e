"""Loading an exported model folder and stepping it in real time.

`ModelRuntime.load(dir)` checks the folder (card, checksum, vocabulary fingerprint), loads the
step module for the card's `format`, switches the process to the settings that make a batch-1 step
fast, and warms the module up, so the first live step costs what the others do.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from liveduet.errors import LiveduetError, ModelLoadError
from liveduet.model.family import check_family
from liveduet.model.lstm import AttnState, GRUState, LSTMState, ModelConfig, State
from liveduet.music.tokens import BOS, Vocabulary

ENV_VAR = "LIVEDUET_MODEL"
STATE_TYPES = {"LSTMState": LSTMState, "GRUState": GRUState, "AttnState": AttnState}
WARMUP_STEPS = 8  # TorchScript's profiling executor specialises the graph over the first calls


def default_model_dir() -> Path:
    """$LIVEDUET_MODEL, else <repo>/models/default beside the (editable) package."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    repo_default = Path(__file__).resolve().parents[2] / "models" / "default"
    if (repo_default / "card.json").exists():
        return repo_default
    raise ModelLoadError(
        f"no model found: pass --model DIR or set {ENV_VAR}=DIR (the repository's models/default is "
        "missing); train one with `liveduet train --data DATA --config configs/default.toml --out runs/R` "
        "then `liveduet export runs/R --out models/default`"
    )


def _load_torchscript(path: Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit.*")
        return torch.jit.load(str(path), map_location="cpu")


# card["format"] → loader. A torch.export program would add its own entry here.
LOADERS = {"torchscript": _load_torchscript}


def _sha256(path: Path) -> str:
    from liveduet.model.card import sha256_of

    return sha256_of(path)


@dataclass
class ModelRuntime:
    module: Any  # the loaded step module: forward(token[B], state) / score / initial_state
    vocab: Vocabulary
    card: dict
    config: ModelConfig
    path: Path
    _state_type: type = field(default=LSTMState, repr=False)
    _token: Tensor = field(default_factory=lambda: torch.zeros(1, dtype=torch.long), repr=False)

    @classmethod
    def load(cls, path: str | Path | None = None, threads: int = 1, verify: bool = True) -> ModelRuntime:
        """Load a model folder (default: `default_model_dir()`). Anything missing, damaged or
        inconsistent → ModelLoadError naming the problem."""
        path = Path(path) if path is not None else default_model_dir()
        if not path.is_dir():
            raise ModelLoadError(f"model folder {path} does not exist")
        try:
            card = json.loads((path / "card.json").read_text())
        except FileNotFoundError as err:
            raise ModelLoadError(f"{path} is not a model folder (no card.json); export one with "
                                 "`liveduet export RUN_DIR --out DIR`") from err
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ModelLoadError(f"{path}/card.json is damaged: {err}") from err
        if not isinstance(card, dict):
            raise ModelLoadError(f"{path}/card.json is not a model card (a JSON object)")
        check_family(card, path, "lm", "a step model (liveduet's language model)")
        fmt = card.get("format")
        if fmt not in LOADERS:
            raise ModelLoadError(f"{path}: model format {fmt!r} is not supported (known: {', '.join(LOADERS)})")
        file = path / str(card.get("file", ""))
        if not file.is_file():
            raise ModelLoadError(f"{path}: model file {card.get('file')!r} is missing")
        if verify and card.get("sha256") and _sha256(file) != card["sha256"]:
            raise ModelLoadError(f"{file} does not match the checksum in its card (damaged or replaced)")
        try:
            vocab = Vocabulary.load(path / "vocab.json")
            vocab.check_compatible(str(card.get("vocab_fingerprint")), f"the model in {path}")
        except LiveduetError as err:
            raise ModelLoadError(f"{path}: {err}") from err
        try:
            cfg = ModelConfig(**card["config"]["model"])
            state_type = STATE_TYPES[card["state"]["type"]]
        except (KeyError, TypeError) as err:
            raise ModelLoadError(f"{path}/card.json is incomplete ({err})") from err
        if cfg.vocab_size != len(vocab):
            raise ModelLoadError(f"{path}: model has {cfg.vocab_size} outputs, vocabulary {len(vocab)} tokens")
        try:
            module = LOADERS[fmt](file)
        except Exception as err:  # torch.jit raises RuntimeError/ValueError for damaged archives
            raise ModelLoadError(f"{file} cannot be loaded ({str(err).strip().splitlines()[0][:200]})") from err

        # Batch-1 steps: oneDNN's RNN kernel costs 3-4x the plain one, and a second thread does not
        # help a matrix-vector product (the other core belongs to MIDI I/O). Process-wide settings.
        torch.backends.mkldnn.enabled = False
        if threads:
            torch.set_num_threads(threads)
        rt = cls(module, vocab, card, cfg, path, state_type)
        rt._warm_up()
        return rt

    def _warm_up(self) -> None:
        state = self.initial_state()
        try:
            for _ in range(WARMUP_STEPS):
                _, state = self.step(BOS, state)
            self.forward(torch.full((1, 4), BOS, dtype=torch.long))
        except Exception as err:
            raise ModelLoadError(f"{self.path}: the model fails its first step ({str(err)[:200]})") from err

    def initial_state(self, batch: int = 1) -> State:
        return self._state_type(*self.module.initial_state(batch))

    def step(self, token: int, state: State) -> tuple[Tensor, State]:
        """One token with the cached state → (logits [V] float32, next state)."""
        self._token[0] = token  # reused: no allocation on the live path
        with torch.inference_mode():
            logits, flat = self.module(self._token, list(state))  # [1, V]
        return logits[0], self._state_type(*flat)

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Batched scoring: tokens [B, T] int64 → (logits [B, T, V], state after the last token)."""
        if state is None:
            state = self.initial_state(tokens.shape[0])
        with torch.inference_mode():
            logits, flat = self.module.score(tokens, list(state))
        return logits, self._state_type(*flat)

    def __repr__(self) -> str:
        return f"ModelRuntime({self.path}, {self.card.get('arch')}, {self.card.get('params')} params)"
