"""The MIDI input door: rtmidi's callback stamps each message and enqueues it, nothing more.

Hygiene messages (clock, transport, sysex, reset, active sensing, MTC …) are dropped here so no
later stage — the model, the thru path, the recording — ever sees them. Transport messages can go to
an optional `on_clock` hook for a future MIDI-clock follower.
"""

from __future__ import annotations

import queue
from collections.abc import Callable

import mido

from liveduet.live.clock import Clock

# Channel voice messages: the only kind the live path and the recording use.
CHANNEL_TYPES = frozenset(
    {"note_off", "note_on", "polytouch", "control_change", "program_change", "aftertouch", "pitchwheel"}
)
# Transport / timing: forwarded to `on_clock` when one is given.
CLOCK_TYPES = frozenset({"clock", "start", "stop", "continue", "songpos"})

Stamped = tuple[float, mido.Message]


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


class Listener:
    """Stamps incoming messages with `clock.now()` into a bounded queue of `(t, message)`.

    Pass `listener.callback` as the port callback. When the consumer falls behind, new messages are
    dropped and counted rather than growing memory without bound.
    """

    def __init__(
        self,
        clock: Clock,
        maxsize: int = 4096,
        on_clock: Callable[[float, mido.Message], None] | None = None,
    ) -> None:
        self._clock = clock
        self.queue: queue.Queue[Stamped] = queue.Queue(maxsize)
        self.on_clock = on_clock
        self.dropped = 0  # queue full
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
        try:
            # The original goes on, so thru can pass the player's bytes unchanged; consumers that
            # need the normalised form call `clean` (the session does before the engine).
            self.queue.put_nowait((t, msg))
        except queue.Full:
            self.dropped += 1

    def get(self, timeout: float | None = None) -> Stamped | None:
        """Next `(t, message)`, or None if none arrives within `timeout` seconds."""
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def drain(self) -> list[Stamped]:
        """Everything queued now, without waiting."""
        out: list[Stamped] = []
        while True:
            try:
                out.append(self.queue.get_nowait())
            except queue.Empty:
                return out
