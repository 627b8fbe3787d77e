"""Overload at the input door (issue #8, defect 6): when the queue is nearly full, note-ons and other
optional messages are dropped, never the note-off of a note that got in (it would sound through thru
until the session ended). A fake clock, no threads: the consumer is the test, draining when it likes."""

from __future__ import annotations

import random
from collections import Counter

import mido
import pytest

from liveduet.clock import ManualClock
from liveduet.live.listener import Listener, clean

MAXSIZE = 64


def on(note: int, ch: int = 0) -> mido.Message:
    return mido.Message("note_on", channel=ch, note=note, velocity=90)


def off(note: int, ch: int = 0, zero_velocity: bool = False) -> mido.Message:
    if zero_velocity:  # the running-status form many keyboards send
        return mido.Message("note_on", channel=ch, note=note, velocity=0)
    return mido.Message("note_off", channel=ch, note=note, velocity=0)


def cc(control: int, value: int, ch: int = 0) -> mido.Message:
    return mido.Message("control_change", channel=ch, control=control, value=value)


def hanging(got: list[mido.Message]) -> Counter[tuple[int, int]]:
    """Notes left sounding by what got through, in order (a note-off of a silent note ends nothing)."""
    sounding: Counter[tuple[int, int]] = Counter()
    for raw in got:
        msg = clean(raw)
        key = (msg.channel, getattr(msg, "note", -1))
        if msg.type == "note_on":
            sounding[key] += 1
        elif msg.type == "note_off" and sounding[key]:
            sounding[key] -= 1
    return +sounding


def fill(listener: Listener, clock: ManualClock, n: int) -> None:
    for i in range(n):
        clock.advance(1e-5)
        listener.callback(cc(1, i % 128))  # mod wheel: optional


def test_a_full_queue_drops_note_ons_but_lets_note_offs_of_sounding_notes_in() -> None:
    clock = ManualClock()
    listener = Listener(clock, maxsize=MAXSIZE)
    listener.callback(on(60))  # sounding before the flood
    fill(listener, clock, 200)
    assert listener.queue.qsize() == MAXSIZE - MAXSIZE // 8  # the reserve is kept free
    listener.callback(on(62))  # no room: dropped
    listener.callback(off(60))  # ends a sound that got in: in, into the reserve
    listener.callback(off(62))  # its note-on was dropped: optional, dropped
    got = [m for _, m in listener.drain()]
    assert got[0] == on(60) and got[-1] == off(60) and on(62) not in got and off(62) not in got
    assert listener.dropped == 200 + 1 - (MAXSIZE - MAXSIZE // 8) + 2


def test_pedal_release_and_all_notes_off_get_in_when_they_end_something() -> None:
    clock = ManualClock()
    listener = Listener(clock, maxsize=MAXSIZE)
    listener.callback(cc(64, 127, ch=1))  # pedal down on channel 2
    listener.callback(on(48, ch=2))
    fill(listener, clock, 200)
    listener.callback(cc(64, 0, ch=1))  # releases a pedal that is down: in
    listener.callback(cc(64, 0, ch=1))  # again: nothing to release, optional
    listener.callback(cc(123, 0, ch=2))  # all notes off where a note sounds: in
    listener.callback(cc(123, 0, ch=2))  # nothing sounds there any more: optional
    listener.callback(off(48, ch=2))  # already ended by all-notes-off: optional
    got = [m for _, m in listener.drain()]
    assert got[-2:] == [cc(64, 0, ch=1), cc(123, 0, ch=2)]


@pytest.mark.parametrize("seed", range(5))
def test_every_note_on_that_got_in_gets_its_note_off_in_under_a_flood(seed: int) -> None:
    """~75 k msgs/s from a player with many held notes, chords and zero-velocity offs, against a
    consumer that takes 1 message in 3: whatever was dropped, nothing is left hanging."""
    rng = random.Random(seed)
    clock = ManualClock()
    listener = Listener(clock, maxsize=MAXSIZE)
    held: list[tuple[int, int]] = []
    got: list[mido.Message] = []
    sent = 0
    for step in range(30_000):
        clock.advance(1 / 75_000)
        if held and (len(held) > 40 or rng.random() < 0.5):
            ch, note = held.pop(rng.randrange(len(held)))
            listener.callback(off(note, ch, zero_velocity=rng.random() < 0.5))
        elif rng.random() < 0.1:
            listener.callback(mido.Message("pitchwheel", pitch=rng.randrange(-8192, 8191)))
        else:
            key = (rng.randrange(2), rng.randrange(36, 96))
            held.append(key)
            listener.callback(on(key[1], key[0]))
        sent += 1
        if step % 3 == 0:
            item = listener.get(timeout=0)
            if item is not None:
                got.append(item[1])
        assert listener.queue.qsize() <= MAXSIZE + 2 * 60  # bounded: at most one off per sounding note
    for ch, note in held:  # the player lets go of everything
        listener.callback(off(note, ch))
    got += [m for _, m in listener.drain()]
    assert listener.dropped > sent // 3  # it was overloaded
    assert len(got) + listener.dropped == sent + len(held)
    assert hanging(got) == Counter()
    kinds = Counter(m.type for m in got)
    assert kinds["note_on"] > 1000
