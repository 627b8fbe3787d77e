"""Scheduler, panic, listener and clock, driven by a ManualClock and fake ports: no sleeps."""

from __future__ import annotations

import threading

import mido
import pytest

from liveduet.clock import ManualClock, MonotonicClock
from liveduet.io.fake import FakeInput, FakeOutput, SendAfterCloseError
from liveduet.live.listener import Listener, clean
from liveduet.live.panic import channel_silence, panic_messages, send_paced
from liveduet.live.scheduler import THRU_TAG, LatenessStats, Scheduler, percentile


def on(note: int, ch: int = 0, vel: int = 80) -> mido.Message:
    return mido.Message("note_on", channel=ch, note=note, velocity=vel)


def off(note: int, ch: int = 0) -> mido.Message:
    return mido.Message("note_off", channel=ch, note=note, velocity=0)


def cc(control: int, value: int, ch: int = 0) -> mido.Message:
    return mido.Message("control_change", channel=ch, control=control, value=value)


def compact(msgs: list[mido.Message]) -> list[tuple]:
    """Messages as short tuples for exact comparisons."""
    out: list[tuple] = []
    for m in msgs:
        if m.type in ("note_on", "note_off"):
            out.append((m.type, m.channel, m.note))
        elif m.type == "control_change":
            out.append(("cc", m.channel, m.control, m.value))
        else:
            out.append((m.type,))
    return out


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=100.0)


@pytest.fixture
def out(clock: ManualClock) -> FakeOutput:
    return FakeOutput(clock)


@pytest.fixture
def sent_log() -> list[tuple[mido.Message, float, float]]:
    return []


@pytest.fixture
def sched(clock: ManualClock, out: FakeOutput, sent_log: list) -> Scheduler:
    return Scheduler(out.send, clock, on_sent=lambda m, due, actual: sent_log.append((m, due, actual)))


def test_events_go_out_in_due_order_and_not_before_due(clock, out, sched) -> None:
    sched.schedule(100.30, off(60))
    sched.schedule(100.10, on(60))
    sched.schedule(100.20, on(64))
    sched.schedule(100.40, off(64))
    assert sched.run_due() == 0  # nothing due at 100.0
    clock.set(100.25)
    assert sched.run_due() == 2
    assert compact(out.messages) == [("note_on", 0, 60), ("note_on", 0, 64)]
    clock.set(100.5)
    sched.run_due()
    assert compact(out.messages)[2:] == [("note_off", 0, 60), ("note_off", 0, 64)]
    assert sched.pending() == 0 and sched.next_due() is None


def test_same_due_time_keeps_insertion_order(clock, out, sched) -> None:
    sched.schedule_many([(100.1, on(60)), (100.1, off(60)), (100.1, on(60))])
    clock.set(100.1)
    sched.run_due()
    assert compact(out.messages) == [("note_on", 0, 60), ("note_off", 0, 60), ("note_on", 0, 60)]


def test_due_times_are_absolute_so_a_late_wakeup_does_not_shift_later_events(clock, out, sched) -> None:
    # Grid of 16ths at 120 bpm; the worker wakes 30 ms late once. Later events stay on the grid.
    grid = [100.0 + i * 0.125 for i in range(8)]
    for i, t in enumerate(grid):
        sched.schedule(t, cc(1, i))
    for i, t in enumerate(grid):
        clock.set(t + (0.030 if i == 2 else 0.0))
        sched.run_due()
    times = [t for t, _ in out.sent]
    assert times == [t + (0.030 if i == 2 else 0.0) for i, t in enumerate(grid)]


def test_lateness_is_recorded_and_summarised(clock, sched) -> None:
    for i, late_ms in enumerate([0, 1, 2, 3, 4, 5, 6, 7, 8, 100]):
        due = 100.0 + i
        sched.schedule(due, cc(7, i))
        clock.set(due + late_ms / 1000)
        sched.run_due()
    stats = sched.lateness_stats()
    assert stats.count == 10
    assert stats.p50 == pytest.approx(0.0045)
    assert stats.p99 == pytest.approx(0.09172)  # 8 ms + 0.91 × (100 − 8) ms, as numpy interpolates
    assert stats.max == pytest.approx(0.100)
    assert stats.jitter > 0


def test_lateness_stats_helpers() -> None:
    assert LatenessStats.of([]).count == 0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert LatenessStats.of([0.002] * 5).jitter == 0.0


def test_on_sent_reports_due_and_actual_times(clock, sched, sent_log) -> None:
    sched.schedule(100.5, on(60))
    clock.set(100.502)
    sched.run_due()
    [(msg, due, actual)] = sent_log
    assert msg.note == 60 and due == 100.5 and actual == pytest.approx(100.502)


def test_retrigger_sends_note_off_first_and_keeps_counts_balanced(clock, out, sched) -> None:
    sched.schedule_many([(100.0, on(60)), (100.1, on(60)), (100.2, off(60)), (100.3, off(60))])
    clock.set(101.0)
    sched.run_due()
    assert compact(out.messages) == [
        ("note_on", 0, 60),
        ("note_off", 0, 60),  # retrigger
        ("note_on", 0, 60),
        ("note_off", 0, 60),
    ]  # the fourth (now unmatched) note-off is dropped
    assert sched.retriggers == 1 and sched.stray_note_offs == 1
    assert sched.open_notes() == []


def test_velocity_zero_note_on_is_a_note_off(clock, out, sched) -> None:
    sched.schedule_many([(100.0, on(60)), (100.1, on(60, vel=0))])
    clock.set(100.2)
    sched.run_due()
    assert compact(out.messages) == [("note_on", 0, 60), ("note_off", 0, 60)]


def test_hygiene_messages_cannot_be_scheduled(sched) -> None:
    with pytest.raises(ValueError, match="channel messages only"):
        sched.schedule(100.0, mido.Message("clock"))
    assert sched.send_now(mido.Message("reset")) is False


def test_cancel_drops_pending_of_its_tag_and_closes_its_open_notes(clock, out, sched) -> None:
    sched.schedule_many([(100.0, on(60)), (100.0, on(64)), (100.0, cc(64, 127)), (101.0, off(60)), (101.0, off(64))])
    sched.schedule_many([(100.0, on(48, ch=1)), (101.0, off(48, ch=1))], tag="bass")
    clock.set(100.0)
    sched.run_due()
    out.sent.clear()
    sent = sched.cancel("answer")  # the player barges in
    assert compact(out.messages) == [("note_off", 0, 60), ("note_off", 0, 64), ("cc", 0, 64, 0)]
    assert sent == 3
    assert sched.open_notes("answer") == [] and sched.open_notes() == [(1, 48)]
    assert sched.pending("answer") == 0 and sched.pending("bass") == 1
    clock.set(102.0)
    sched.run_due()
    assert compact(out.messages)[3:] == [("note_off", 1, 48)]  # the other tag plays on


def test_cancel_of_a_tag_with_nothing_open_sends_nothing(out, sched) -> None:
    assert sched.cancel("answer") == 0 and out.sent == []


def test_panic_closes_everything_then_silences_each_used_channel_in_order(clock, out, sched) -> None:
    sched.schedule_many([(100.0, on(60)), (100.0, on(50, ch=2)), (105.0, off(60))])
    sched.send_now(on(72, ch=0))  # a held thru note
    sched.send_now(cc(1, 10, ch=5))  # a channel used but with no notes
    clock.set(100.0)
    sched.run_due()
    out.sent.clear()
    sched.panic()
    assert compact(out.messages) == [
        ("note_off", 0, 60),
        ("note_off", 0, 72),
        ("note_off", 2, 50),
        ("cc", 0, 64, 0), ("cc", 0, 123, 0), ("cc", 0, 120, 0),
        ("cc", 2, 64, 0), ("cc", 2, 123, 0), ("cc", 2, 120, 0),
        ("cc", 5, 64, 0), ("cc", 5, 123, 0), ("cc", 5, 120, 0),
    ]  # fmt: skip
    assert sched.open_notes() == [] and sched.pending() == 0
    clock.set(106.0)
    assert sched.run_due() == 0  # the pending note-off was dropped: its note is already off


def test_panic_is_paced_in_bursts(clock, out) -> None:
    sched = Scheduler(out.send, clock, burst=64, pause=0.003)
    for ch in range(16):
        for note in range(40, 52):
            sched.send_now(on(note, ch=ch))
    out.sent.clear()
    t0 = clock.now()
    n = sched.panic()
    assert n == 16 * 12 + 16 * 3 == len(out.sent) == 240
    times = [round((t - t0) * 1000, 6) for t, _ in out.sent]
    # 64 at once, 3 ms pause, 64 … : never more than 64 messages within a burst.
    assert times == [0.0] * 64 + [3.0] * 64 + [6.0] * 64 + [9.0] * 48
    assert clock.waits == [0.003] * 3


def test_run_due_limit_paces_a_backlog(clock, out, sched) -> None:
    for i in range(100):
        sched.schedule(100.0, cc(1, i))
    assert sched.run_due(limit=64) == 64
    assert sched.run_due(limit=64) == 36


def test_send_now_goes_ahead_of_the_heap_and_is_not_reported(clock, out, sched, sent_log) -> None:
    sched.schedule(100.5, on(60))
    assert sched.send_now(on(72))
    assert compact(out.messages) == [("note_on", 0, 72)]
    assert sent_log == []  # the recorder takes the player's notes from the listener
    assert sched.open_notes(THRU_TAG) == [(0, 72)]


def test_a_note_off_from_another_sender_does_not_cut_a_retriggered_note(clock, out, sched) -> None:
    sched.send_now(on(60))  # player holds C4
    sched.schedule(100.0, on(60))  # the answer plays C4 too: retrigger, the answer owns it now
    sched.run_due()
    sched.send_now(off(60))  # the player lets go: must not cut the answer's note
    assert compact(out.messages) == [("note_on", 0, 60), ("note_off", 0, 60), ("note_on", 0, 60)]
    assert sched.open_notes("answer") == [(0, 60)]


def test_stop_closes_open_notes_and_nothing_is_sent_afterwards(clock, out, sched) -> None:
    sched.schedule_many([(100.0, on(60)), (100.0, cc(64, 100)), (101.0, off(60))])
    sched.run_due()
    assert sched.stop(timeout=1.0)
    assert compact(out.messages)[-2:] == [("note_off", 0, 60), ("cc", 0, 64, 0)]
    out.close()  # the port can close now: nothing will touch it
    assert sched.schedule(102.0, on(61)) is False
    assert sched.send_now(on(61)) is False
    assert sched.panic() == 0 and sched.cancel("answer") == 0
    clock.set(103.0)
    assert sched.run_due() == 0
    assert sched.refused_after_close == 2


def test_worker_thread_sends_due_events_and_stops(clock, out) -> None:
    delivered = threading.Event()
    sched = Scheduler(out.send, clock, on_sent=lambda m, d, a: delivered.set() if m.type == "note_off" else None)
    sched.start()
    sched.schedule_many([(100.0, on(60)), (100.0, off(60))])  # already due: the push wakes the worker
    assert delivered.wait(timeout=5.0)
    assert sched.stop(timeout=5.0)
    assert compact(out.messages) == [("note_on", 0, 60), ("note_off", 0, 60)]
    with pytest.raises(RuntimeError):
        sched.start()


def test_worker_survives_a_failing_port(clock, out) -> None:
    out.close()  # every send raises now
    sched = Scheduler(out.send, clock)
    sched.start()
    sched.schedule(100.0, on(60))
    assert sched.stop(timeout=5.0)
    assert sched.open_notes() == []  # the failed note-on never counted as sounding


# ---- panic helpers -----------------------------------------------------------------------------


def test_panic_messages_cover_channels_of_open_notes_too() -> None:
    msgs = panic_messages([(3, 60)], channels=[])
    assert compact(msgs) == [("note_off", 3, 60), ("cc", 3, 64, 0), ("cc", 3, 123, 0), ("cc", 3, 120, 0)]
    assert len(channel_silence(range(16))) == 48


def test_send_paced_without_scheduler() -> None:
    clock = ManualClock()
    out = FakeOutput(clock)
    assert send_paced(out.send, [cc(1, i) for i in range(10)], clock, burst=4, pause=0.01) == 10
    assert [round(t, 6) for t, _ in out.sent] == [0.0] * 4 + [0.01] * 4 + [0.02] * 2


# ---- fakes, clock, listener ------------------------------------------------------------------------


def test_fake_output_refuses_sends_after_close() -> None:
    out = FakeOutput()
    out.send(on(60))
    out.close()
    with pytest.raises(SendAfterCloseError):
        out.send(off(60))


def test_manual_clock_moves_only_forward_and_waits_without_sleeping() -> None:
    clock = ManualClock(1.0)
    clock.advance(0.5)
    assert clock.now() == 1.5
    with pytest.raises(ValueError):
        clock.set(1.0)
    ev = threading.Event()
    assert clock.wait(ev, 2.0) is False and clock.now() == 3.5
    ev.set()
    assert clock.wait(ev, 2.0) is True and clock.now() == 3.5
    real = MonotonicClock()
    assert real.wait(ev, 1.0) is True and real.now() > 0


def test_listener_stamps_and_filters_keeping_the_players_bytes(clock) -> None:
    ticks: list[float] = []
    listener = Listener(clock, on_clock=lambda t, m: ticks.append(t))
    port = FakeInput(callback=listener.callback)
    port.push(on(60))
    clock.advance(0.25)
    port.push([mido.Message("clock"), mido.Message("active_sensing"), mido.Message("sysex", data=[1, 2])])
    port.push([mido.Message("reset"), mido.Message("songpos", pos=4), on(60, vel=0)])
    got = listener.drain()
    # A velocity-0 note-on passes unchanged (thru sends the player's bytes); `clean` normalises it.
    assert [(t, m.type, m.velocity) for t, m in got] == [(100.0, "note_on", 80), (100.25, "note_on", 0)]
    assert clean(got[1][1]).type == "note_off"
    assert listener.filtered == 5 and ticks == [100.25, 100.25]
    assert listener.get(timeout=0) is None


def test_listener_queue_is_bounded_and_counts_drops(clock) -> None:
    listener = Listener(clock, maxsize=3)
    for i in range(5):
        listener.callback(on(60 + i))
    assert listener.dropped == 2
    assert [m.note for _, m in listener.drain()] == [60, 61, 62]


def test_fake_input_holds_messages_until_a_callback_is_set() -> None:
    got: list[mido.Message] = []
    port = FakeInput()
    port.push(on(60))
    port.callback = got.append
    port.push(on(61))
    port.close()
    port.push(on(62))
    assert port.pending == [on(60)] and got == [on(61)]


def test_thru_sends_the_players_bytes_unchanged(clock) -> None:
    out = FakeOutput(clock)
    sched = Scheduler(out.send, clock)
    zero = mido.Message("note_on", note=60, velocity=0)
    sched.send_now(mido.Message("note_on", note=60, velocity=90))
    sched.send_now(zero)
    assert out.messages[-1] == zero, "a velocity-0 note-on goes out as it came in"
    assert sched.open_notes() == [], "and it closed the note in the bookkeeping"


def test_thru_passes_a_note_off_it_never_saw_the_note_on_of(clock) -> None:
    out = FakeOutput(clock)
    sched = Scheduler(out.send, clock)
    sched.send_now(mido.Message("note_off", note=61))  # a key held down before liveduet started
    assert [m.type for m in out.messages] == ["note_off"]
    sched.schedule(0.0, mido.Message("note_off", note=62))  # our own stray note-off is still dropped
    sched.run_due(now=1.0)
    assert len(out.messages) == 1


def test_thru_adds_nothing_to_the_players_stream(clock) -> None:
    out = FakeOutput(clock)
    sched = Scheduler(out.send, clock)
    for _ in range(3):
        sched.send_now(mido.Message("note_on", note=127, velocity=127))
    assert [m.type for m in out.messages] == ["note_on"] * 3
    sched.panic()
    assert ("note_off", 127) in [(m.type, getattr(m, "note", None)) for m in out.messages], "still closed at panic"


def test_a_timing_port_gets_notes_early_with_their_due_time_and_reports_them_itself():
    """With `send_at` (the frame-timed JACK output), scheduled notes are handed over `lead` early with
    their due time; thru still goes at once; on_sent is the port's to call once it wrote them."""
    clock = ManualClock(0.0)
    timed: list[tuple[tuple, float, bool]] = []
    now: list[tuple] = []
    reported: list = []
    sched = Scheduler(lambda m: now.append(compact([m])[0]), clock, on_sent=lambda *a: reported.append(a),
                      send_at=lambda m, due, report, tag: timed.append((compact([m])[0], due, report)), lead=0.02)
    sched.schedule(1.0, on(60))
    sched.schedule(1.5, off(60))
    clock.set(0.97)
    assert sched.run_due() == 0
    clock.set(0.981)
    assert sched.run_due() == 1 and timed == [(compact([on(60)])[0], 1.0, True)]
    assert sched.open_notes() == [(0, 60)]  # handed over counts as sent: a cancel closes it
    sched.send_now(on(50))
    assert now == compact([on(50)])
    assert sched.cancel("answer") == 1 and now[-1] == compact([off(60)])[0]  # at once; the port keeps the order
    # the handed-over note-on is the port's to report once written; what went out now is reported here
    assert sched.pending() == 0 and [(m.type, m.note) for m, _, _ in reported] == [("note_off", 60)]
    assert sched.lateness_stats().count == 0  # and measures it


def test_a_timing_port_drops_what_it_holds_on_barge_in_panic_and_stop():
    """Cancel, panic and stop ask the timing port to retract the note-ons it was handed and has not
    written (cancel: of its tag only), before the note-offs go out: a cancelled answer starts nothing
    more, a metronome click of another tag still sounds."""
    clock = ManualClock(0.0)
    calls: list[str] = []
    sched = Scheduler(lambda m: calls.append(f"now {m.type}"), clock,
                      send_at=lambda m, due, report, tag: calls.append(f"at {m.type} {tag}"), lead=0.02,
                      retract=lambda tag: calls.append(f"retract {tag}"))
    sched.schedule(1.0, on(60), "answer-1")
    clock.set(0.99)
    sched.run_due()
    sched.cancel("answer-1")
    assert calls == ["at note_on answer-1", "retract answer-1", "now note_off"]
    for end in (sched.panic, sched.stop):
        calls.clear()
        due = clock.now() + 1.0
        sched.schedule(due, on(62))
        clock.set(due - 0.01)
        sched.run_due()
        end()
        assert calls[:3] == ["at note_on answer", "retract None", "now note_off"]


def test_a_failing_retract_still_closes_the_notes():
    clock = ManualClock(0.0)
    sent: list[str] = []

    def broken(tag: str | None) -> None:
        raise RuntimeError("queue full")

    sched = Scheduler(lambda m: sent.append(m.type), clock, send_at=lambda *a: None, lead=0.02, retract=broken)
    sched.schedule(1.0, on(60))
    clock.set(0.99)
    sched.run_due()
    assert sched.cancel("answer") == 1 and sent == ["note_off"] and sched.errors == 1


def test_without_a_timing_port_nothing_is_retracted():
    calls: list = []
    plain = Scheduler(lambda m: None, ManualClock(0.0), retract=calls.append)
    plain.cancel("answer")
    plain.panic()
    assert calls == []
