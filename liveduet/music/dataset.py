"""The prepared-data folder: a stable format readable with numpy and json alone (docs/data-format.md).

    tokens.npy     int32 [N]      every piece as <bos> pitch dur pitch dur ... <eos>, concatenated
    offsets.npy    int64 [P + 1]  piece i is tokens[offsets[i]:offsets[i + 1]]
    split.npy      uint8 [P]      0 = train, 1 = validation, 2 = test (by piece; transpositions stay together)
    perf.npy       int16 [N, 2]   per token: velocity, onset offset from the grid in ms (optional)
    vocab.json     the vocabulary with its tokenizer settings
    manifest.json  sources, settings, counts, pieces, skipped files with reasons
"""

from __future__ import annotations

import json
import os
import tempfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from liveduet.errors import CorpusError
from liveduet.fsutil import install
from liveduet.music.tokens import Vocabulary

FORMAT = "liveduet-data/1"
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
NO_VELOCITY, NO_TIMING = -1, -32768  # perf.npy where a token has no performance (see docs/data-format.md)


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
    perf: np.ndarray | None = None  # int16 [N, 2] aligned with tokens; None for folders without perf.npy

    def pieces(self, which: str = "train") -> list[np.ndarray]:
        want = SPLIT_CODES[which]
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


class DatasetWriter:
    """Writes the folder sequence by sequence, for corpora too big to hold in memory: the .npy
    headers are written for sizes known in advance, then the rows are appended (plain writes, no
    memory map: the written pages need not count as the process' memory), and manifest.json
    comes last (a folder without one is not a dataset, so an interrupted write is never taken
    for one)."""

    def __init__(self, out: Path, n_tokens: int, n_sequences: int) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.n_tokens = n_tokens
        self.tokens = _npy_stream(out / "tokens.npy", np.int32, (n_tokens,))
        self.perf = _npy_stream(out / "perf.npy", np.int16, (n_tokens, 2))
        self.offsets = np.zeros(n_sequences + 1, dtype=np.int64)
        self.split = np.zeros(n_sequences, dtype=np.uint8)
        self.n = 0

    def add(self, ids: np.ndarray, split: int, perf: np.ndarray | None) -> None:
        self.tokens.write(np.ascontiguousarray(ids, dtype=np.int32).tobytes())
        if perf is None:
            perf = np.empty((len(ids), 2), dtype=np.int16)
            perf[:] = (NO_VELOCITY, NO_TIMING)
        self.perf.write(np.ascontiguousarray(perf, dtype=np.int16).tobytes())
        self.split[self.n] = split
        self.offsets[self.n + 1] = self.offsets[self.n] + len(ids)
        self.n += 1

    def finish(self, vocab: Vocabulary, manifest: dict, listing: Iterable[str]) -> None:
        """`manifest` without its `pieces`, which come from `listing` (one JSON object a string),
        streamed into the file."""
        if self.n != len(self.split) or self.offsets[-1] != self.n_tokens:
            raise ValueError(f"wrote {self.n} of {len(self.split)} sequences")  # a bug, not user input
        self.tokens.close()
        self.perf.close()
        np.save(self.out / "offsets.npy", self.offsets)
        np.save(self.out / "split.npy", self.split)
        vocab.save(self.out / "vocab.json")
        head = json.dumps({"format": FORMAT, "vocab_fingerprint": vocab.fingerprint(), **manifest}, indent=1)
        fd, tmp = tempfile.mkstemp(prefix=".manifest.", suffix=".tmp", dir=self.out)
        with os.fdopen(fd, "w") as fh:
            fh.write(head[: head.rindex("}")].rstrip() + ',\n "pieces": [')
            for i, line in enumerate(listing):
                fh.write(("\n  " if i == 0 else ",\n  ") + line)
            fh.write("\n ]\n}\n")
        install(tmp, self.out / "manifest.json")


def _npy_stream(path: Path, dtype: type, shape: tuple[int, ...]) -> BinaryIO:
    """An open .npy file whose header announces `shape`; the caller writes the rows in C order.
    The header is np.save's (format 1.0), so the file equals what np.save writes."""
    fh = open(path, "wb")  # noqa: SIM115 (closed by DatasetWriter.finish)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(fh, header)
    return fh


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
    perf = None
    if (path / "perf.npy").exists():
        try:
            perf = np.load(path / "perf.npy")
        except (OSError, ValueError) as err:
            raise CorpusError(f"{path}: cannot read perf.npy: {err}") from err
        if perf.shape != (len(tokens), 2):
            raise CorpusError(f"{path}: perf.npy does not agree with tokens; re-run prepare")
    return Dataset(tokens, offsets, split, vocab, manifest, perf)
