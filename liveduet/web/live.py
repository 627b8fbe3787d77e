"""The live page's feed: a session's snapshot and its queued answer notes as JSON frames and diffs.

    Session.snapshot() ─┐
    Scheduler's queue ──┼─ LiveFeed.frame() (the web server's thread, ≤ 10 Hz) ─ diff ─> websocket
    HarmonyCache ───────┘   (key and chord: music21 in a worker process)

Nothing here runs on the real-time path or takes one of its locks: the snapshot is immutable and
published by the engine thread; the scheduler's queue is read as one list copy (atomic under the
GIL) — never under its lock, which the scheduler thread holds while it sends. Answer notes are
queued `answer.lookahead_s` (0.4 s) ahead of their due times, so a 10 Hz pull sees each before it
sounds: the page draws them and, with its WebAudio toggle on, plays them on the AudioContext clock.
The player's own notes (`session.played`, copied the same way) are known only once played: they
reach the page up to a frame (0.1 s) late and, with the second toggle on, sound on arrival.

Times in a frame are seconds on the session's clock since the feed began (`t`): the page maps
them onto its own clock from the frames' arrival.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from liveduet.live import commands
from liveduet.music.tokens import TICKS
from liveduet.ui.harmony import Harmony, HarmonyCache, harmony_inputs, parse_token_names

HZ = 10  # frames per second at most: the dashboard's rate
THRU_TAG = "thru"  # the scheduler's tag for the player's own notes (live/scheduler.py)
MAX_WARNINGS = 5
FORGET_S = 30.0  # notes this old are forgotten by the feed (the page keeps its own window)
PLAYER_STALE_S = 1.0  # the player's notes older than this are not sent: on arrival they would sound wrong


_events = functools.lru_cache(maxsize=64)(parse_token_names)  # a call's tokens change a few times a second


def call_notes(tokens: tuple[str, ...], end_t: float, bpm: float) -> list[list[float]]:
    """The call's token names as [on, off, pitch] in seconds, placed so that the phrase ends at `end_t`
    (the snapshot holds the newest tokens only: their end is what is known)."""
    events = _events(tokens)
    period = 60.0 / bpm if bpm > 0 else 0.5
    total = sum(d for _, d in events)
    out: list[list[float]] = []
    pos = 0
    for pitches, dur in events:
        on = end_t - (total - pos) / TICKS * period
        for p in pitches:
            out.append([round(on, 3), round(on + dur / TICKS * period, 3), p])
        pos += dur
    return out


def queued_notes(heap: list, t0: float, click_channel: int | None = None) -> tuple[list[dict], set[int]]:
    """Answer notes in a copy of the scheduler's queue: (notes, the ids of every queued note-on).

    A note is its note-on's sequence number (the id), due times in seconds since `t0`, pitch,
    velocity and channel; its end is the first queued note-off of the same key and tag after it
    (none queued: a quarter second). The player's thru notes and the metronome's clicks are not
    answer notes. One pass over the queue in time order."""
    notes: list[dict] = []
    ids: set[int] = set()
    waiting: dict[tuple, list[dict]] = {}  # (tag, channel, note) → its notes still without an end
    for due, seq, msg, tag in sorted(heap):
        if tag == THRU_TAG or msg.type not in ("note_on", "note_off") or msg.channel == click_channel:
            continue
        key = (tag, msg.channel, msg.note)
        if msg.type == "note_on" and msg.velocity > 0:
            note = {"id": seq, "on": round(due - t0, 4), "off": None, "pitch": msg.note, "vel": msg.velocity,
                    "ch": msg.channel}
            notes.append(note)
            ids.add(seq)
            waiting.setdefault(key, []).append(note)
        elif waiting.get(key):
            waiting[key].pop(0)["off"] = round(due - t0, 4)
    for note in notes:
        if note["off"] is None:
            note["off"] = round(note["on"] + 0.25, 4)
    return notes, ids


def diff(prev: dict, cur: dict) -> dict:
    """The keys of `cur` whose values differ from `prev` (a frame's update)."""
    missing = object()
    return {k: v for k, v in cur.items() if prev.get(k, missing) != v}


class LiveFeed:
    """One page's view of a running session: `update()` returns what changed since the last call.

    `session` needs `snapshot()`, `clock`, `scheduler`, `settings` and `played` (live/session.py's Session).
    `harmony` is shared by every page (one music21 worker); `modes` is the mode list the page offers.
    """

    def __init__(self, session: Any, harmony: HarmonyCache | None = None,
                 modes: tuple[str, ...] = commands.MODES, clock: Callable[[], float] | None = None) -> None:
        self.session = session
        self.harmony = harmony or HarmonyCache()
        self.modes = modes
        self._now = clock or session.clock.now
        self.t0 = self._now()
        self._sent: dict = {}
        self._seen: dict[int, float] = {}  # note ids already sent → their end (to forget them later)
        self._call_end = 0.0
        self._call_tokens: tuple[str, ...] = ()
        self._call_notes: list[list[float]] = []
        self._past: list[list[float]] = []  # earlier calls' notes, for the roll's recent past
        self._state_was = ""
        self._played_n = -1  # the last of the player's note messages sent

    def frame(self) -> dict:
        """The whole state now, as JSON-ready values (notes: only those not sent before)."""
        now = self._now()
        t = round(now - self.t0, 4)
        snap = self.session.snapshot()
        out: dict[str, Any] = {"t": t, "modes": list(self.modes)}
        if snap is not None:
            out.update(self._state(snap, t))
        heap = list(getattr(self.session.scheduler, "_heap", ()))  # one C-level copy: see the module doc
        click = self.session.settings.practice.click_channel if self.session.settings.practice.metronome else None
        notes, ids = queued_notes(heap, self.t0, click)
        fresh = [n for n in notes if n["id"] not in self._seen]
        for n in fresh:
            self._seen[n["id"]] = n["off"]
        for key in [k for k, off in self._seen.items() if off < t - FORGET_S]:
            del self._seen[key]
        out["queued"] = sorted(i for i in ids if i in self._seen)
        out["notes"] = fresh
        out["player"] = self._player(now)
        return out

    def _player(self, now: float) -> list[list]:
        """The player's note messages since the last frame: [number, t, pitch, velocity (0: off), channel]."""
        try:
            played = tuple(self.session.played)  # one C-level copy, as the queue's
        except RuntimeError:  # appended to during the copy: the next frame takes them
            return []
        out = [[n, round(t - self.t0, 4), m.note, m.velocity if m.type == "note_on" else 0, m.channel]
               for n, t, m in played if n > self._played_n and now - t < PLAYER_STALE_S]
        if played:
            self._played_n = played[-1][0]
        return out

    def _state(self, snap: Any, t: float) -> dict:
        e = snap.engine
        if e.state == "calling" and self._state_was != "calling" and self._call_notes:
            # A new call: the last one stays on the roll (it scrolls away), this one starts afresh.
            self._past = [n for n in self._past if n[1] > t - FORGET_S] + self._call_notes
        self._state_was = e.state
        if e.state == "calling" or e.call_tokens != self._call_tokens and e.state != "listening":
            self._call_end = t  # the call's newest token ends about now
        self._call_tokens = e.call_tokens
        self._call_notes = call_notes(e.call_tokens, self._call_end, e.bpm)
        harmony: Harmony = self.harmony.names(*harmony_inputs(snap))
        return {
            "state": e.state, "beat": round(e.beat, 3), "bpm": round(e.bpm, 2), "clock_source": e.clock_source,
            "key": harmony.key, "chord": harmony.chord, "temperature": e.temperature, "length": e.length_ratio,
            "mode": e.mode, "lock": e.lock, "variation": e.variation,
            "complexity": e.complexity, "calls": e.calls, "answers": e.answers,
            "player_notes": e.player_notes, "answer_notes": e.answer_notes,
            "step_p50_ms": round(e.step_p50_ms, 3), "step_p99_ms": round(e.step_p99_ms, 3),
            "late_p99_ms": round(snap.late_p99_ms, 3), "dropped": snap.dropped, "elapsed_s": round(snap.elapsed_s),
            "recording": snap.recording, "input": snap.input_name, "output": snap.output_name,
            "input_ok": snap.input_ok, "output_ok": snap.output_ok,
            "warnings": list(e.warnings[-MAX_WARNINGS:]),
            "call": self._call_notes, "past_calls": self._past,
        }

    def update(self) -> dict:
        """What changed since the last update (the first: everything); new notes always."""
        cur = self.frame()
        notes, player = cur.pop("notes"), cur.pop("player")
        out = diff(self._sent, cur)
        self._sent = cur
        out["t"] = cur["t"]
        if notes:
            out["notes"] = notes
        if player:
            out["player"] = player
        return out
