"""Following standard MIDI clock (24 ticks per quarter note, start/stop/continue/song position).

Pure: `feed(t, msg)` with stamped transport messages; `bpm`, `running` and `beat_zero` (the time of
beat 0 of the sender's grid) are what the engine reads. The tempo is the median tick interval over
the last beat, so one late tick (a busy DAW) does not jerk it.
"""

from __future__ import annotations

import statistics
from collections import deque

import mido

PPQN = 24


class MidiClockFollower:
    def __init__(self) -> None:
        self.running = False
        self.ticks = 0  # since beat 0 of the song
        self.beat_zero: float | None = None
        self._last: float | None = None
        self._intervals: deque[float] = deque(maxlen=PPQN)

    @property
    def bpm(self) -> float | None:
        if len(self._intervals) < PPQN // 2:
            return None
        return 60.0 / (PPQN * statistics.median(self._intervals))

    def feed(self, t: float, msg: mido.Message) -> None:
        if msg.type == "start":
            self.running, self.ticks, self._last = True, 0, None
            self.beat_zero = t
        elif msg.type == "continue":
            self.running, self._last = True, None
        elif msg.type == "stop":
            self.running = False
        elif msg.type == "songpos":
            self.ticks = msg.pos * 6  # song position counts 16th notes
        elif msg.type == "clock":
            if self._last is not None:
                dt = t - self._last
                if 0 < dt < 0.1:  # above 25 bpm; a longer gap is a pause, not a tempo
                    self._intervals.append(dt)
            self._last = t
            if self.running:
                self.ticks += 1
                bpm = self.bpm
                if bpm:
                    # Re-anchor on every tick: beat 0 lies `ticks` ticks before now at this tempo.
                    self.beat_zero = t - self.ticks * 60.0 / (bpm * PPQN)
