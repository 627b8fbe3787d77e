"""Phrases for the phrase VAE (model/vae.py): cut from a piece's tokens on bar lines, packed, batched.

The token stream has no bar token and no metre, so bars are counted as `bar_beats` (4) beats from the
piece's first onset: a window starts on such a bar line where an event starts, holds the events that
start within `window_beats`, and its last event is cut at the window's end. Windows whose piece ends
early, that hold only rests, or that exceed `max_tokens` are skipped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch import Tensor

from liveduet.music.tokens import BOS, EOS, PAD, TICKS, Vocabulary

if TYPE_CHECKING:
    from liveduet.model.vae import VAEConfig


def piece_events(piece: np.ndarray, vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray]:
    """A piece's tokens (<bos> p d p d ... <eos>) → its pitch tokens and durations in twelfths."""
    body = piece[(piece != BOS) & (piece != EOS) & (piece != PAD)]
    n = len(body) // 2
    pitches = body[0 : 2 * n : 2].astype(np.int64)
    durs = body[1 : 2 * n : 2].astype(np.int64) - vocab.dur_base + 1
    return pitches, durs


def cut_phrases(piece: np.ndarray, vocab: Vocabulary, cfg: VAEConfig) -> list[np.ndarray]:
    """The piece's windows on bar lines (see the module docstring), each as phrase tokens."""
    pitches, durs = piece_events(piece, vocab)
    if len(pitches) == 0:
        return []
    onsets = np.concatenate([[0], np.cumsum(durs)])  # [n + 1]: the last is the piece's end
    end = int(onsets[-1])
    width, hop = cfg.window_beats * TICKS, cfg.hop_beats * TICKS
    out: list[np.ndarray] = []
    for start in range(0, end - width + 1, hop):
        i = int(np.searchsorted(onsets, start))
        if i >= len(pitches) or onsets[i] != start:
            continue  # no onset on this bar line (a note is held across it)
        j = int(np.searchsorted(onsets, start + width))  # events i..j-1 start inside the window
        p = pitches[i:j]
        d = durs[i:j].copy()
        d[-1] = start + width - onsets[j - 1]  # the last event is cut at the window's end
        if 2 * len(p) > cfg.max_tokens or np.all(p == vocab.rest_id):
            continue
        toks = np.empty(2 * len(p), dtype=np.int64)
        toks[0::2] = p
        toks[1::2] = d + vocab.dur_base - 1
        out.append(toks)
    return out


class PhraseSet(NamedTuple):
    tokens: np.ndarray  # int16 [N, max_tokens]: phrase tokens, <pad> after the end
    lengths: np.ndarray  # int64 [N]


def pack_phrases(phrases: list[np.ndarray], max_tokens: int) -> PhraseSet:
    arr = np.full((len(phrases), max_tokens), PAD, dtype=np.int16)
    for k, p in enumerate(phrases):
        arr[k, : len(p)] = p
    return PhraseSet(arr, np.array([len(p) for p in phrases], dtype=np.int64))


def duration_table(vocab: Vocabulary) -> Tensor:
    """int64 [V]: each duration token's length in twelfths, 0 for every other token."""
    table = np.zeros(len(vocab), dtype=np.int64)
    table[vocab.duration_mask] = np.arange(1, int(vocab.duration_mask.sum()) + 1)
    return torch.from_numpy(table)


def input_positions(dec_in: Tensor, durations: Tensor, limit: int) -> Tensor:
    """Decoder inputs [B, T] → twelfths elapsed once each input is read [B, T] (at most `limit`): where in
    the window the token the decoder predicts next begins (or, after a pitch, the note it times)."""
    return torch.cumsum(durations[dec_in], dim=1).clamp(max=limit)


def batch_tensors(tokens: np.ndarray, lengths: np.ndarray) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Phrase rows → (encoder input [B, T], lengths [B], decoder input [B, T + 1], targets [B, T + 1]).
    The decoder reads <bos> + phrase and predicts phrase + <eos>; <pad> targets are ignored."""
    B, T = len(lengths), int(lengths.max())
    enc = torch.from_numpy(tokens[:, :T].astype(np.int64))  # [B, T]
    lens = torch.from_numpy(lengths.astype(np.int64))
    dec_in = torch.cat([torch.full((B, 1), BOS, dtype=torch.long), enc], dim=1)  # [B, T + 1]
    tgt = torch.cat([enc, torch.full((B, 1), PAD, dtype=torch.long)], dim=1)  # [B, T + 1]
    tgt[torch.arange(B), lens] = EOS
    return enc, lens, dec_in, tgt
