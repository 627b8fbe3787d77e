"""The MIDI input door: rtmidi's callback stamps each message and enqueues it, nothing more.

Hygiene messages (clock, transport, sysex, reset, active sensing, MTC …) are dropped here so no
later stage — the model, the thru path, the recording — ever sees them. Transport messages can go to
an optional `on_clock` hook for a future MIDI-clock follower.

Invariant: every note-on that gets into the queue gets its note-off in too, whatever the load.
Under overload (the consumer behind, the queue nearly full) note-ons and other optional messages
are dropped first; the last eighth of the queue is kept for what ends a sound — the note-off of a
note that got in, the release of a pedal that got in, all-notes-off on a channel with something
sounding — and those are never dropped (there can be at most one per sounding note and pedal, so
the queue stays bounded). The note-off of a note-on that was dropped is optional itself.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import mido

from liveduet.clock import Clock

# Channel voice messages: the only kind the live path and the recording use.
CHANNEL_TYPES = frozenset(
    {"note_off", "note_on", "polytouch", "control_change", "program_change", "aftertouch", "pitchwheel"}
)
# Transport / timing: forwarded to `on_clock` when one is given.
CLOCK_TYPES = frozenset({"clock", "start", "stop", "continue", "songpos"})

Stamped = tuple[float, Any]  # (clock time, a message — or, on the engine's queue, a command)


def clean(msg: mido.Message) -> mido.Message | None:
    """The message as the live path wants it, or None for hygiene messages.

    A velocity-0 note_on becomes a note_off (mido keeps it as note_on; every stage would otherwise
    have to remember the convention).
    """
    if msg.type not in CHANNEL_TYPES:
        return None
    if msg.type == "note_on" and msg.velocity == 0:
        return mido.Message("note_off", channel=msg.channel, note=msg.note, velocity=0, time=msg.time)
    return msg


class Inbox:
    """A bounded FIFO of `(t, message)` between the rtmidi thread and the router thread.

    `put(item, essential)` admits anything while fewer than `maxsize - reserve` items wait, then only
    essential items, which are always admitted (the Listener bounds how many there can be)."""

    def __init__(self, maxsize: int, reserve: int) -> None:
        self.maxsize = maxsize
        self.reserve = reserve
        self._items: deque[Stamped] = deque()
        self._ready = threading.Condition(threading.Lock())

    def put(self, item: Stamped, essential: bool = False) -> bool:
        with self._ready:
            if not essential and len(self._items) >= self.maxsize - self.reserve:
                return False
            self._items.append(item)
            self._ready.notify()
            return True

    def get(self, timeout: float | None = None) -> Stamped | None:
        with self._ready:
            if not self._ready.wait_for(lambda: self._items, timeout):
                return None
            return self._items.popleft()

    def get_nowait(self) -> Stamped | None:
        with self._ready:
            return self._items.popleft() if self._items else None

    def qsize(self) -> int:
        with self._ready:
            return len(self._items)

    def empty(self) -> bool:
        return self.qsize() == 0


class Gate:
    """A bounded queue that never drops what ends a sound: an `Inbox` plus the bookkeeping of what
    got in and has not ended yet (notes, pedals). Any thread may `offer`.

    The Listener is one (the input door); the session's queue to the engine thread is another, so
    a flood the router passes on (thru and the recording take everything) cannot pile up in front
    of a slower engine either."""

    def __init__(self, maxsize: int) -> None:
        self.queue = Inbox(maxsize, reserve=maxsize // 8)
        self.dropped = 0
        # A lock, since for a moment during a reconnect two ports (two rtmidi threads) may feed one gate.
        self._admit_lock = threading.Lock()
        self._sounding: Counter[tuple[int, int]] = Counter()  # (channel, note) -> note-ons in
        self._pedal_down: set[int] = set()  # channels whose sustain pedal went down

    def offer(self, t: float, item: Any, kept: mido.Message | None = None, essential: bool = False) -> bool:
        """Queue `(t, item)` unless the queue is nearly full and `kept` (the message in its cleaned
        form) is optional; `essential` items (commands, say) always get in. False when dropped."""
        with self._admit_lock:
            if self.queue.put((t, item), essential or (kept is not None and self._ends_a_sound(kept))):
                if kept is not None:
                    self._admitted(kept)
                return True
            self.dropped += 1
            return False

    def _ends_a_sound(self, msg: mido.Message) -> bool:
        """Whether dropping `msg` could leave a sound hanging (a stuck note, a held pedal)."""
        if msg.type == "note_off":
            return self._sounding[(msg.channel, msg.note)] > 0
        if msg.type == "control_change":
            if msg.control == 64 and msg.value < 64:
                return msg.channel in self._pedal_down
            if msg.control in (120, 123):  # all sound off, all notes off
                return msg.channel in self._pedal_down or any(
                    n > 0 for (ch, _), n in self._sounding.items() if ch == msg.channel)
        return False

    def _admitted(self, msg: mido.Message) -> None:
        if msg.type == "note_on":
            self._sounding[(msg.channel, msg.note)] += 1
        elif msg.type == "note_off":
            key = (msg.channel, msg.note)
            if self._sounding[key] > 0:
                self._sounding[key] -= 1
            if not self._sounding[key]:
                del self._sounding[key]
        elif msg.type == "control_change":
            if msg.control == 64:
                (self._pedal_down.add if msg.value >= 64 else self._pedal_down.discard)(msg.channel)
            elif msg.control in (120, 123):
                for key in [k for k in self._sounding if k[0] == msg.channel]:
                    del self._sounding[key]

    def get(self, timeout: float | None = None) -> Stamped | None:
        """Next `(t, message)`, or None if none arrives within `timeout` seconds."""
        return self.queue.get(timeout=timeout)

    def drain(self) -> list[Stamped]:
        """Everything queued now, without waiting."""
        out: list[Stamped] = []
        while (item := self.queue.get_nowait()) is not None:
            out.append(item)
        return out


class Listener(Gate):
    """Stamps incoming messages with `clock.now()` into a bounded queue of `(t, message)`.

    Pass `listener.callback` as the port callback. When the consumer falls behind, optional messages
    are dropped and counted rather than growing memory without bound; see the module doc for what
    is never dropped.
    """

    def __init__(
        self,
        clock: Clock,
        maxsize: int = 4096,
        on_clock: Callable[[float, mido.Message], None] | None = None,
    ) -> None:
        super().__init__(maxsize)
        self._clock = clock
        self.on_clock = on_clock
        self.filtered = 0  # hygiene messages

    def callback(self, msg: mido.Message) -> None:
        """Runs on rtmidi's thread: stamp first (the stamp is the point of being fast), then enqueue."""
        t = self._clock.now()
        kept = clean(msg)
        if kept is None:
            self.filtered += 1
            if self.on_clock is not None and msg.type in CLOCK_TYPES:
                self.on_clock(t, msg)
            return
        # The original goes on, so thru can pass the player's bytes unchanged; consumers that
        # need the normalised form call `clean` (the session does before the engine).
        self.offer(t, msg, kept)
