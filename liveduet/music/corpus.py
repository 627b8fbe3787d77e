"""Corpus sources → pieces of events: MIDI files (our capped reader) and music21's bundled corpus.

Every source ends in the same `tokenize_notes`, the tokenizer the daemon uses live.
music21 is slow (≈120 ms per chorale to parse, 15 s per Essen file), so it is used only for the
formats it alone reads (MusicXML, ABC, Humdrum) and its results are cached on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from liveduet.errors import CorpusError, MidiFileError
from liveduet.music.midifile import read_midi
from liveduet.music.tokens import Event, TokenizerSettings, tokenize_notes

MIDI_SUFFIXES = {".mid", ".midi", ".kar", ".rmi"}  # .rmi: RIFF-wrapped MIDI
MUSIC21_SUFFIXES = {".mxl", ".xml", ".musicxml", ".krn", ".abc"}
CACHE_VERSION = "1"


@dataclass(frozen=True)
class Task:
    """One file to read: a MIDI file, or a music21 corpus file (which may hold many pieces)."""

    kind: str  # "midi" | "music21"
    path: str
    source: str  # what the user named: a folder, a file, or music21:NAME


@dataclass
class Piece:
    name: str
    source: str
    events: list[Event]


@dataclass
class Result:
    task: Task
    pieces: list[Piece]
    skipped: str | None = None  # one-line reason
    seconds: float = 0.0
    cached: bool = False


def expand_sources(sources: list[str]) -> list[Task]:
    """Files, folders (recursive) and `music21:NAME` → tasks. Unknown or missing → CorpusError."""
    tasks: list[Task] = []
    for src in sources:
        if src.startswith("music21:"):
            tasks += _music21_tasks(src)
            continue
        path = Path(src)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES and p.is_file())
            tasks += [Task("midi", str(p), src) for p in files]
        elif path.is_file():
            tasks.append(Task("midi", str(path), src))
        else:
            raise CorpusError(f"source {src!r} does not exist (a MIDI file, a folder, or music21:NAME)")
    return tasks


def music21_collections() -> list[str]:
    """Names usable as music21:NAME: the folders of music21's bundled corpus."""
    import music21.corpus

    root = Path(music21.corpus.__file__).parent
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def _music21_tasks(src: str) -> list[Task]:
    from music21 import corpus

    name = src.split(":", 1)[1]
    paths = [Path(p) for p in corpus.getComposer(name)]
    if not paths:
        known = ", ".join(music21_collections())
        raise CorpusError(f"unknown music21 collection {name!r}; known: {known}")
    # Chorales come in several formats; .rntxt is an analysis, not music.
    # A work may come in several formats (bwv1.6.mxl and bwv1.6.krn): read each once, in the
    # richest format; .rntxt is an analysis, not music.
    rank = {".mxl": 0, ".musicxml": 0, ".xml": 1, ".krn": 2, ".abc": 3}
    best: dict[tuple[Path, str], Path] = {}
    for p in paths:
        suffix = p.suffix.lower()
        if suffix in MUSIC21_SUFFIXES:
            key = (p.parent, p.stem)
            if key not in best or rank[suffix] < rank[best[key].suffix.lower()]:
                best[key] = p
    return [Task("music21", str(p), src) for p in sorted(best.values())]


def cache_dir() -> Path:
    root = os.environ.get("LIVEDUET_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "liveduet"
    )
    return Path(root) / "music21"


def _cache_key(path: Path, settings: TokenizerSettings) -> str:
    import music21

    st = path.stat()
    blob = json.dumps([CACHE_VERSION, str(path), st.st_size, st.st_mtime_ns, music21.__version__, repr(settings)])
    return hashlib.sha1(blob.encode()).hexdigest()


def read_task(task: Task, settings: TokenizerSettings) -> Result:
    """Read one task in a worker. Never raises for a bad file: returns a skip reason instead."""
    import time

    started = time.perf_counter()
    try:
        if task.kind == "midi":
            notes = read_midi(task.path)
            if not notes.notes:
                reason = "drums only" if notes.drum_notes else "no notes"
                return Result(task, [], skipped=reason, seconds=time.perf_counter() - started)
            events = tokenize_notes(notes.notes, settings, notes.pedal)
            pieces = [Piece(_piece_name(task), task.source, events)]
            return Result(task, pieces, seconds=time.perf_counter() - started)
        pieces, cached = _read_music21(Path(task.path), task, settings)
        if not pieces:
            return Result(task, [], skipped="no notes", seconds=time.perf_counter() - started)
        return Result(task, pieces, seconds=time.perf_counter() - started, cached=cached)
    except MidiFileError as err:
        return Result(task, [], skipped=str(err), seconds=time.perf_counter() - started)
    except Exception as err:  # a corpus always has some file a parser chokes on; never stop the run
        return Result(task, [], skipped=f"{type(err).__name__}: {err}"[:200], seconds=time.perf_counter() - started)


def _piece_name(task: Task) -> str:
    src = Path(task.source)
    try:
        return str(Path(task.path).relative_to(src)) if src.is_dir() else Path(task.path).name
    except ValueError:
        return Path(task.path).name


def _read_music21(path: Path, task: Task, settings: TokenizerSettings) -> tuple[list[Piece], bool]:
    cache = cache_dir() / f"{_cache_key(path, settings)}.json"
    if cache.exists():
        try:
            data = json.loads(cache.read_text())
            return [Piece(p["name"], task.source, [(tuple(e[0]), e[1]) for e in p["events"]]) for p in data], True
        except (json.JSONDecodeError, KeyError, TypeError):
            pass  # a damaged cache entry is rebuilt
    from music21 import converter, stream

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = converter.parse(str(path))
    scores = list(parsed.scores) if isinstance(parsed, stream.Opus) else [parsed]
    collection = task.source.split(":", 1)[1]
    pieces = []
    for i, score in enumerate(scores):
        events = music21_events(score, settings)
        if events:
            suffix = f"#{i + 1}" if len(scores) > 1 else ""
            pieces.append(Piece(f"{collection}/{path.name}{suffix}", task.source, events))
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps([{"name": p.name, "events": p.events} for p in pieces]))
    os.replace(tmp, cache)
    return pieces, False


def music21_events(score, settings: TokenizerSettings) -> list[Event]:
    """A music21 score → events: every part merged into one piano part, ties joined, no chordify."""
    from music21 import harmony

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flat = score.stripTies().flatten()
    notes = []
    for el in flat.notes:
        if isinstance(el, harmony.Harmony):  # chord symbols are labels, not sounding notes
            continue
        ql = float(el.duration.quarterLength)
        if ql <= 0:  # grace notes
            continue
        onset = float(el.offset)
        for p in el.pitches:
            notes.append((onset, onset + ql, int(p.midi)))
    notes.sort()
    return tokenize_notes(notes, settings)
