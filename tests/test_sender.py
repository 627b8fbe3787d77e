"""The sender process (live/sender.py, live/sender_child.py) on real JACK ports: notes at their due
times, thru, cancel and panic in order, reports back, one-line errors, and no stuck note when the
daemon's side goes away without a word."""

from __future__ import annotations

import io
import os
import time

import mido
import pytest
from jack_util import FrameSynth, Synth, check_delivery

from liveduet.errors import PortNotFoundError
from liveduet.live.scheduler import LatenessStats
from liveduet.live.sender import SenderProcess
from liveduet.live.sender_child import read_frame, write_frame

JACK = "mido.backends.rtmidi/UNIX_JACK"


@pytest.fixture
def synth(jack_server):
    name = f"sender{os.getpid()}-Synth"
    s = Synth(mido.Backend(JACK), name)
    yield s, name
    s.port.close()


@pytest.fixture
def wired(synth):
    """A sender process sending on the synth port; stopped and ended after the test."""
    s, name = synth
    reported: list[tuple[mido.Message, float, float]] = []
    sender = SenderProcess(JACK, on_sent=lambda m, due, actual: reported.append((m, due, actual)))
    port = sender.open_output(name)
    sender.use_output(port)
    yield s, sender, reported
    sender.stop()
    port.close()
    sender.close()


def test_frames_round_trip():
    buf = io.BytesIO()
    write_frame(buf, ("S", 1.5, b"\x90\x3c\x40", "answer-1"))
    write_frame(buf, ("P",))
    buf.seek(0)
    assert read_frame(buf) == ("S", 1.5, b"\x90\x3c\x40", "answer-1")
    assert read_frame(buf) == ("P",)
    assert read_frame(buf) is None  # the end of the stream
    torn = io.BytesIO(b"\x10\x00\x00\x00abc")
    assert read_frame(torn) is None


def test_scheduled_notes_arrive_on_time_and_are_reported(wired, jack_server):
    s, sender, reported = wired

    def attempt() -> tuple[float, list, int, int, int]:
        with s.lock:
            s.received.clear()
        sent, n_reported, n_late = sender.sent, len(reported), sender.lateness_stats().count
        t0 = time.perf_counter() + 0.3
        for i in range(8):
            sender.schedule(t0 + i * 0.05, mido.Message("note_on", note=60 + i, velocity=80))
            sender.schedule(t0 + i * 0.05 + 0.03, mido.Message("note_off", note=60 + i))
        assert sender.pending() == 16 and sender.next_due() == pytest.approx(t0)
        got = s.wait_for(16)
        deadline = time.monotonic() + 2
        while len(reported) < n_reported + 16 and time.monotonic() < deadline:
            time.sleep(0.01)
        return t0, got, sent, n_reported, n_late

    def check(result: tuple[float, list, int, int, int]) -> None:
        t0, got, sent, n_reported, n_late = result
        assert [m.note for _, m in got if m.type == "note_on"] == list(range(60, 68))
        # rtmidi's input stamps a message when its cycle is processed: the cycle that holds a note's
        # frame starts up to one period (128 frames = 2.7 ms) before the note is due.
        ons = [t for t, m in got if m.type == "note_on"]
        assert all(-0.004 < t - (t0 + i * 0.05) < 0.02 for i, t in enumerate(ons))
        assert len(reported) - n_reported == 16 and sender.sent - sent == 16
        assert all(actual >= due for _, due, actual in reported[n_reported:])
        assert sender.lateness_stats().count - n_late == 16 and sender.pending() == 0

    check_delivery(jack_server, attempt, check)  # JACK's dummy driver drops MIDI in xrun cycles


def test_scheduled_notes_land_on_their_frame(jack_server):
    """On JACK each scheduled note is written at the frame where it is due (io/jackout.py): the synth
    sees it there to within a frame, not up to a period later; what the child reports agrees."""
    synth = FrameSynth(f"frames{os.getpid()}")
    sender = SenderProcess(JACK)
    sender.use_output(sender.open_output(synth.name))

    def attempt() -> tuple[list[float], list, LatenessStats]:
        synth.received.clear()
        before = sender.lateness_stats().count
        t0 = time.perf_counter() + 0.3
        dues = [t0 + i * 0.0371 for i in range(12)]  # off any period grid
        for i, due in enumerate(dues):
            sender.schedule(due, mido.Message("note_on", note=60 + i, velocity=80))
            sender.schedule(due + 0.02, mido.Message("note_off", note=60 + i))
        got = synth.wait_for(24)
        deadline = time.monotonic() + 2
        while sender.lateness_stats().count < before + 24 and time.monotonic() < deadline:
            time.sleep(0.01)
        return dues, got, sender.lateness_stats()

    def check(result: tuple[list[float], list, LatenessStats]) -> None:
        dues, got, stats = result
        ons = {m.note: t for t, m in got if m.type == "note_on"}
        assert sorted(ons) == list(range(60, 72))
        errors = [ons[60 + i] - due for i, due in enumerate(dues)]
        worst = max(errors, key=abs)
        assert all(-0.00002 < e < 0.00002 for e in errors), f"worst {worst * 1e3:.3f} ms of {errors}"  # a frame: 21 µs
        assert stats.p50 < 0.00002

    try:
        check_delivery(jack_server, attempt, check)
        # Thru still goes at once (the next cycle), ahead of a note handed over for later.
        synth.received.clear()
        sender.schedule(time.perf_counter() + 0.005, mido.Message("note_on", note=90, velocity=80))
        sent = time.perf_counter()
        sender.send_now(mido.Message("note_on", note=40, velocity=80))
        got = synth.wait_for(2)
        assert [m.note for _, m in got] == [40, 90]
        assert got[0][0] - sent < 0.006  # its cycle: within a period or two of being sent
    finally:
        sender.stop()
        sender.close()
        synth.close()


def test_a_barge_in_retracts_a_note_handed_over_early(jack_server):
    """Barge-in right after a note was handed over early (20 ms before due): the note never sounds;
    its note-off, sent now, still goes out (harmless for a silent note, and never ahead of a note-on)."""
    synth = FrameSynth(f"order{os.getpid()}")
    sender = SenderProcess(JACK)
    try:
        sender.use_output(sender.open_output(synth.name))
        due = time.perf_counter() + 0.03
        sender.schedule(due, mido.Message("note_on", note=66, velocity=80), "answer-1")
        time.sleep(max(0.0, due - 0.01 - time.perf_counter()))  # handed over (20 ms early), not yet due
        sender.cancel("answer-1")
        assert time.perf_counter() < due, "the machine stalled past the due time: nothing was tested"
        synth.wait_for(1)
        time.sleep(max(0.0, due + 0.05 - time.perf_counter()))  # past the note's due time
        got = [m for _, m in synth.wait_for(2, timeout=0.1)]
        assert [(m.type, m.note) for m in got] == [("note_off", 66)]
    finally:
        sender.stop()
        sender.close()
        synth.close()


def test_thru_cancel_and_panic_keep_their_order(wired):
    s, sender, _ = wired
    assert sender.send_now(mido.Message("note_on", note=50, velocity=90))
    assert sender.send_now(mido.Message("note_on", note=50, velocity=0))  # the player's bytes, unchanged
    now = time.perf_counter()
    sender.schedule(now, mido.Message("note_on", note=70, velocity=64), "answer-1")
    sender.schedule(now + 5, mido.Message("note_off", note=70), "answer-1")
    sender.schedule(now + 5, mido.Message("note_on", note=71, velocity=64), "answer-1")
    time.sleep(0.2)
    sender.cancel("answer-1")  # barge-in: nothing more of answer-1, its open note closed at once
    assert sender.pending("answer-1") == 0
    got = [m for _, m in s.wait_for(4)]
    assert got[0] == mido.Message("note_on", note=50, velocity=90)
    assert got[1] == mido.Message("note_on", note=50, velocity=0)
    assert got[2].type == "note_on" and got[2].note == 70
    assert got[3].type == "note_off" and got[3].note == 70
    sender.schedule(time.perf_counter(), mido.Message("note_on", note=72, velocity=64))
    time.sleep(0.1)
    sender.panic()
    got = [m for _, m in s.wait_for(8)]
    assert mido.Message("note_off", note=72, velocity=0) in got
    assert any(m.type == "control_change" and m.control == 123 for m in got)


def test_unknown_port_is_one_line_and_the_child_goes_on(synth):
    _, name = synth
    sender = SenderProcess(JACK)
    try:
        with pytest.raises(PortNotFoundError) as err:
            sender.open_output("no-such-synth-here")
        assert "\n" not in str(err.value) and "no-such-synth-here" in str(err.value)
        sender.open_output(name).close()  # still answering
    finally:
        sender.stop()
        sender.close()


def test_the_daemon_vanishing_closes_every_open_note(synth):
    s, name = synth
    sender = SenderProcess(JACK)
    port = sender.open_output(name)
    sender.use_output(port)
    sender.schedule(time.perf_counter(), mido.Message("note_on", note=64, velocity=70))
    sender.schedule(time.perf_counter() + 30, mido.Message("note_off", note=64))
    s.wait_for(1)
    sender._proc.stdin.close()  # as when the daemon is killed: no stop, no close, the pipe just ends
    sender._proc.wait(5)
    got = [m for _, m in s.wait_for(2)]
    assert got[-1] == mido.Message("note_off", note=64, velocity=0)
    sender.close()
