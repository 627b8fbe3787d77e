"""The engine, state machine and tempo estimate with a manual clock and a fake port: no sleeps."""

from __future__ import annotations

import random

import mido
import pytest

from liveduet.clock import ManualClock
from liveduet.errors import ConfigError
from liveduet.io.fake import FakeOutput
from liveduet.live.engine import Engine
from liveduet.live.phrase import Action, Input, State, transition
from liveduet.live.scheduler import Scheduler
from liveduet.live.settings import LiveSettings, load_live_settings
from liveduet.live.tempo import estimate_bpm
from liveduet.music.stream import tokenize_notes
from liveduet.music.tokens import TokenizerSettings, Vocabulary


class ScriptedSampler:
    """Feeds are recorded; answers cycle through a fixed event list (a C major run)."""

    def __init__(self, events=None):
        self.fed: list[int] = []
        self.temperature = 1.0
        self.events = events or [((60,), 6), ((62,), 6), ((64, 67), 12), ((), 6), ((65,), 6)]
        self.i = 0

    def feed(self, token: int) -> None:
        self.fed.append(token)

    def reset(self) -> None:
        self.resets = getattr(self, "resets", 0) + 1
        self.fed.append(1)  # <bos>, as the real sampler feeds

    def sample_event(self):
        ev = self.events[self.i % len(self.events)]
        self.i += 1
        return ev

    def checkpoint(self):
        return (list(self.fed), self.i)

    def restore(self, cp) -> None:
        self.fed, self.i = list(cp[0]), cp[1]

    def set_pitch_classes(self, allowed) -> None:
        self.locked = None if allowed is None else set(allowed)

    def follow_pitch_classes(self, weights, strength) -> None:
        self.followed = (weights, strength)

    def follow_durations(self, counts, strength) -> None:
        self.followed_durations = (counts, strength)

    def follow_register(self, mean, spread, strength) -> None:
        self.followed_register = (mean, spread, strength)


@pytest.fixture
def rig():
    clock = ManualClock(100.0)
    out = FakeOutput(clock)
    sched = Scheduler(out.send, clock)
    vocab = Vocabulary(TokenizerSettings(), [(60, 64, 67)])
    sampler = ScriptedSampler()
    stats: list[dict] = []
    # One model state through the session, as wave 1: these tests follow the tokens fed.
    settings = LiveSettings().with_overrides(tempo={"bpm": 120.0}, answer={"memory": "session"})
    engine = Engine(settings, vocab, sampler, sched, on_answer=stats.append, seed=1)
    sched._on_sent = engine.on_sent
    return clock, out, sched, engine, sampler, stats


def play(engine, clock, sched, notes, bpm=120.0):
    """notes: (onset beats, length beats, pitch) from now; ticks the engine every 5 ms."""
    t0 = clock.now()
    period = 60 / bpm
    msgs = []
    for on, length, p in notes:
        msgs.append((t0 + on * period, 1, mido.Message("note_on", note=p, velocity=90)))
        msgs.append((t0 + (on + length) * period, 0, mido.Message("note_off", note=p)))
    msgs.sort(key=lambda m: (m[0], m[1]))
    for t, _, msg in msgs:
        run_until(engine, clock, sched, t)
        engine.handle(t, msg)


def run_until(engine, clock, sched, t_end, step=0.005):
    while clock.now() + step <= t_end:
        clock.advance(step)
        engine.tick(clock.now())
        sched.run_due()
    clock.set(max(clock.now(), t_end))
    engine.tick(clock.now())
    sched.run_due()


def balanced(msgs):
    open_ = set()
    for m in msgs:
        key = (m.channel, m.note) if m.type in ("note_on", "note_off") else None
        if m.type == "note_on":
            assert key not in open_, f"note {key} struck twice without a note-off"
            open_.add(key)
        elif m.type == "note_off":
            open_.discard(key)
    return not open_


def test_transition_table():
    assert transition(State.LISTENING, Input.NOTE_ON).state is State.CALLING
    assert transition(State.CALLING, Input.SILENCE).actions == (Action.END_CALL,)
    assert transition(State.ANSWERING, Input.NOTE_ON, barge_in=True).actions[0] is Action.STOP_ANSWER
    assert transition(State.ANSWERING, Input.NOTE_ON, barge_in=False).state is State.ANSWERING
    assert transition(State.ANSWERING, Input.ANSWER_DONE).state is State.LISTENING
    for state in State:
        assert transition(state, Input.PANIC).state is State.LISTENING
    assert transition(State.LISTENING, Input.SILENCE).state is State.LISTENING


def test_call_is_tokenized_like_a_file_and_fed_as_played(rig):
    clock, out, sched, engine, sampler, _ = rig
    notes = [(0, 0.5, 60), (0.5, 0.5, 62), (1, 1, 64), (2, 1, 67), (3, 0.5, 65)]
    play(engine, clock, sched, notes)
    fed_while_playing = len(sampler.fed)
    assert fed_while_playing >= 6, "the model is stepped while the player plays"
    run_until(engine, clock, sched, clock.now() + 1.0)  # 1.5 beats of silence at 120 bpm = 0.75 s
    assert engine.state is State.ANSWERING
    expected = engine.vocab.encode(tokenize_notes([(a, a + b, p) for a, b, p in notes], engine.vocab.settings))
    assert sampler.fed[: len(expected)] == expected
    assert sampler.fed[len(expected)] == engine.vocab.rest_id, "then the silence before the answer, as a rest"


def test_answer_on_the_beat_grid_every_note_closed(rig):
    clock, out, sched, engine, sampler, stats = rig
    t0 = clock.now()
    play(engine, clock, sched, [(0, 1, 60), (1, 1, 64), (2, 1, 67), (3, 1, 72)])
    run_until(engine, clock, sched, clock.now() + 6.0)
    assert engine.state is State.LISTENING
    answer = [(t, m) for t, m in out.sent if m.type == "note_on" and m.channel == 1 and m.velocity and t > t0 + 2.0]
    first_t = answer[0][0]
    halves = 2 * (first_t - t0) / 0.5
    assert abs(halves - round(halves)) < 0.04, "the answer starts on the player's beat or its 'and'"
    assert round(halves) >= 8
    assert balanced([m for _, m in out.sent])
    assert stats and stats[0]["tokens"] > 0 and not stats[0]["stopped"]
    assert abs(stats[0]["first_late_ms"]) <= 5.0
    # 4 beats of call → 4 beats of answer, as the default length ratio says
    last_off = max(t for t, m in out.sent if m.type == "note_off")
    assert last_off - first_t <= 4 * 0.5 + 1e-6


def test_answer_is_generated_ahead_not_all_at_once(rig):
    clock, out, sched, engine, sampler, _ = rig
    settings = LiveSettings().with_overrides(tempo={"bpm": 120.0}, answer={"max_beats": 16.0, "length_ratio": 4.0})
    engine.s, engine.length_ratio = settings, 4.0
    play(engine, clock, sched, [(i, 1, 60 + i) for i in range(4)])
    run_until(engine, clock, sched, clock.now() + 0.76)
    assert engine.state is State.ANSWERING
    first = engine.answer.pos
    assert 0 < first < engine.answer.target, "only the lookahead is generated at the call's end"
    run_until(engine, clock, sched, clock.now() + 2.0)
    assert engine.answer.pos > first


def test_barge_in_stops_the_answer_at_once(rig):
    clock, out, sched, engine, sampler, stats = rig
    play(engine, clock, sched, [(i, 1, 60 + i) for i in range(4)])
    run_until(engine, clock, sched, clock.now() + 1.2)
    assert engine.state is State.ANSWERING and sched.open_notes()
    engine.handle(clock.now(), mido.Message("note_on", note=50, velocity=80))
    assert engine.state is State.CALLING
    assert sched.open_notes("answer-1") == [] and sched.pending("answer-1") == 0
    assert stats[-1]["stopped"]
    assert balanced([m for _, m in out.sent])


def test_panic_cc_and_temperature_cc(rig):
    clock, out, sched, engine, sampler, _ = rig
    engine.handle(clock.now(), mido.Message("control_change", control=1, value=127))
    assert sampler.temperature == 2.0
    engine.handle(clock.now(), mido.Message("control_change", control=1, value=0))
    assert sampler.temperature == 0.1
    play(engine, clock, sched, [(i, 1, 60 + i) for i in range(4)])
    run_until(engine, clock, sched, clock.now() + 1.2)
    engine.handle(clock.now(), mido.Message("control_change", control=123, value=0))
    assert engine.state is State.LISTENING
    kinds = [(m.type, getattr(m, "control", None)) for _, m in out.sent[-3:]]
    assert kinds == [("control_change", 64), ("control_change", 123), ("control_change", 120)]
    assert balanced([m for _, m in out.sent])


def test_pedal_gesture_ends_the_call(rig):
    clock, out, sched, engine, sampler, _ = rig
    engine.s = LiveSettings().with_overrides(tempo={"bpm": 120.0}, phrase={"end_gesture": "pedal"})
    engine.handle(clock.now(), mido.Message("control_change", control=64, value=127))
    play(engine, clock, sched, [(0, 0.5, 60), (0.5, 0.5, 64)])
    clock.advance(0.1)
    engine.handle(clock.now(), mido.Message("control_change", control=64, value=0))
    assert engine.state is State.ANSWERING


def test_retempo_reprimes_the_model():
    clock = ManualClock(0.0)
    out = FakeOutput(clock)
    sched = Scheduler(out.send, clock)
    vocab = Vocabulary(TokenizerSettings())
    sampler = ScriptedSampler()
    settings = LiveSettings().with_overrides(answer={"memory": "session"})
    engine = Engine(settings, vocab, sampler, sched)  # initial 100 bpm, estimating
    notes = [(b, 0.5, 60 + i % 5) for i, b in enumerate([0, 1, 1.5, 2, 3, 3.5, 4, 5, 6, 6.5, 7])]
    play(engine, clock, sched, notes, bpm=80.0)
    run_until(engine, clock, sched, clock.now() + 2.0)
    assert engine.state is State.ANSWERING
    assert abs(engine.bpm - 80) < 3
    # as written: the silences between these notes are articulation (live input is a performance)
    onsets = [a for a, _, _ in notes] + [notes[-1][0] + notes[-1][1]]
    written = [(a, nxt, p) for (a, _, p), nxt in zip(notes, onsets[1:])]
    expected = vocab.encode(tokenize_notes(written, vocab.settings))
    assert sampler.fed[: len(expected)] == expected, "after re-tempo the model was primed with the call at 80 bpm"


@pytest.mark.parametrize("bpm", [72, 90, 110, 128])
def test_tempo_estimate(bpm):
    rng = random.Random(bpm)
    beats = [0, 1, 1.5, 2, 3, 3.5, 3.75, 4, 5, 6, 6.5, 7]
    onsets = [b * 60 / bpm + rng.gauss(0, 0.01) for b in beats]
    assert estimate_bpm(onsets, prior_bpm=bpm * 1.1) == pytest.approx(bpm, rel=0.03)
    assert estimate_bpm(onsets[:3], prior_bpm=100) == 100  # too few onsets: keep the prior


def test_live_settings_validation(tmp_path):
    assert load_live_settings("configs/live.toml") == LiveSettings()
    bad = tmp_path / "bad.toml"
    bad.write_text("[answer]\ntemperature = 5.0\n")
    with pytest.raises(ConfigError, match="answer.temperature = 5.0"):
        load_live_settings(bad)
    bad.write_text("[answer]\ntemprature = 1.0\n")
    with pytest.raises(ConfigError, match="unknown key .temprature."):
        load_live_settings(bad)
    bad.write_text("[answer\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_live_settings(bad)


def test_a_lost_note_off_cannot_keep_the_call_open(rig):
    clock, out, sched, engine, sampler, _ = rig
    engine.handle(clock.now(), mido.Message("note_on", note=60, velocity=80))  # its note-off never comes
    run_until(engine, clock, sched, clock.now() + 3.0)
    assert engine.state is State.CALLING, "a held key is a held key for a while"
    run_until(engine, clock, sched, clock.now() + 2.0)  # 8 beats at 120 bpm with no input at all
    assert engine.state in (State.ANSWERING, State.LISTENING)
    assert any("without note-off" in w for w in engine.warnings)


def test_notes_beyond_the_piano_are_not_calls(rig):
    clock, out, sched, engine, sampler, _ = rig
    for _ in range(5):
        engine.handle(clock.now(), mido.Message("note_on", note=127, velocity=127))
        engine.handle(clock.now(), mido.Message("note_off", note=0))
        run_until(engine, clock, sched, clock.now() + 0.1)
    assert engine.state is State.LISTENING and sampler.fed == []
