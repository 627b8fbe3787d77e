"""A MIDI file played as the player, in real time: for practising against a recorded part, for
demos, and for machines with no MIDI hardware. It feeds the same door a keyboard port does."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import mido

from liveduet.clock import Clock
from liveduet.errors import MidiFileError
from liveduet.music.midifile import read_midi
from liveduet.worker import Worker

LEAD_IN_S = 0.5  # a moment to settle before the first note


def load_player_file(path: str | Path) -> list[tuple[float, mido.Message]]:
    """(seconds from start, channel message) for every channel message, tempo map applied."""
    try:
        # The capped reader first: it refuses in milliseconds what mido would chew on for a minute
        # (a 400 KB variable-length number) and says why in words.
        read_midi(path)
    except MidiFileError as err:
        raise MidiFileError(f"{path}: {err}") from err
    try:
        mid = mido.MidiFile(path)
        events = []
        t = 0.0
        for msg in mid:  # iterating a MidiFile merges tracks and converts ticks to seconds
            t += msg.time
            if not msg.is_meta and msg.type not in ("sysex", "clock", "start", "stop", "continue", "reset"):
                events.append((t, msg.copy(time=0)))
    except FileNotFoundError as err:
        raise MidiFileError(f"no MIDI file at {path}") from err
    except (OSError, EOFError, ValueError, KeyError, IndexError) as err:
        raise MidiFileError(f"{path}: cannot read MIDI file ({str(err) or type(err).__name__})") from err
    if not any(m.type == "note_on" and m.velocity > 0 for _, m in events):
        raise MidiFileError(f"{path}: the file has no notes to play")
    return events


class FilePlayer(Worker):
    """Plays the events into `callback` at their times from `begin()`; `done` is set at the end.

    Its own thread (`start`) or the caller's (`begin`, then `pump(now)` as simulated time passes):
    the same code decides what is due."""

    thread_name = "liveduet-fileplayer"

    def __init__(self, events: list[tuple[float, mido.Message]], callback: Callable[[mido.Message], None],
                 clock: Clock, name: str = "file") -> None:
        self.events = events
        self.callback = callback
        self.clock = clock
        self.name = name
        self.done = threading.Event()
        Worker.__init__(self)
        self.duration = events[-1][0] if events else 0.0
        self._t0: float | None = None
        self._next = 0  # index of the next event to play

    def begin(self, now: float | None = None) -> None:
        """Start the timeline: the first event plays LEAD_IN_S from `now`."""
        self._t0 = (self.clock.now() if now is None else now) + LEAD_IN_S

    def pump(self, now: float) -> float | None:
        """Play everything due by `now`; the due time of the next event, None when all are played."""
        if self._t0 is None:
            self.begin(now)
        assert self._t0 is not None
        while self._next < len(self.events) and not self._stop.is_set():
            offset, msg = self.events[self._next]
            if self._t0 + offset > now:
                return self._t0 + offset
            self._next += 1
            self.callback(msg)
        self.done.set()
        return None

    def _run(self) -> None:
        self.begin()
        while not self._stop.is_set():
            due = self.pump(self.clock.now())
            if due is None:
                break
            self.clock.wait(self._stop, due - self.clock.now())
        self.done.set()

    def close(self) -> None:
        self.stop()
