"""The command bus: the pure MIDI control map, and commands through a session in simulated time
(complexity with the shipped model: the answers' note density follows it)."""

from __future__ import annotations

from pathlib import Path

import mido
import pytest
from test_live_engine import ScriptedSampler

from liveduet.clock import ManualClock
from liveduet.io.fake import FakeOutput
from liveduet.live import commands
from liveduet.live.commands import (
    CALL_KEY,
    EndCall,
    LockScale,
    Panic,
    SetComplexity,
    SetLength,
    SetMode,
    SetTemperature,
    from_control,
)
from liveduet.live.session import Session, answer_sampler
from liveduet.live.settings import LiveSettings
from liveduet.music.tokens import TokenizerSettings, Vocabulary


def cc(control: int, value: int) -> mido.Message:
    return mido.Message("control_change", control=control, value=value)


@pytest.mark.parametrize("msg,expected", [
    (cc(1, 0), SetTemperature(0.1)),
    (cc(1, 127), SetTemperature(2.0)),
    (cc(74, 0), SetLength(0.25)),
    (cc(74, 127), SetLength(2.0)),
    (cc(71, 0), SetComplexity(0.0)),
    (cc(71, 127), SetComplexity(1.0)),
    (cc(123, 0), Panic()),
    (cc(80, 100), LockScale(CALL_KEY)),
    (cc(80, 10), LockScale(None)),
    (cc(64, 127), None),  # the sustain pedal is music, not a command
    (cc(20, 127), None),  # the end controller only with end_gesture = "cc"
    (mido.Message("note_on", note=7, velocity=64), LockScale(7)),
    (mido.Message("note_on", note=15, velocity=64), LockScale(None)),
    (mido.Message("note_on", note=60, velocity=64), None),
])
def test_control_map(msg: mido.Message, expected: commands.Command | None) -> None:
    assert from_control(msg, LiveSettings(), min_pitch=21) == expected


def test_end_gesture_controller_and_disabled_controls() -> None:
    s = LiveSettings().with_overrides(phrase={"end_gesture": "cc", "end_cc": 20}, controls={"temperature_cc": -1})
    assert from_control(cc(20, 127), s, 21) == EndCall()
    assert from_control(cc(20, 0), s, 21) is None
    assert from_control(cc(1, 64), s, 21) is None


def test_ranges_are_clamped_once() -> None:
    assert commands.clamp(5.0, commands.TEMPERATURE_RANGE) == 2.0
    assert commands.clamp(-1, commands.LENGTH_RANGE) == 0.25
    assert commands.clamp(3, commands.COMPLEXITY_RANGE) == 1.0


def test_commands_reach_the_engine_in_order_with_the_music() -> None:
    clock = ManualClock(10.0)
    settings = LiveSettings().with_overrides(tempo={"bpm": 120.0})
    session = Session(settings, Vocabulary(TokenizerSettings()), ScriptedSampler(), clock)
    out = FakeOutput(clock)
    session.set_output(out)
    session.start(threads=False)
    session.send(SetTemperature(0.55))
    session.send(SetLength(1.5))
    session.send(SetMode("echo"))
    session.send(SetMode("nonsense"))  # ignored: not a mode
    session.listener.callback(cc(74, 0))  # the keyboard's length knob, after the terminal's command
    session.pump()
    e = session.engine
    assert (e.temperature, e.length_ratio, e.mode) == (0.55, 0.25, "echo")
    assert not any(m.type == "control_change" and m.control == 74 for _, m in out.sent), "controls are not thru"
    session.listener.callback(mido.Message("note_on", note=60, velocity=90))
    session.pump()
    assert [(m.type, m.note) for _, _, m in session.played] == [("note_on", 60)], "the player's notes, for views"
    session.send(Panic())
    session.pump()
    assert e.state.value == "listening" and e.call is None
    assert session.send(commands.Quit()) is None and session.quit.is_set()


MODEL = Path(__file__).resolve().parents[1] / "models" / "default"
# (onset, length) in beats: quarters, eighths, a dotted quarter and a half — a call with room either way
CALL = [(on, length * 0.9, p) for on, length, p in
        [(0, 1, 60), (1, 0.5, 62), (1.5, 0.5, 64), (2, 1, 65), (3, 1.5, 67), (4.5, 0.5, 65), (5, 2, 64)]]


def answer_density(complexity: float | None, seed: int) -> tuple[float, float]:
    """(answer notes per answered beat, mean answer event length in twelfths) over three calls, with
    the shipped model, the complexity set (None: never sent) through the bus in simulated time."""
    from liveduet.model.runtime import ModelRuntime
    from liveduet.music.tokens import TICKS

    runtime = ModelRuntime.load(MODEL)
    clock = ManualClock(10.0)
    settings = LiveSettings().with_overrides(tempo={"bpm": 120.0}, answer={"length_ratio": 2.0})
    session = Session(settings, runtime.vocab, answer_sampler(runtime, settings.answer, seed=seed), clock, seed=seed)
    out = FakeOutput(clock)
    session.set_output(out)
    session.start(threads=False)
    if complexity is not None:
        session.send(SetComplexity(complexity))
    beats, lengths = 0.0, []

    def run_until(t: float) -> None:
        while clock.now() < t:
            clock.advance(0.005)
            session.pump()

    for _ in range(3):
        t0 = clock.now()
        for on, length, pitch in CALL:
            run_until(t0 + on * 0.5)
            session.listener.callback(mido.Message("note_on", note=pitch, velocity=90))
            run_until(t0 + (on + length) * 0.5)
            session.listener.callback(mido.Message("note_off", note=pitch))
        run_until(clock.now() + 0.1)
        while session.engine.state.value != "listening":
            run_until(clock.now() + 0.1)
        tokens = session.engine.last_answer_tokens
        events = [e for e in runtime.vocab.decode(tokens) if e[0]]
        lengths += [d for _, d in events]
        beats += sum(d for _, d in runtime.vocab.decode(tokens)) / TICKS
    notes = sum(m.type == "note_on" and m.channel == settings.answer.channel for _, m in out.sent)
    session.stop()
    return notes / beats, sum(lengths) / len(lengths)


@pytest.mark.skipif(not (MODEL / "card.json").exists(), reason="no shipped model")
def test_complexity_changes_the_answers_note_density_in_the_documented_direction() -> None:
    """SetComplexity reaches the answer sampler on the engine thread: 1 (dense) favours short
    durations, 0 (sparse) long ones — the bias Generate uses (model/sampling.py), on the same call."""
    for seed in (1, 2):
        dense_rate, dense_len = answer_density(1.0, seed)
        plain_rate, plain_len = answer_density(None, seed)
        sparse_rate, sparse_len = answer_density(0.0, seed)
        assert dense_rate > plain_rate > sparse_rate, (seed, dense_rate, plain_rate, sparse_rate)
        assert dense_len < plain_len < sparse_len, (seed, dense_len, plain_len, sparse_len)


def test_complexity_is_shown_and_only_a_change_reaches_the_sampler() -> None:
    class Recording(ScriptedSampler):
        def set_complexity(self, value: float) -> None:
            self.complexities = [*getattr(self, "complexities", []), value]

    clock = ManualClock(10.0)
    sampler = Recording()
    session = Session(LiveSettings(), Vocabulary(TokenizerSettings()), sampler, clock)
    session.set_output(FakeOutput(clock))
    session.start(threads=False)
    assert not hasattr(sampler, "complexities"), "neutral at start: the sampler is left alone"
    for value in (0.8, 0.8, 0.5):
        session.send(SetComplexity(value))
    session.listener.callback(cc(71, 127))
    session.pump()
    assert sampler.complexities == [0.8, 0.5, 1.0]
    assert session.engine.snapshot(clock.now()).complexity == 1.0
    started = Session(LiveSettings().with_overrides(answer={"complexity": 0.2}), Vocabulary(TokenizerSettings()),
                      Recording(), clock)
    assert started.engine.sampler.complexities == [0.2]
