"""The frame-accurate JACK output (io/jackout.py, io/jacktimed.c) without a server: the order of
hand-over, and the C callback driven through fake libjack functions."""

from __future__ import annotations

import ctypes

import pytest

from liveduet.io import jackout
from liveduet.io.jackout import Order, order_key

try:
    jackout.build_callback()
except jackout.JackOutputError as err:
    pytest.skip(f"the C callback cannot be built here: {err}", allow_module_level=True)

NOTE_ON, NOTE_OFF = bytes([0x90, 60, 90]), bytes([0x80, 60, 0])


def test_order_keys_share_one_note_and_one_controller():
    assert order_key(NOTE_ON) == order_key(NOTE_OFF) == order_key(bytes([0x90, 60, 0]))
    assert order_key(bytes([0x91, 60, 1])) != order_key(NOTE_ON)  # another channel
    assert order_key(bytes([0xB0, 64, 0])) != order_key(bytes([0xB0, 123, 0]))
    assert order_key(bytes([0xE0, 0, 64])) == (0, 0xE0)


def test_a_message_sent_now_never_goes_before_one_handed_over_earlier_for_its_note():
    order = Order()
    on = order.place(NOTE_ON, 10.005, now=False)  # handed over early, due in 5 ms
    off = order.place(NOTE_OFF, 10.0, now=True)  # a barge-in's note-off, now
    assert off[0] == on[0] and off[1] > on[1]  # same time, later in sequence: after it
    other = order.place(bytes([0x90, 61, 90]), 10.0, now=True)
    assert other[0] == 10.0  # another note is not held back


def test_a_late_note_goes_after_what_was_sent_now():
    order = Order()
    thru = order.place(bytes([0x90, 50, 90]), 10.0, now=True)
    late = order.place(NOTE_ON, 9.99, now=False)  # due before the thru was sent: already late
    assert (late[0], late[1]) > thru


class FakeJack:
    """libjack's four functions as ctypes callbacks: a cycle clock set by the test, a recording write."""

    def __init__(self, capacity: int = 1000) -> None:
        self.start, self.end = 0, 0  # microseconds
        self.written: list[tuple[int, bytes]] = []
        self.cleared = 0
        self.capacity = capacity
        self._buf = ctypes.create_string_buffer(8)
        proto = ctypes.CFUNCTYPE
        vp, u32 = ctypes.c_void_p, ctypes.c_uint32
        self.get_buffer = proto(vp, vp, u32)(lambda port, n: ctypes.addressof(self._buf))
        self.clear = proto(None, vp)(self._clear)
        self.write = proto(ctypes.c_int, vp, u32, ctypes.POINTER(ctypes.c_ubyte), ctypes.c_size_t)(self._write)
        self.cycle_fn = proto(ctypes.c_int, vp, ctypes.POINTER(u32), ctypes.POINTER(ctypes.c_uint64),
                           ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_float))(self._cycle)
        self.lib = jackout.build_callback()
        addr = jackout.fn_address
        self.state = self.lib.lt_new(None, None, addr(self.get_buffer), addr(self.clear), addr(self.write),
                                     addr(self.cycle_fn), 64)

    def _clear(self, buf) -> None:
        self.cleared += 1

    def _write(self, buf, offset, data, size) -> int:
        if len(self.written) >= self.capacity:
            return 105  # ENOBUFS
        self.written.append((offset, bytes(data[:size])))
        return 0

    def _cycle(self, client, frames, cur, nxt, period) -> int:
        cur[0], nxt[0] = self.start, self.end
        return 0

    def push(self, when: float, data: bytes, seq: int, due: float | None = None, timed: bool = True,
             group: int = 1) -> None:
        due = when if due is None else due
        assert self.lib.lt_push(self.state, when, due, seq, data, len(data), int(timed), group) == 0

    def cycle(self, start_s: float, nframes: int = 128, period_s: float = 128 / 48000) -> list[tuple[int, bytes]]:
        self.start, self.end = round(start_s * 1e6), round((start_s + period_s) * 1e6)
        before = len(self.written)
        self.lib.lt_process(nframes, self.state)
        return self.written[before:]

    def late(self) -> list[float]:
        seqs, buf = (ctypes.c_uint64 * 64)(), (ctypes.c_double * 64)()
        n = self.lib.lt_read_late(self.state, seqs, buf, 64)
        self.late_seqs = list(seqs[:n])
        return list(buf[:n])


@pytest.fixture
def jack():
    fake = FakeJack()
    yield fake
    fake.lib.lt_free(fake.state)


def test_each_message_is_written_at_its_frame_in_its_cycle(jack):
    period = 128 / 48000
    jack.push(10.0 + 0.5 * period, NOTE_ON, 0)  # middle of the first cycle
    jack.push(10.0 + 1.25 * period, NOTE_OFF, 1)  # a quarter into the second
    assert jack.lib.lt_pending(jack.state) == 2
    assert jack.cycle(10.0) == [(64, NOTE_ON)]
    assert jack.cycle(10.0 + period) == [(32, NOTE_OFF)]
    assert jack.cycle(10.0 + 2 * period) == []
    assert jack.cleared == 3  # every cycle clears its buffer, events or none
    assert jack.late() == pytest.approx([0.0, 0.0], abs=11e-6)  # within half a frame
    assert jack.late_seqs == [0, 1]
    assert jack.lib.lt_pending(jack.state) == 0


def test_a_message_handed_over_too_late_goes_first_and_its_lateness_is_measured(jack):
    jack.push(9.998, NOTE_ON, 0)  # due 2 ms before this cycle began
    assert jack.cycle(10.0) == [(0, NOTE_ON)]
    assert jack.late() == [pytest.approx(0.002, abs=2e-6)]


def test_order_by_time_then_sequence_and_offsets_never_decrease(jack):
    jack.push(10.001, bytes([0x90, 62, 1]), 2)
    jack.push(10.001, bytes([0x90, 61, 1]), 1)
    jack.push(9.9, bytes([0x90, 60, 1]), 0)
    got = jack.cycle(10.0)
    assert [d[1] for _, d in got] == [60, 61, 62]
    assert [o for o, _ in got] == [0, 48, 48]


def test_a_full_buffer_keeps_the_rest_for_the_next_cycle():
    jack = FakeJack(capacity=2)
    for i in range(5):
        jack.push(10.0, bytes([0x90, 60 + i, 1]), i)
    assert len(jack.cycle(10.0)) == 2
    jack.capacity = 100
    assert [d[1] for _, d in jack.cycle(10.0 + 128 / 48000)] == [62, 63, 64]
    jack.lib.lt_free(jack.state)


def test_at_most_64_events_a_cycle(jack):
    for i in range(100):
        jack.push(10.0, bytes([0x90, i, 1]), i)
    assert len(jack.cycle(10.0)) == 64
    assert len(jack.cycle(10.0 + 128 / 48000)) == 36


def test_a_retract_drops_the_timed_note_ons_not_yet_written(jack):
    period = 128 / 48000
    jack.push(10.0, bytes([0x90, 60, 90]), 0)  # written in the first cycle, before the retract
    assert len(jack.cycle(10.0)) == 1
    jack.push(10.0 + 2 * period, bytes([0x90, 61, 90]), 1)  # handed over early: dropped
    jack.push(10.0 + 3 * period, bytes([0x80, 60, 0]), 2)  # a note-off: kept (60 sounds)
    jack.push(10.0 + 3 * period, bytes([0x90, 62, 0]), 3)  # velocity 0 is a note-off: kept
    jack.push(10.0 + 2 * period, bytes([0xB0, 64, 0]), 4)  # a controller: kept
    jack.push(10.0 + period, bytes([0x90, 50, 90]), 5, timed=False, group=0)  # thru, sent now: never retracted
    jack.push(10.0 + 2 * period, bytes([0x99, 37, 90]), 7, group=2)  # another group's (a click): kept
    assert jack.lib.lt_retract(jack.state, 1) == 0
    jack.push(10.0 + 2 * period, bytes([0x90, 63, 90]), 6)  # handed over after the retract: kept
    got = [d for _, d in jack.cycle(10.0 + period) + jack.cycle(10.0 + 2 * period) + jack.cycle(10.0 + 3 * period)]
    assert [d[1] for d in got] == [50, 64, 63, 37, 60, 62]
    assert jack.lib.lt_retracted(jack.state) == 1
    lates = jack.late()
    assert dict(zip(jack.late_seqs, lates))[1] == -1.0  # reported as retracted, so Python forgets it
    assert jack.lib.lt_pending(jack.state) == 0


def test_a_retract_of_every_group(jack):
    for seq, group in enumerate((1, 2, 0)):
        jack.push(10.01, bytes([0x90, 60 + seq, 90]), seq, group=group)
    assert jack.lib.lt_retract(jack.state, 0) == 0
    assert jack.cycle(10.01) == [] and jack.lib.lt_retracted(jack.state) == 3
