"""The listening path without ports: context policy, early entry, mirrored expression, and the
call↔answer measures. Manual clock, scripted sampler: no sleeps."""

from __future__ import annotations

import mido
import pytest
from test_live_engine import ScriptedSampler, balanced, play, run_until

from liveduet.clock import ManualClock
from liveduet.io.fake import FakeOutput
from liveduet.live import entry, expression, memory
from liveduet.live.engine import Engine
from liveduet.live.phrase import Action, Input, State, transition
from liveduet.live.scheduler import Scheduler
from liveduet.live.settings import LiveSettings
from liveduet.music import listening
from liveduet.music.tokens import BOS, TokenizerSettings, Vocabulary


def make(**answer):
    clock = ManualClock(50.0)
    out = FakeOutput(clock)
    sched = Scheduler(out.send, clock)
    vocab = Vocabulary(TokenizerSettings())
    sampler = ScriptedSampler([((67,), 6), ((65,), 6), ((64,), 6), ((62,), 6)])
    settings = LiveSettings().with_overrides(tempo={"bpm": 120.0}, answer=answer)
    engine = Engine(settings, vocab, sampler, sched, seed=3)
    sched._on_sent = engine.on_sent
    return clock, out, sched, engine, sampler


# ---- the state machine -----------------------------------------------------------------------------

def test_entering_transitions():
    assert transition(State.CALLING, Input.LIKELY_END).actions == (Action.END_CALL,)
    assert transition(State.CALLING, Input.LIKELY_END).state is State.ENTERING
    assert transition(State.ENTERING, Input.NOTE_ON).actions == (Action.RESUME_CALL, Action.FEED)
    assert transition(State.ENTERING, Input.ANSWER_STARTED).state is State.ANSWERING
    assert transition(State.ENTERING, Input.SILENCE).state is State.ENTERING
    assert transition(State.CALLING, Input.LIKELY_END, accompany=True).state is State.CALLING


# ---- entry prediction (pure) -------------------------------------------------------------------------

def test_entry_listens_through_the_phrase_bar_line():
    def e(onset, released, now, articulation=1.0):
        return entry.entry_beat(onset, released, now, 0.1, 0.03, 4, 0.75, articulation)

    # the last note of a two-bar phrase ends before the line (beat 8): whether the player goes on or
    # starts the next phrase after a rest, they play on the line; liveduet listens through it, then
    # enters on its "and" (or the next beat when that is too close)
    for onset, released, articulation in ((7, 7.75, 1.0), (7, 7.6, 0.6), (6, 6.5, 1.0)):
        assert e(onset, released, 7.9, articulation) is None
        assert e(onset, released, 8.05, articulation) is None
        assert e(onset, released, 8.1, articulation) == 8.5
        assert e(onset, released, 8.45, articulation) == 9
    # released just after the line: the next beat, planned as late as the margin allows
    assert e(8, 8.2, 8.85) is None and e(8, 8.2, 8.88) == 9
    # no line inside the first phrase (bar 1 of 2): silence decides, once the implied note is overdue,
    # then listens through the next beat and enters on its "and"
    assert e(3, 3.9, 3.9) is None
    assert e(3, 3.9, 4.65) is None and e(3, 3.9, 5.05) is None
    assert e(3, 3.9, 5.1) == 5.5
    assert e(2, 3.2, 4.05, 0.6) is None, "a staccato half note: its next note is due at 4, not yet overdue"
    assert e(2, 3.2, 4.1, 0.6) is None and e(2, 3.2, 5.1, 0.6) == 5.5
    # a long note held in a slow staccato: its implied next note is capped at the hard end (1.5 beats)
    assert entry.expected_onset(0, 4, 0.25, longest=1.5) == 5.5


# ---- context policy -----------------------------------------------------------------------------------

def test_keep_context_policy():
    c = memory.profile([60, 62, 64, 65, 67])
    g = memory.profile([67, 69, 71, 72, 74, 66])
    low = memory.profile([48, 50, 52, 53, 55])
    assert memory.keep_context("session", c, g)
    assert not memory.keep_context("call", c, c)
    assert memory.keep_context("auto", c, c)
    assert not memory.keep_context("auto", c, g), "a new key starts fresh"
    assert not memory.keep_context("auto", c, low), "an octave down starts fresh"
    assert not memory.keep_context("auto", None, c)


def _call(engine, clock, sched, notes):
    play(engine, clock, sched, notes)
    run_until(engine, clock, sched, clock.now() + 3.0)
    run_until(engine, clock, sched, clock.now() + 12.0)
    assert engine.state is State.LISTENING


C_CALL = [(i * 0.5, 0.5, p) for i, p in enumerate([60, 62, 64, 65, 67, 65, 64, 62, 60, 64, 67, 72, 67, 64, 60, 60])]


def test_auto_memory_keeps_context_in_key_and_resets_on_a_key_change():
    clock, out, sched, engine, sampler = make(memory="auto")
    _call(engine, clock, sched, C_CALL)
    assert getattr(sampler, "resets", 0) == 1, "the first call has nothing before it to keep"
    _call(engine, clock, sched, C_CALL)
    assert sampler.resets == 1, "same key and register: the session's context is kept"
    f_sharp = [(a, b, p + 6) for a, b, p in C_CALL]
    _call(engine, clock, sched, f_sharp)
    assert sampler.resets == 2, "a key change re-primes from a fresh state"
    # the re-primed state heard <bos> then exactly this call's tokens
    i = len(sampler.fed) - 1 - sampler.fed[::-1].index(BOS)
    assert sampler.fed[i + 1: i + 1 + len(engine.call.tokens)] == engine.call.tokens


def test_call_memory_starts_every_call_fresh():
    clock, out, sched, engine, sampler = make(memory="call")
    _call(engine, clock, sched, C_CALL)
    _call(engine, clock, sched, C_CALL)
    assert sampler.resets == 2


# ---- early entry through the engine -------------------------------------------------------------------

@pytest.mark.parametrize("last", [0.2, 0.45])
def test_answer_enters_on_the_and_of_the_phrase_bar_line(last):
    clock, out, sched, engine, sampler = make()
    t0 = clock.now()
    # 8 beats of 8ths, the last one short or as the others: liveduet listens through the line (beat
    # 8), then enters on its "and"
    play(engine, clock, sched, [(i * 0.5, 0.45, 60 + i % 5) for i in range(15)] + [(7.5, last, 64)])
    run_until(engine, clock, sched, clock.now() + 2.0)
    first = min(t for t, m in out.sent if m.type == "note_on")
    assert first == pytest.approx(t0 + 8.5 * 0.5)
    # the model heard the silence before the answer as a rest: its first event sits where it sounds
    heard = sum(d for _, d in engine.vocab.decode(engine.call.tokens))
    assert heard == 8.5 * 12


def test_early_entry_does_not_cut_a_call_that_continues():
    clock, out, sched, engine, sampler = make()
    # a staccato player (8ths held 0.3 beat) plays on through the phrase's bar line at beat 8
    notes = [(i * 0.5, 0.3, 60 + i % 5) for i in range(24)]
    play(engine, clock, sched, notes)
    assert engine.state is State.CALLING, "the player went on: still a call"
    assert not any(m.channel == 1 for _, m in out.sent), "the planned answer never sounded"
    assert engine.answers == 0
    run_until(engine, clock, sched, clock.now() + 8.0)
    assert engine.answers == 1 and engine.calls == 1
    # the model heard the whole call as one: staccato 8ths as the 8ths a score would write
    from liveduet.music.stream import tokenize_notes

    written = [(a, a + 0.5, p) for a, _, p in notes]
    expected = engine.vocab.encode(tokenize_notes(written, engine.vocab.settings))
    assert engine.call.tokens[: len(expected)] == expected
    assert engine.call.tokens[len(expected)] == engine.vocab.rest_id, "then the rest before the answer"
    assert balanced([m for _, m in out.sent])


def test_a_new_phrase_on_the_line_after_a_rest_is_heard_not_cut():
    clock, out, sched, engine, sampler = make()
    # a two-bar phrase ending with a quarter on beat 6 and a rest, then the next phrase on beat 8
    first = [(i * 0.5, 0.45, 60 + i % 5) for i in range(12)] + [(6, 0.9, 67)]
    second = [(8 + i * 0.5, 0.45, 64 - i % 4) for i in range(8)]
    play(engine, clock, sched, first + second)
    assert not any(m.channel == 1 for _, m in out.sent), "nothing sounded over the player"
    assert engine.state is State.CALLING and engine.answers == 0


# ---- expression ----------------------------------------------------------------------------------------

def test_expression_from_call_reads_contour_articulation_and_swing():
    swung = [(b + (0.565 if k else 0.0), b + (0.565 if k else 0.0) + 0.25, 60, 40 + 4 * i)
             for i, (b, k) in enumerate((b, k) for b in range(4) for k in (0, 1))]
    e = expression.from_call(swung, 0.92)
    assert e.swing == pytest.approx(0.565 / 0.435, abs=0.01)
    assert e.velocity_at(0.0) == 40 and e.velocity_at(1.0) == 68
    assert e.warp(0.5) == pytest.approx(0.565, abs=1e-3) and e.warp(1.0) == 1.0
    straight = expression.from_call([(i * 0.5, i * 0.5 + 0.25, 60, 64) for i in range(8)], 0.92)
    assert straight.swing == 1.0 and straight.articulation == pytest.approx(0.5)


def test_answer_mirrors_the_calls_velocity_contour_and_swing():
    clock, out, sched, engine, sampler = make()
    t0 = clock.now()
    period = 0.5
    msgs = []
    for i in range(16):  # 8 beats of swung 8ths (2:1.3), crescendo 40 → 100, staccato
        beat = i // 2 + (0.565 if i % 2 else 0.0)
        msgs.append((t0 + beat * period, 1, mido.Message("note_on", note=60 + i % 5, velocity=40 + 4 * i)))
        msgs.append((t0 + (beat + 0.2) * period, 0, mido.Message("note_off", note=60 + i % 5)))
    msgs.sort(key=lambda m: (m[0], m[1]))
    for t, _, m in msgs:
        run_until(engine, clock, sched, t)
        engine.handle(t, m)
    run_until(engine, clock, sched, clock.now() + 8.0)
    ons = [(t, m) for t, m in out.sent if m.type == "note_on" and m.channel == 1]
    offs = {m.note: t for t, m in out.sent if m.type == "note_off" and m.channel == 1}
    assert len(ons) >= 8
    vels = [m.velocity for _, m in ons]
    assert vels[0] < 55 and vels[-1] > 85, "a crescendo answered with a crescendo"
    offbeats = [((t - t0) / period) % 1 for t, _ in ons if 0.3 < ((t - t0) / period) % 1 < 0.8]
    assert offbeats and all(abs(p - 0.565) < 0.01 for p in offbeats), "off-beat 8ths swung as the call"
    assert offs, "notes end"
    notes = [((t - t0) / period, 0, m.note, m.velocity) for t, m in ons]
    assert listening.pearson([n[3] for n in notes], list(range(len(notes)))) > 0.8


# ---- measures ------------------------------------------------------------------------------------------

def test_listening_measures():
    call = [(i * 0.5, i * 0.5 + 0.5, p, 0) for i, p in enumerate([60, 62, 64, 65, 67, 69, 71, 72])]
    same = list(call)
    assert listening.pitch_class_cosine(call, same) == pytest.approx(1.0)
    assert listening.rhythm_overlap(call, same) == pytest.approx(1.0)
    assert listening.register_gap(call, [(a, b, p + 12, v) for a, b, p, v in call]) == pytest.approx(12)
    assert listening.find_key(call) == (0, "major")
    a_minor = [(i, i + 1, p, 0) for i, p in enumerate([57, 60, 64, 57, 59, 60, 62, 64, 68, 69])]
    assert listening.find_key(a_minor) == (9, "minor")
    assert listening.in_key_share([(0, 1, 61, 0), (1, 2, 60, 0)], listening.key_scale(0, "major")) == 0.5
    assert listening.place(0.8, 0.6, 1.0) == pytest.approx(0.5)
    assert listening.place(2.0, 3.0, 1.0) == pytest.approx(0.5), "gaps: lower is better, same formula"
    assert listening.texture([(0, 1, 60, 0), (0, 1, 64, 0), (1, 2, 62, 0)]) == 1.5
