"""The session's threads around the engine, with fake ports and a scripted sampler."""

from __future__ import annotations

import time

import mido
from test_live_engine import ScriptedSampler

from liveduet.io.fake import FakeOutput
from liveduet.live.session import Session
from liveduet.live.settings import LiveSettings
from liveduet.music.tokens import TokenizerSettings, Vocabulary


def wait_for(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_thru_record_toggle_and_clean_stop(tmp_path):
    out = FakeOutput()
    session = Session(LiveSettings().with_overrides(tempo={"bpm": 240.0}), Vocabulary(TokenizerSettings()),
                      ScriptedSampler(), seed=1)
    session.set_output(out)
    session.start()
    try:
        first = session.toggle_recording(tmp_path)
        assert first.startswith("recording to")
        session.listener.callback(mido.Message("note_on", note=60, velocity=70))
        wait_for(lambda: any(m.type == "note_on" for m in out.messages))  # thru, at once
        session.listener.callback(mido.Message("note_on", note=60, velocity=0))
        wait_for(lambda: any(m.type == "note_on" and m.channel == 1 for m in out.messages), 10)  # the answer
        done = session.toggle_recording(tmp_path)
        assert done.startswith("recorded")
        path = tmp_path / done.split("/")[-1]
        mid = mido.MidiFile(path)
        names = [t.name for t in mid.tracks]
        assert "Player" in names and "liveduet" in names
        player = next(t for t in mid.tracks if t.name == "Player")
        assert sum(m.type == "note_on" for m in player) == 1
    finally:
        session.stop()
    assert session.scheduler.open_notes() == []
    assert session.take_output() is out and not out.closed
