"""Silencing a synth: the panic message list (pure) and a paced sender.

Order matters: fluidsynth's All Notes Off (CC 123) respects the sustain pedal, so CC 64 = 0 goes
first, then CC 123, then All Sound Off (CC 120). Pacing matters too: JACK silently loses messages
from bursts of a few hundred, while 64 messages then a 3 ms pause delivers everything.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence

import mido

from liveduet.clock import Clock

BURST = 64  # messages per burst
PAUSE_S = 0.003  # pause between bursts

SUSTAIN = 64
ALL_SOUND_OFF = 120
ALL_NOTES_OFF = 123


def note_offs(notes: Iterable[tuple[int, int]]) -> list[mido.Message]:
    """A note_off for each (channel, note), in sorted order so output is deterministic."""
    return [mido.Message("note_off", channel=ch, note=n, velocity=0) for ch, n in sorted(set(notes))]


def channel_silence(channels: Iterable[int]) -> list[mido.Message]:
    """Per channel, ascending: sustain off, all notes off, all sound off."""
    return [
        mido.Message("control_change", channel=ch, control=cc, value=0)
        for ch in sorted(set(channels))
        for cc in (SUSTAIN, ALL_NOTES_OFF, ALL_SOUND_OFF)
    ]


def panic_messages(open_notes: Iterable[tuple[int, int]], channels: Iterable[int]) -> list[mido.Message]:
    """Note-offs for every open note, then the silence controllers on every used channel."""
    notes = list(open_notes)
    used = set(channels) | {ch for ch, _ in notes}
    return note_offs(notes) + channel_silence(used)


def send_paced(
    send: Callable[[mido.Message], None],
    msgs: Sequence[mido.Message],
    clock: Clock,
    burst: int = BURST,
    pause: float = PAUSE_S,
) -> int:
    """Send `msgs` in bursts of `burst` with `pause` seconds between bursts; return how many were sent."""
    never = threading.Event()  # pauses are not interruptible: a panic must finish
    sent = 0
    for start in range(0, len(msgs), burst):
        if start:
            clock.wait(never, pause)
        for msg in msgs[start : start + burst]:
            send(msg)
            sent += 1
    return sent
