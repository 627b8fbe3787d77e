"""A MIDI file played as the player, in real time: for practising against a recorded part, for
demos, and for machines with no MIDI hardware. It feeds the same door a keyboard port does."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import mido

from liveduet.errors import MidiFileError
from liveduet.live.clock import Clock
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
    """Plays the events into `callback` at their times from `start()`; `done` is set at the end."""

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

    def _run(self) -> None:
        t0 = self.clock.now() + LEAD_IN_S
        for offset, msg in self.events:
            due = t0 + offset
            while not self._stop.is_set():
                left = due - self.clock.now()
                if left <= 0:
                    break
                self.clock.wait(self._stop, left)
            if self._stop.is_set():
                break
            self.callback(msg)
        self.done.set()

    def close(self) -> None:
        self.stop()
