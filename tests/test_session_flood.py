"""Under a flood the router passes everything on (thru, the recording); the engine's queue is
bounded like the input door, so a slow engine falls a moment behind, not minutes (bench_storm
found a 30 s backlog and +50 MB), and it never misses what ends a sound."""

from __future__ import annotations

import mido
from test_live_engine import ScriptedSampler

from liveduet.clock import ManualClock
from liveduet.io.fake import FakeOutput
from liveduet.live import commands
from liveduet.live.session import ENGINE_QUEUE, Session
from liveduet.live.settings import LiveSettings
from liveduet.music.tokens import TokenizerSettings, Vocabulary


def test_a_flood_is_thru_and_skipped_by_the_engine_but_no_key_is_left_down() -> None:
    clock = ManualClock(0.0)
    session = Session(LiveSettings().with_overrides(tempo={"bpm": 120.0}), Vocabulary(TokenizerSettings()),
                      ScriptedSampler(), clock)
    out = FakeOutput(clock)
    session.set_output(out)
    session.start(threads=False)
    flood = []
    for i in range(3000):  # the engine thread does not run meanwhile: it is far behind
        note = 36 + i % 61
        flood += [mido.Message("note_on", note=note, velocity=90), mido.Message("note_off", note=note)]
    for msg in flood:
        session.route(clock.now(), msg)
    session.send(commands.SetTemperature(0.5))  # a command in the middle of it still gets through
    waiting = session._to_engine.queue.qsize()
    assert waiting <= ENGINE_QUEUE + ENGINE_QUEUE // 8, waiting
    assert [m for _, m in out.sent] == flood, "thru passed every message, at once"
    session.pump()
    engine = session.engine
    assert engine.keys == set(), "every note-off of a note the engine heard got in"
    assert engine.temperature == 0.5
    assert session.summary()["events_skipped"] == session._to_engine.dropped > 2000
    session.stop()
