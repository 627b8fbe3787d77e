"""The session's beat grid: count-in, metronome and MIDI clock.

Without any of them there is no global grid: each call's beats count from its first note. With one,
calls and answers sit on the grid's beats (`t0 + n · period`). Clicks are scheduled ahead on that
absolute grid, so they never drift. Invariant: a click is never scheduled in the past by more than
half a beat (after a stall the missed clicks are skipped, not burst).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import mido

from liveduet.live.midiclock import MidiClockFollower
from liveduet.live.scheduler import Scheduler
from liveduet.live.settings import LiveSettings

LEAD_IN_S = 0.3  # the first click comes this long after the session starts


class Grid:
    def __init__(self, settings: LiveSettings, log: Callable[[str], None] = lambda line: None) -> None:
        self.s = settings
        self.log = log
        self.t0: float | None = None  # beat 0 of the grid, when there is one
        self.next_click = 0
        self.clicks_until: int | None = None  # last click index to play (count-in only), None: forever
        self.midi_clock = MidiClockFollower() if settings.tempo.follow_clock else None

    def start(self, now: float, bpm: float) -> None:
        """The session starts: a count-in and/or the metronome put a grid in place."""
        r = self.s.practice
        if r.count_in_bars or r.metronome:
            self.t0 = now + LEAD_IN_S
            self.next_click = 0
            self.clicks_until = None if r.metronome else r.count_in_bars * r.beats_per_bar - 1
            self.log(f"{'count-in' if r.count_in_bars else 'metronome'} at {bpm:.0f} bpm")

    def snap(self, t: float, bpm: float) -> float:
        """The grid beat a call starting at `t` belongs to (t itself without a grid)."""
        if self.t0 is None:
            return t
        period = 60.0 / bpm
        return self.t0 + math.floor((t - self.t0) / period + 0.1) * period

    def click(self, now: float, bpm: float, horizon_s: float, scheduler: Scheduler) -> None:
        """Schedule the clicks due before `now + horizon_s`."""
        if self.t0 is None:
            return
        r = self.s.practice
        period = 60.0 / bpm
        while self.clicks_until is None or self.next_click <= self.clicks_until:
            due = self.t0 + self.next_click * period
            if due >= now + horizon_s:
                break
            if due >= now - period / 2:  # after a stall, skip clicks rather than burst them
                note = r.click_accent if self.next_click % r.beats_per_bar == 0 else r.click_note
                ch = r.click_channel
                scheduler.schedule(due, mido.Message("note_on", channel=ch, note=note, velocity=r.click_velocity),
                                   "metronome")
                scheduler.schedule(due + min(0.05, period / 4), mido.Message("note_off", channel=ch, note=note),
                                   "metronome")
            self.next_click += 1

    def follow(self, t: float, msg: mido.Message) -> float | None:
        """A MIDI clock message; the tempo it sets (bpm, unclamped), or None while it sets none."""
        if self.midi_clock is None:
            return None
        self.midi_clock.feed(t, msg)
        bpm = self.midi_clock.bpm
        if not (self.midi_clock.running and bpm and self.midi_clock.beat_zero is not None):
            return None
        if self.t0 is None:
            self.log(f"following MIDI clock at {bpm:.1f} bpm")
        self.t0 = self.midi_clock.beat_zero
        if self.clicks_until is None and not self.s.practice.metronome:
            self.clicks_until = -1  # MIDI clock gives a grid, not clicks
            self.next_click = 0
        return bpm

    @property
    def following_clock(self) -> bool:
        return self.midi_clock is not None and self.midi_clock.running
