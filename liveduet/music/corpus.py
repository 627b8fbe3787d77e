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

import numpy as np

from liveduet.errors import CorpusError, MidiFileError
from liveduet.music.dataset import NO_TIMING, NO_VELOCITY
from liveduet.music.midifile import MidiNotes, parse_midi, read_midi_bytes
from liveduet.music.stream import tokenize_notes
from liveduet.music.tokens import TICKS, Event, TokenizerSettings

MIDI_SUFFIXES = {".mid", ".midi", ".kar", ".rmi"}  # .rmi: RIFF-wrapped MIDI
MUSIC21_SUFFIXES = {".mxl", ".xml", ".musicxml", ".krn", ".abc"}
CACHE_VERSION = "1"
MAX_TEMPO_CHANGES = 1000  # a tempo map beyond these is broken, not music (corpus rules)
TEMPO_RANGE = (20.0, 400.0)  # bpm


@dataclass(frozen=True, slots=True)
class Task:
    """One file to read: a MIDI file, or a music21 corpus file (which may hold many pieces).
    Corpus layouts (liveduet/music/corpora.py) add what they know about it."""

    kind: str  # "midi" | "music21" | "skip" (listed by a corpus, known bad before reading)
    path: str
    source: str  # what the user named: a folder, a file, or music21:NAME
    name: str | None = None  # the piece's name, when the layout names it
    split: str | None = None  # "train" | "val" | "test" from an official split; None: by name
    meta: tuple[tuple[str, str], ...] = ()  # e.g. (("composer", "Bach"), ("title", "…"))
    programs: frozenset[int] | None = None  # keep notes of these GM programs only
    max_tracks: int = 0  # skip files with more tracks (0: no cap)
    check_tempo: bool = False  # skip files whose tempo map is absurd
    dedupe: bool = False  # report the content's MD5 so duplicates can be removed
    reason: str | None = None  # for kind "skip": why


@dataclass
class Piece:
    name: str
    source: str
    events: list[Event]
    # Per event: (velocity 1..127 or NO_VELOCITY for a rest, onset offset from the grid in ms or NO_TIMING).
    perf: list[tuple[int, int]] | None = None
    meta: tuple[tuple[str, str], ...] = ()
    split: str | None = None


@dataclass
class Result:
    task: Task
    pieces: list[Piece]
    skipped: str | None = None  # one-line reason
    seconds: float = 0.0
    cached: bool = False
    digest: str | None = None  # MD5 of the file's bytes, when the task asks for it


def expand_sources(sources: list[str], describe: dict[str, str] | None = None, **options) -> list[Task]:
    """Files, folders (recursive), `music21:NAME` and corpus layouts (`maestro:PATH`, …; see
    corpora.py, which gets `options` and fills `describe`) → tasks. Unknown or missing → CorpusError."""
    from liveduet.music import corpora

    tasks: list[Task] = []
    for src in sources:
        prefix = corpora.source_prefix(src)
        if prefix == "music21":
            tasks += _music21_tasks(src)
            continue
        if prefix is not None:
            tasks += corpora.expand(prefix, src, describe=describe, **options)
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
        if task.kind == "skip":
            return Result(task, [], skipped=task.reason or "skipped")
        if task.kind == "midi":
            data = read_midi_bytes(task.path)
            digest = hashlib.md5(data).hexdigest() if task.dedupe else None
            notes = parse_midi(data, programs=task.programs)
            reason = _rule_broken(task, notes)
            if reason is None and not notes.notes:
                reason = ("drums only" if notes.drum_notes and not notes.filtered_notes
                          else "no notes left by the program filter" if notes.filtered_notes else "no notes")
            if reason:
                return Result(task, [], skipped=reason, seconds=time.perf_counter() - started, digest=digest)
            events = tokenize_notes(notes.notes, settings, notes.pedal)
            piece = Piece(task.name or _piece_name(task), task.source, events,
                          performance(notes, events, settings), task.meta, task.split)
            return Result(task, [piece], seconds=time.perf_counter() - started, digest=digest)
        pieces, cached = _read_music21(Path(task.path), task, settings)
        if not pieces:
            return Result(task, [], skipped="no notes", seconds=time.perf_counter() - started)
        return Result(task, pieces, seconds=time.perf_counter() - started, cached=cached)
    except MidiFileError as err:
        return Result(task, [], skipped=str(err), seconds=time.perf_counter() - started)
    except Exception as err:  # a corpus always has some file a parser chokes on; never stop the run
        return Result(task, [], skipped=f"{type(err).__name__}: {err}"[:200], seconds=time.perf_counter() - started)


def _rule_broken(task: Task, notes: MidiNotes) -> str | None:
    """The corpus rules a file breaks (too many tracks, an absurd tempo map), or None."""
    if task.max_tracks and notes.tracks > task.max_tracks:
        return f"{notes.tracks} tracks (over --max-tracks {task.max_tracks})"
    if task.check_tempo and notes.tempos:
        if len(notes.tempos) > MAX_TEMPO_CHANGES:
            return f"absurd tempo map: {len(notes.tempos)} tempo changes (cap {MAX_TEMPO_CHANGES})"
        lo, hi = TEMPO_RANGE
        bad = next((bpm for _, bpm in notes.tempos if not lo <= bpm <= hi), None)
        if bad is not None:
            return f"absurd tempo map: {bad:.1f} bpm (allowed {lo:g}..{hi:g})"
    return None


def performance(notes: MidiNotes, events: list[Event], settings: TokenizerSettings) -> list[tuple[int, int]]:
    """Per event: the loudest velocity of its notes and how far (ms) its first note was played
    from the grid point the tokenizer put it on; (NO_VELOCITY, NO_TIMING) for rests.
    The tokenizer (window 0) makes one sounding event per distinct quantised onset, in order,
    so the notes grouped by quantised onset line up with the non-rest events one to one."""
    if not notes.notes:
        return [(NO_VELOCITY, NO_TIMING)] * len(events)
    onsets = np.array([n[0] for n in notes.notes], dtype=np.float64)  # sorted: notes are
    grid = _quantize(onsets, settings)
    keys, first = np.unique(grid, return_index=True)  # one group per quantised onset, its first note
    loudest = np.maximum.reduceat(np.array(notes.velocities, dtype=np.int64), first)
    if len(keys) != sum(1 for pitches, _ in events if pitches):
        return [(NO_VELOCITY, NO_TIMING)] * len(events)  # not expected; never misalign
    played = onsets[first]
    offsets = np.rint(1000.0 * (_seconds(notes, played) - _seconds(notes, keys / TICKS)))
    offsets = np.clip(offsets, NO_TIMING + 1, 32767).astype(np.int64).tolist()
    velocities = loudest.tolist()
    out: list[tuple[int, int]] = []
    i = 0
    for pitches, _ in events:
        if pitches:
            out.append((velocities[i], offsets[i]))
            i += 1
        else:
            out.append((NO_VELOCITY, NO_TIMING))
    return out


def _quantize(beats: np.ndarray, settings: TokenizerSettings) -> np.ndarray:
    """`settings.quantize` over an array, with the same arithmetic (twelfths, ties earlier)."""
    whole = np.floor(beats)
    frac = (beats - whole) * TICKS
    points = np.array(settings._points)  # type: ignore[attr-defined]
    index = np.searchsorted(np.array(settings._midpoints), frac, side="left")  # type: ignore[attr-defined]
    return whole.astype(np.int64) * TICKS + points[index]


def _seconds(notes: MidiNotes, beats: np.ndarray) -> np.ndarray:
    """Beats → seconds through the file's tempo map (vectorised `MidiNotes.seconds_at`)."""
    at, bpm, start = [0.0], [120.0], [0.0]
    for change, new_bpm in notes.tempos:
        start.append(start[-1] + (change - at[-1]) * 60.0 / bpm[-1])
        at.append(change)
        bpm.append(new_bpm)
    at_a, bpm_a, start_a = np.array(at), np.array(bpm), np.array(start)
    i = np.searchsorted(at_a, beats, side="left") - 1  # the last change strictly before (seconds_at's rule)
    i = np.maximum(i, 0)
    return start_a[i] + (beats - at_a[i]) * 60.0 / bpm_a[i]


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
