"""Practice features on the engine, with a manual clock and a fake port: count-in, metronome,
fixed-length calls, echo and accompany modes, scale lock, MIDI clock following."""

from __future__ import annotations

import mido
import pytest
from test_live_engine import ScriptedSampler, balanced, play, run_until

from liveduet.clock import ManualClock
from liveduet.io.fake import FakeOutput
from liveduet.live.engine import Engine
from liveduet.live.midiclock import MidiClockFollower
from liveduet.live.phrase import State
from liveduet.live.scheduler import Scheduler
from liveduet.live.settings import LiveSettings
from liveduet.music.theory import best_major, major_scale
from liveduet.music.tokens import TokenizerSettings, Vocabulary


def make(**overrides):
    clock = ManualClock(50.0)
    out = FakeOutput(clock)
    sched = Scheduler(out.send, clock)
    sampler = ScriptedSampler()
    settings = LiveSettings().with_overrides(**overrides)
    engine = Engine(settings, Vocabulary(TokenizerSettings()), sampler, sched, seed=2, clock=clock)
    sched._on_sent = engine.on_sent
    return clock, out, sched, engine, sampler


def clicks(out):
    return [(t, m.note) for t, m in out.sent if m.type == "note_on" and m.channel == 9]


def test_count_in_clicks_on_an_absolute_grid_then_stops():
    clock, out, sched, engine, _ = make(tempo={"bpm": 120.0}, practice={"count_in_bars": 2})
    engine.start(clock.now())
    run_until(engine, clock, sched, clock.now() + 10)
    got = clicks(out)
    assert [n for _, n in got] == [76, 77, 77, 77] * 2, "accent on each bar's first beat, 2 bars, then silence"
    t0 = got[0][0]
    assert all(abs(t - (t0 + i * 0.5)) < 1e-9 for i, (t, _) in enumerate(got))
    assert balanced([m for _, m in out.sent])


def test_metronome_does_not_drift_over_a_hundred_beats():
    clock, out, sched, engine, _ = make(tempo={"bpm": 97.0}, practice={"metronome": True})
    dues: list[float] = []
    sched._on_sent = lambda m, due, actual: dues.append(due) if m.type == "note_on" else None
    engine.start(clock.now())
    # Ticks at an awkward 13.7 ms: sends are late by up to a tick, but due times never drift.
    run_until(engine, clock, sched, clock.now() + 100 * 60 / 97 + 0.3, step=0.0137)
    assert len(dues) >= 100
    assert max(abs(t - (dues[0] + i * 60 / 97)) for i, t in enumerate(dues)) < 1e-9


def test_fixed_length_calls_end_on_the_bar_line_even_with_keys_held():
    clock, out, sched, engine, _ = make(tempo={"bpm": 120.0}, practice={"metronome": True, "call_bars": 1})
    engine.start(clock.now())
    run_until(engine, clock, sched, clock.now() + 1.0)
    grid_t0 = engine.grid_t0
    engine.handle(clock.now(), mido.Message("note_on", note=60, velocity=70))  # held, never released
    call_t0 = engine.call.t0
    assert abs((call_t0 - grid_t0) / 0.5 - round((call_t0 - grid_t0) / 0.5)) < 1e-9, "the call sits on the grid"
    run_until(engine, clock, sched, call_t0 + 4 * 0.5 - 0.01)
    assert engine.state is State.CALLING
    run_until(engine, clock, sched, call_t0 + 4 * 0.5 + 0.01)
    assert engine.state is State.ANSWERING
    run_until(engine, clock, sched, clock.now() + 3)
    first = min(t for t, m in out.sent if m.type == "note_on" and m.channel == 1)
    assert abs((first - grid_t0) / 0.5 - round((first - grid_t0) / 0.5)) < 1e-9, "the answer starts on the grid"


def test_echo_plays_the_call_back():
    clock, out, sched, engine, sampler = make(tempo={"bpm": 120.0}, practice={"mode": "echo"})
    call = [(0, 1, 60), (1, 0.5, 64), (1.5, 0.5, 67), (2, 1, 72)]
    play(engine, clock, sched, call)
    run_until(engine, clock, sched, clock.now() + 5)
    echoed = [m.note for _, m in out.sent if m.type == "note_on" and m.channel == 1]
    assert echoed == [60, 64, 67, 72]
    assert sampler.i == 0, "echo samples nothing"
    ons = [t for t, m in out.sent if m.type == "note_on" and m.channel == 1]
    assert [round((b - ons[0]) / 0.5, 6) for b in ons] == [0, 1, 1.5, 2]


def test_accompany_plays_along_on_the_beat_and_stops_with_the_player():
    clock, out, sched, engine, sampler = make(tempo={"bpm": 120.0}, practice={"mode": "accompany"})
    start = clock.now()
    play(engine, clock, sched, [(i, 1, 60 + i % 5) for i in range(8)])
    during = [t for t, m in out.sent if m.type == "note_on" and m.channel == 1]
    assert during, "it plays while the player plays"
    assert abs((during[0] - start) - 0.5) < 1e-6, "from the beat after the first note"
    assert engine.state is State.CALLING
    run_until(engine, clock, sched, clock.now() + 3)
    assert engine.state is State.LISTENING
    last_on = max(t for t, m in out.sent if m.type == "note_on" and m.channel == 1)
    assert last_on <= start + 8 * 0.5 + 0.4 + 0.5, "and stops soon after the player does"
    assert balanced([m for _, m in out.sent])


def test_scale_lock_by_keyswitch_and_by_cc():
    clock, out, sched, engine, sampler = make(tempo={"bpm": 120.0})
    engine.handle(clock.now(), mido.Message("note_on", note=2, velocity=60))  # D keyswitch
    assert sampler.locked == set(major_scale(2)) and engine.lock.startswith("D major")
    engine.handle(clock.now(), mido.Message("note_on", note=12, velocity=60))
    assert sampler.locked is None and engine.lock is None
    play(engine, clock, sched, [(0, 1, 67), (1, 1, 71), (2, 1, 74), (3, 0.5, 66), (3.5, 0.5, 72)])  # G major
    engine.handle(clock.now(), mido.Message("control_change", control=80, value=127))
    assert sampler.locked == set(major_scale(7))
    assert engine.state is State.CALLING, "keyswitches and the lock CC are not notes of the call"


def test_midi_clock_sets_tempo_and_grid():
    clock, out, sched, engine, _ = make(tempo={"follow_clock": True})
    t = clock.now()
    engine.handle(t, mido.Message("start"))
    for i in range(1, 49):
        engine.handle(t + i * 0.5 / 24, mido.Message("clock"))  # 120 bpm
    assert engine.bpm == pytest.approx(120.0, rel=1e-6)
    assert engine.grid_t0 == pytest.approx(t, abs=1e-9)
    assert engine.snapshot(t).clock_source == "midi clock"


def test_clock_follower_ignores_a_pause_and_reads_song_position():
    f = MidiClockFollower()
    f.feed(0.0, mido.Message("start"))
    for i in range(1, 25):
        f.feed(i / 48, mido.Message("clock"))  # 24 ticks in 0.5 s: 120 bpm
    f.feed(5.0, mido.Message("clock"))  # a long gap is a pause, not a tempo
    assert f.bpm == pytest.approx(120.0)
    f.feed(5.0, mido.Message("songpos", pos=8))  # 8 sixteenths = 2 beats
    assert f.ticks == 48


def test_best_major():
    assert best_major([60, 62, 64, 65, 67, 69, 71]) == 0
    assert best_major([66, 68, 70, 71, 73, 75, 77]) == 6
    assert best_major([]) is None
