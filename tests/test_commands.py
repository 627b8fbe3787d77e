"""The command bus: the pure MIDI control map, and commands through a session in simulated time."""

from __future__ import annotations

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
    SetLength,
    SetMode,
    SetTemperature,
    from_control,
)
from liveduet.live.session import Session
from liveduet.live.settings import LiveSettings
from liveduet.music.tokens import TokenizerSettings, Vocabulary


def cc(control: int, value: int) -> mido.Message:
    return mido.Message("control_change", control=control, value=value)


@pytest.mark.parametrize("msg,expected", [
    (cc(1, 0), SetTemperature(0.1)),
    (cc(1, 127), SetTemperature(2.0)),
    (cc(74, 0), SetLength(0.25)),
    (cc(74, 127), SetLength(2.0)),
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
    session.send(Panic())
    session.pump()
    assert e.state.value == "listening" and e.call is None
    assert session.send(commands.Quit()) is None and session.quit.is_set()
