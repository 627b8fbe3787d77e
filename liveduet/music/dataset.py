"""The prepared-data folder: a stable format readable with numpy and json alone (docs/data-format.md).

    tokens.npy     int32 [N]      every piece as <bos> pitch dur pitch dur ... <eos>, concatenated
    offsets.npy    int64 [P + 1]  piece i is tokens[offsets[i]:offsets[i + 1]]
    split.npy      uint8 [P]      0 = train, 1 = validation (by piece; transpositions stay together)
    vocab.json     the vocabulary with its tokenizer settings
    manifest.json  sources, settings, counts, pieces, skipped files with reasons
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from liveduet.errors import CorpusError
from liveduet.music.tokens import Vocabulary

FORMAT = "liveduet-data/1"


def is_validation(name: str, val_percent: float) -> bool:
    """Stable by piece name: the same piece lands in the same split on every run and machine."""
    return (zlib.crc32(name.encode()) % 10_000) < val_percent * 100


@dataclass
class Dataset:
    tokens: np.ndarray
    offsets: np.ndarray
    split: np.ndarray
    vocab: Vocabulary
    manifest: dict

    def pieces(self, which: str = "train") -> list[np.ndarray]:
        want = {"train": 0, "val": 1}[which]
        return [self.tokens[a:b] for a, b, s in zip(self.offsets[:-1], self.offsets[1:], self.split) if s == want]

    def stream(self, which: str = "train") -> np.ndarray:
        parts = self.pieces(which)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)


def write_dataset(out: Path, pieces: list[np.ndarray], split: list[int], vocab: Vocabulary, manifest: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lengths = np.array([len(p) for p in pieces], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = np.concatenate(pieces).astype(np.int32) if pieces else np.zeros(0, dtype=np.int32)
    np.save(out / "tokens.npy", tokens)
    np.save(out / "offsets.npy", offsets)
    np.save(out / "split.npy", np.array(split, dtype=np.uint8))
    vocab.save(out / "vocab.json")
    manifest = {"format": FORMAT, "vocab_fingerprint": vocab.fingerprint(), **manifest}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def load_dataset(path: str | Path) -> Dataset:
    path = Path(path)
    if not (path / "manifest.json").exists():
        raise CorpusError(f"{path} is not a prepared data folder (no manifest.json); run `liveduet prepare`")
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorpusError(f"{path}/manifest.json is damaged ({err}); re-run prepare") from err
    if not isinstance(manifest, dict):
        raise CorpusError(f"{path}/manifest.json is not a manifest (a JSON object); re-run prepare")
    if manifest.get("format") != FORMAT:
        raise CorpusError(f"{path}: data format {manifest.get('format')!r} is not {FORMAT!r}; re-run prepare")
    vocab = Vocabulary.load(path / "vocab.json")
    try:
        tokens = np.load(path / "tokens.npy")
        offsets = np.load(path / "offsets.npy")
        split = np.load(path / "split.npy")
    except (OSError, ValueError) as err:
        raise CorpusError(f"{path}: cannot read arrays: {err}") from err
    if offsets[-1] != len(tokens) or len(split) != len(offsets) - 1:
        raise CorpusError(f"{path}: tokens, offsets and split do not agree; re-run prepare")
    return Dataset(tokens, offsets, split, vocab, manifest)
