"""Phrases as the views show them: token names back into events, and their key and chord by music21.

Shared by the terminal dashboard and the web studio. music21 costs tens of milliseconds, far too
much for the engine thread (or for any thread of the daemon: pure Python holds the GIL), so the
live views ask a worker process through `HarmonyCache` and cache by input.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from liveduet.errors import VocabularyError
from liveduet.music.tokens import NOTE_NAMES, REST_NAME, TICKS, parse_pitch

KEY_EVERY_S = 0.5  # music21 key analysis costs ~30 ms: at most twice a second while a call grows

Event = tuple[tuple[int, ...], int]  # (pitches, duration in twelfths of a beat), as in music.tokens


def import_music21() -> None:
    """A worker process's initializer: niced below the duet, import music21 at once, while the player
    has barely begun."""
    import contextlib
    import os

    with contextlib.suppress(OSError, AttributeError):
        os.nice(10)  # names on a screen matter less than notes on time: yield the CPU to the daemon
    with contextlib.suppress(ImportError):
        import music21.chord  # noqa: F401
        import music21.stream  # noqa: F401


# ---- tokens → events ----------------------------------------------------------------------------


def parse_token_names(names: Iterable[str]) -> list[Event]:
    """Token names ("E4+G4+C5", "R", "d1/2", ...) → (pitches, twelfths) events.

    The snapshot holds only the last tokens of a phrase, so it may start with a duration: a
    duration without a pitch before it is skipped, as are specials and a trailing pitch.
    """
    events: list[Event] = []
    pending: tuple[int, ...] | None = None
    for name in names:
        if name.startswith("d") and len(name) > 1 and name[1].isdigit():
            if pending is not None:
                events.append((pending, max(1, round(Fraction(name[1:]) * TICKS))))
                pending = None
        elif name == REST_NAME:
            pending = ()
        elif name.startswith("<"):
            continue
        else:
            try:
                pending = tuple(sorted(parse_pitch(p) for p in name.split("+")))
            except VocabularyError:
                pending = None
    return events


# ---- music theory (off the hot path, cached) ----------------------------------------------------


def _display(name: str) -> str:
    """music21 spells flats with '-' ("B-"): show them as 'b'."""
    return name.replace("-", "b")


@functools.lru_cache(maxsize=256)
def key_name(names: tuple[str, ...]) -> str:
    """The key of a token sequence by music21's Krumhansl–Schmuckler analysis ("G major"), or "—"."""
    events = [e for e in parse_token_names(names) if e[0]]
    if not events:
        return "—"
    from music21 import chord, note, stream  # ~0.7 s to import: only once a phrase is there

    s = stream.Stream()
    for pitches, dur in events:
        ql = dur / TICKS
        s.append(note.Note(pitches[0], quarterLength=ql) if len(pitches) == 1
                 else chord.Chord(pitches, quarterLength=ql))
    try:
        k = s.analyze("key")
    except Exception:  # music21 raises assorted errors on degenerate input; a name is not worth a crash
        return "—"
    return f"{_display(k.tonic.name)} {k.mode}"


@functools.lru_cache(maxsize=256)
def chord_name(pitches: tuple[int, ...]) -> str:
    """A pitch set's name by music21 ("C major triad", "G dominant seventh chord"), or "—"."""
    if not pitches:
        return "—"
    classes = {p % 12 for p in pitches}
    if len(classes) == 1:
        return NOTE_NAMES[min(pitches) % 12] + " (one note)"
    from music21 import chord

    try:
        c = chord.Chord(list(pitches))
        root, common = c.root().name, c.commonName
    except Exception:  # as above
        return "—"
    if len(classes) == 2:  # a dyad reads better as "minor third on C" than music21's "Minor Third above C"
        return f"{common.lower()} on {_display(c.bass().name)}"
    return f"{_display(root)} {common}"


def current_pitches(events: Sequence[Event], beats: float = 1.0) -> tuple[int, ...]:
    """The pitches struck in the last `beats` of the phrase (at least its last pitched event):
    the "current chord" of a melody is the harmony its recent notes outline."""
    window = round(beats * TICKS)
    out: set[int] = set()
    end = sum(d for _, d in events)
    pos = end
    for pitches, dur in reversed(events):
        pos -= dur
        if end - pos > window and out:
            break
        out.update(pitches)
    return tuple(sorted(out))


@dataclass(frozen=True)
class Harmony:
    key: str
    chord: str


def harmony_names(key_tokens: tuple[str, ...], chord_tokens: tuple[str, ...]) -> tuple[str, str]:
    """(key, chord) names by music21: what the harmony worker process computes."""
    return key_name(key_tokens), chord_name(current_pitches(parse_token_names(chord_tokens)))


class HarmonyCache:
    """Key and chord names for the dashboard: cached by input; the key (the costly part) is
    re-analysed at most every `key_every_s` while a phrase grows, the chord on every change.

    With an `executor` (the live dashboard: one worker *process*) music21 runs there and `names`
    never waits: it returns the latest finished answer. music21 is pure Python: ~30 ms of it in a
    thread of the daemon held the GIL long enough to make scheduled notes 80 ms late.
    """

    def __init__(self, key_every_s: float = KEY_EVERY_S, clock: Callable[[], float] = time.monotonic,
                 executor: Any = None) -> None:
        self.key_every_s = key_every_s
        self.clock = clock
        self.executor = executor
        self._key_input: tuple[str, ...] | None = None
        self._chord_input: tuple[str, ...] | None = None
        self._key = "—"
        self._chord = "—"
        self._key_at = -math.inf
        self._pending: Any = None

    def names(self, key_tokens: tuple[str, ...], chord_tokens: tuple[str, ...]) -> Harmony:
        now = self.clock()
        key_due = key_tokens != self._key_input and now - self._key_at >= self.key_every_s
        if self.executor is None:
            if key_due:
                self._key_input, self._key, self._key_at = key_tokens, key_name(key_tokens), now
            return Harmony(self._key, chord_name(current_pitches(parse_token_names(chord_tokens))))
        if self._pending is not None and self._pending.done():
            try:
                self._key, self._chord = self._pending.result()
            except Exception:  # a dead worker: keep the last names rather than break the view
                pass
            self._pending = None
        if self._pending is None and (key_due or chord_tokens != self._chord_input):
            ask_key = key_tokens if key_due else self._key_input or ()
            self._key_input, self._chord_input = ask_key, chord_tokens
            if key_due:
                self._key_at = now
            try:
                self._pending = self.executor.submit(harmony_names, ask_key, chord_tokens)
            except RuntimeError:  # shut down
                pass
        return Harmony(self._key, self._chord)


def harmony_inputs(snapshot: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Which tokens name the key (the last call and its answer together) and the current chord
    (the part sounding now: the answer while answering, else the call)."""
    e = snapshot.engine
    key_tokens = tuple(e.call_tokens) + tuple(e.answer_tokens)
    chord_tokens = tuple(e.answer_tokens) if e.state == "answering" or not e.call_tokens else tuple(e.call_tokens)
    return key_tokens, chord_tokens
