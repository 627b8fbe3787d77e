"""tokens → MIDI file → tokens is the identity, on real pieces from music21's corpus.

Ten pieces: Bach chorales, Essen folk songs, a rag and a mazurka. music21 is slow the first time
(~10 s for these); `read_task` caches its results in ~/.cache/liveduet (or $LIVEDUET_CACHE).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from liveduet.music.corpus import Piece, expand_sources, read_task
from liveduet.music.midifile import notes_to_midi, read_midi, save_atomic
from liveduet.music.stream import tokenize_notes
from liveduet.music.tokens import (
    BOS,
    EOS,
    TICKS,
    TokenizerSettings,
    Vocabulary,
    build_vocabulary,
    events_to_notes,
)

S = TokenizerSettings()

# (source, file name, how many of its pieces)
SAMPLE = [
    ("music21:bach", "bwv1.6.mxl", 1),
    ("music21:bach", "bwv153.1.mxl", 1),
    ("music21:bach", "bwv248.42-4.mxl", 1),
    ("music21:bach", "bwv32.6.mxl", 1),
    ("music21:bach", "bwv86.6.mxl", 1),
    ("music21:essenFolksong", "teste.abc", 3),
    ("music21:joplin", "maple_leaf_rag.mxl", 1),
    ("music21:chopin", "mazurka06-2.krn", 1),
]


@cache
def _tasks(source: str) -> dict[str, object]:
    return {Path(t.path).name: t for t in expand_sources([source])}


@cache
def _pieces(source: str, name: str) -> list[Piece]:
    result = read_task(_tasks(source)[name], S)
    assert result.skipped is None, result.skipped
    return result.pieces


def sample_pieces() -> list[Piece]:
    return [p for source, name, n in SAMPLE for p in _pieces(source, name)[:n]]


@cache
def vocabulary() -> Vocabulary:
    """Built from the sample with the default min_count, so rare chords map to their nearest."""
    return build_vocabulary((p.events for p in sample_pieces()), S, min_count=3)[0]


PIECE_IDS = [f"{name}#{i}" for _, name, n in SAMPLE for i in range(n)]


@pytest.fixture(scope="module", params=range(len(PIECE_IDS)), ids=PIECE_IDS)
def piece(request) -> Piece:
    return sample_pieces()[request.param]


def through_midi(tokens: list[int], vocab: Vocabulary, path: Path, bpm: float, tpb: int) -> list[int]:
    events = list(vocab.decode(tokens))
    notes = [(on / TICKS, off / TICKS, p, 80) for on, off, p in events_to_notes(events)]
    save_atomic(notes_to_midi(notes, bpm=bpm, ticks_per_beat=tpb), path)
    back = read_midi(path)
    return [BOS, *vocab.encode(tokenize_notes(back.notes, vocab.settings, back.pedal)), EOS]


@pytest.mark.parametrize(("bpm", "tpb"), [(120.0, 480), (73.0, 10080), (200.0, 96)])
def test_tokens_midi_tokens_is_identity(piece: Piece, tmp_path: Path, bpm: float, tpb: int) -> None:
    vocab = vocabulary()
    tokens = [BOS, *vocab.encode(piece.events), EOS]
    assert len(tokens) > 40
    assert through_midi(tokens, vocab, tmp_path / "piece.mid", bpm, tpb) == tokens


def test_events_survive_exactly_with_a_full_vocabulary(piece: Piece, tmp_path: Path) -> None:
    """With every chord in the vocabulary, the decoded events are the tokenizer's own events."""
    vocab = build_vocabulary([piece.events], S, min_count=1)[0]
    tokens = [BOS, *vocab.encode(piece.events), EOS]
    assert vocab.misses == 0
    assert list(vocab.decode(tokens)) == [(tuple(p), d) for p, d in piece.events]
    assert through_midi(tokens, vocab, tmp_path / "piece.mid", 120.0, 480) == tokens


def test_sample_covers_chords_rests_and_triplets() -> None:
    """The sample is worth round-tripping: chords, rests, the nearest-chord rule and odd durations occur."""
    events = [e for p in sample_pieces() for e in p.events]
    assert len(sample_pieces()) == len(PIECE_IDS)
    assert any(len(p) >= 4 for p, _ in events)
    assert any(not p for p, _ in events)
    assert any(d % 3 for _, d in events)  # a duration off the 16th grid (triplets)
    vocab = vocabulary()
    before = vocab.misses
    for p in sample_pieces():
        vocab.encode(p.events)
    assert vocab.misses > before  # some chords are rarer than min_count
