"""The Duet's whole life on a fake backend and a manual clock: no JACK, no sleeps.

Ports come from `FakeBackend` (plug/unplug, a keyboard that plays, a synth that hears); time from a
ManualClock that `Duet.wait` moves on, driving the session, the file player and the hot-plug
watchers on the test's thread. One test runs the real threads on the real clock, ended by a signal.
"""

from __future__ import annotations

import io
import os
import signal
import threading
from pathlib import Path

import mido
import pytest
from rich.console import Console
from test_live_engine import ScriptedSampler

from liveduet.clock import ManualClock, MonotonicClock
from liveduet.errors import PortNotFoundError
from liveduet.io.fake import FakeBackend, FakeInput, FakeOutput
from liveduet.live import commands
from liveduet.live.duet import Duet, DuetOptions
from liveduet.live.phrase import State
from liveduet.live.recorder import Recorder, journal_path
from liveduet.live.session import Session
from liveduet.live.settings import LiveSettings
from liveduet.music.tokens import TokenizerSettings, Vocabulary

BPM = 120.0
PERIOD = 60.0 / BPM
SETTINGS = LiveSettings().with_overrides(tempo={"bpm": BPM})
CALL = [(0, 1, 60), (1, 1, 62), (2, 1, 64), (3, 1, 67)]  # (onset beats, length beats, pitch): one bar


class Rig:
    """A Duet on a FakeBackend with a Keyboard and a Synth, what it said, and its summary's text."""

    def __init__(self, settings: LiveSettings = SETTINGS, backend: FakeBackend | None = None,
                 events: list | None = None, threads: bool = False, view=None, **options) -> None:
        self.clock = backend.clock if backend is not None else ManualClock(100.0)
        self.backend = backend
        self.lines: list[str] = []
        self.screen = io.StringIO()
        options = {"inp": "Keyboard", "out": "Synth", **options}
        self.duet = Duet(settings, Vocabulary(TokenizerSettings()), ScriptedSampler(), DuetOptions(**options),
                         backend=backend, player_events=events, clock=self.clock, say=self.lines.append,
                         view=view, threads=threads, console=Console(file=self.screen, width=100))

    @property
    def session(self) -> Session:
        assert self.duet.session is not None
        return self.duet.session

    def said(self, words: str) -> list[str]:
        return [line for line in self.lines if words in line]

    def play(self, notes, port: str = "Keyboard", velocities=None) -> None:
        """Play (onset beats, length beats, pitch) from now into `port`, each message at its time."""
        t0 = self.clock.now()
        msgs = []
        for i, (on, length, pitch) in enumerate(notes):
            vel = velocities[i] if velocities else 90
            msgs.append((t0 + on * PERIOD, 1, mido.Message("note_on", note=pitch, velocity=vel)))
            msgs.append((t0 + (on + length) * PERIOD - 0.02, 0, mido.Message("note_off", note=pitch)))
        for t, _, msg in sorted(msgs, key=lambda m: (m[0], m[1])):
            self.duet.wait(max(0.0, t - self.clock.now()))
            assert self.backend is not None and self.backend.play(port, msg) == 1, f"nobody listens on {port}"

    def answer(self, port: str = "Synth") -> list[tuple[float, mido.Message]]:
        assert self.backend is not None
        return [(t, m) for t, m in self.backend.received(port) if m.type in ("note_on", "note_off") and m.channel == 1]


def backend(clock: ManualClock | None = None) -> FakeBackend:
    return FakeBackend(clock or ManualClock(100.0), inputs=["Keyboard"], outputs=["Synth"])


def sounding(msgs) -> set[tuple[int, int]]:
    """Notes left on, strictly: CC 123 does not count as closing one."""
    on: set[tuple[int, int]] = set()
    for m in msgs:
        if m.type == "note_on" and m.velocity:
            on.add((m.channel, m.note))
        elif m.type in ("note_on", "note_off"):
            on.discard((m.channel, m.note))
    return on


def file_events(notes=CALL) -> list[tuple[float, mido.Message]]:
    events = []
    for on, length, pitch in notes:
        events.append((on * PERIOD, mido.Message("note_on", note=pitch, velocity=80)))
        events.append(((on + length) * PERIOD - 0.02, mido.Message("note_off", note=pitch)))
    return sorted(events, key=lambda e: e[0])


# ---- the life --------------------------------------------------------------------------------------


def test_a_call_is_answered_then_teardown_runs_in_its_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []

    def spy(cls, name: str, label: str) -> None:
        original = getattr(cls, name)

        def wrapped(self, *args, **kwargs):
            order.append(label)
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, wrapped)

    for cls, name, label in ((FakeInput, "close", "input closed"), (Session, "stop", "session stopped"),
                             (FakeOutput, "close", "output closed"), (Recorder, "finish", "recording finished")):
        spy(cls, name, label)

    class View:
        def __init__(self, session: Session, stop: threading.Event) -> None:
            self.stop_event = stop

        def start(self) -> None:
            order.append("view started")

        def stop(self) -> None:
            order.append("view stopped")

    before = signal.getsignal(signal.SIGTERM)
    rig = Rig(backend=backend(), record=tmp_path / "take.mid", view=View)
    with rig.duet as duet:
        assert signal.getsignal(signal.SIGTERM) != before, "SIGTERM ends the duet in order"
        rig.play(CALL)
        duet.wait(1.2)  # 1.5 beats of silence end the call; the answer starts
        assert rig.session.engine.state in (State.ANSWERING, State.ENTERING)
        duet.wait(0.6)
        assert rig.answer(), "the answer is playing"
        duet.stop()  # mid-answer
        assert duet.wait() is True
    assert order == ["view started", "view stopped", "input closed", "session stopped", "output closed",
                     "recording finished"]
    assert signal.getsignal(signal.SIGTERM) == before
    assert rig.backend.open_ports() == []
    synth = [m for _, m in rig.backend.received("Synth")]
    assert not sounding(synth), "every note-on on the synth has its note-off"
    assert (1, 64, 0) in [(m.channel, m.control, m.value) for m in synth if m.type == "control_change"]
    assert rig.lines[0] == f"listening on Keyboard, answering on Synth, recording to {tmp_path / 'take.mid'}"
    assert rig.said(f"recorded {tmp_path / 'take.mid'}")
    mid = mido.MidiFile(tmp_path / "take.mid")
    player = next(t for t in mid.tracks if t.name == "Player")
    assert sum(m.type == "note_on" for m in player) == len(CALL)
    assert not journal_path(tmp_path / "take.mid").exists()
    assert rig.duet.summary["calls"] == 1 and rig.duet.summary["answers"] == 1
    text = rig.screen.getvalue()
    assert "liveduet session" in text and "answers" in text and str(tmp_path / "take.mid") in text


def test_a_file_input_alone_plays_is_answered_and_ends_by_itself(tmp_path: Path) -> None:
    rig = Rig(events=file_events(), inp="call.mid", out=None, record=tmp_path / "duet.mid")
    assert rig.duet.run() == 0
    assert rig.lines[0] == f"listening on call.mid, answering on (none), recording to {tmp_path / 'duet.mid'}"
    assert rig.duet.summary["notes_heard"] == len(CALL) and rig.duet.summary["answers"] == 1
    assert rig.duet.watchers == [] and rig.duet.backend is None
    mid = mido.MidiFile(tmp_path / "duet.mid")
    by_name = {t.name: t for t in mid.tracks}
    assert sum(m.type == "note_on" for m in by_name["Player"]) == len(CALL)
    assert sum(m.type == "note_on" for m in by_name["liveduet"]) >= 2, "the answer is in the recording"
    assert rig.clock.now() - 100.0 < 10.0, "it ended when the answer was over"


def test_a_file_input_with_an_output_port_answers_there_and_watches_only_it() -> None:
    fake = FakeBackend(ManualClock(100.0), outputs=["Synth"])
    rig = Rig(backend=fake, events=file_events(), inp="call.mid", out="Synth")
    assert rig.duet.run() == 0
    assert [w._kind for w in rig.duet.watchers] == ["output"]
    got = fake.received("Synth")
    assert sum(m.type == "note_on" and m.channel == 0 for _, m in got) == len(CALL), "the file's notes, thru"
    assert any(m.type == "note_on" and m.channel == 1 for _, m in got), "the answer"
    assert not sounding(m for _, m in got) and fake.open_ports() == []


def test_virtual_ports_are_ours_and_not_watched() -> None:
    fake = FakeBackend(ManualClock(100.0))  # no devices at all: a DAW connects to our ports
    rig = Rig(backend=fake, inp="liveduet-in", out="liveduet-out", virtual=True)
    with rig.duet:
        assert rig.duet.watchers == []
        rig.play(CALL, port="liveduet-in")
        rig.duet.wait(4.0)
    assert rig.answer("liveduet-out") and rig.lines[0] == "listening on liveduet-in, answering on liveduet-out"
    assert fake.open_ports() == []


def test_unplugged_keyboard_and_synth_come_back() -> None:
    fake = backend()
    rig = Rig(backend=fake)
    with rig.duet as duet:
        duet.wait(0.5)
        fake.unplug("Keyboard")
        fake.unplug("Synth")
        duet.wait(2.0)  # one poll
        assert rig.said("input port lost: Keyboard — still running; will reconnect when it returns")
        assert rig.said("output port lost: Synth")
        snap = rig.session.snapshot()
        assert snap is not None and not snap.input_ok and not snap.output_ok
        assert "input port lost: Keyboard" in snap.engine.warnings
        assert fake.play("Keyboard", mido.Message("note_on", note=60)) == 0, "the old connection is dead"
        fake.plug("Keyboard")
        fake.plug("Synth")
        duet.wait(2.0)
        assert rig.said("input port back: Keyboard") and rig.said("output port back: Synth")
        assert rig.session.snapshot().input_ok and rig.session.snapshot().output_ok
        assert [p.closed for p in fake.inputs] == [True, False] and [p.closed for p in fake.outputs] == [True, False]
        rig.play(CALL)
        duet.wait(4.0)
    assert fake.outputs[1].sent, "thru and the answer go to the new synth port"
    assert any(m.channel == 1 for _, m in fake.outputs[1].sent)
    assert fake.open_ports() == [] and not sounding(m for _, m in fake.received("Synth"))


def test_a_replug_that_fails_is_said_and_the_duet_goes_on() -> None:
    fake = backend()
    rig = Rig(backend=fake)
    with rig.duet as duet:
        fake.unplug("Synth")
        duet.wait(1.6)
        fake.plug("Synth")
        real = fake.open_output
        fake.open_output = lambda name, virtual=False: (_ for _ in ()).throw(OSError(f"unknown port {name!r}"))
        duet.wait(1.6)
        fake.open_output = real
        assert rig.said("reconnecting Synth failed: MIDI output port 'Synth' disappeared")
        rig.play(CALL)  # no output: still listening, answering into nothing
        duet.wait(3.0)
    assert rig.duet.summary["answers"] == 1 and fake.open_ports() == []


def test_sigterm_stops_mid_answer_with_every_note_closed() -> None:
    fake = backend()
    settings = SETTINGS.with_overrides(answer={"min_beats": 16.0, "max_beats": 16.0})
    rig = Rig(settings, backend=fake)
    before = signal.getsignal(signal.SIGTERM)
    with rig.duet as duet:
        rig.play(CALL)
        duet.wait(2.0)
        assert rig.answer(), "a 16-beat answer is under way"
        signal.raise_signal(signal.SIGTERM)  # the handler runs on this (the main) thread, at once
        assert duet.wait(60.0) is True
        assert rig.lines[-1] == "stopping (SIGTERM): all notes off"
    assert signal.getsignal(signal.SIGTERM) == before
    synth = [m for _, m in fake.received("Synth")]
    assert not sounding(synth)
    ccs = [(m.channel, m.control, m.value) for m in synth if m.type == "control_change"]
    assert (1, 64, 0) in ccs and (1, 123, 0) in ccs and (1, 120, 0) in ccs
    assert rig.duet.summary["duration_s"] < 10


def test_recording_on_and_off_from_the_command_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # `r` records to a timestamped file in the working folder
    rig = Rig(backend=backend())
    with rig.duet:
        first = rig.session.send(commands.Record())
        assert first is not None and first.startswith("recording to ")
        rig.play(CALL[:2])
        done = rig.session.send(commands.Record())
        assert done is not None and done.startswith("recorded ")
        second = rig.session.send(commands.Record())  # one more, left running at the end
        rig.play(CALL[2:])
        rig.duet.wait(3.0)
    first_file = Path(first.removeprefix("recording to "))
    second_file = Path(second.removeprefix("recording to "))
    assert rig.said(f"recorded {second_file}"), "the duet finishes the recording the view started"
    for path, notes in ((first_file, 2), (second_file, 2)):
        player = next(t for t in mido.MidiFile(tmp_path / path).tracks if t.name == "Player")
        assert sum(m.type == "note_on" for m in player) == notes


def test_a_recording_started_from_the_dashboard_warns_there_too(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rig = Rig(backend=backend())
    with rig.duet:
        rig.session.send(commands.Record())
        rec = rig.session.recorder
        assert rec is not None

        def full(data: bytes) -> None:
            raise OSError(28, "No space left on device")

        rec._write_all = full  # the disk fills up
        rig.play(CALL[:1])
        rec.flush()
        warning = [w for w in rig.session.engine.warnings if "crash-safe recording stopped" in w]
        assert warning and "the disk is full" in warning[0]
        assert rig.said("crash-safe recording stopped"), "and in the log"


def test_quit_and_duration_end_the_duet() -> None:
    rig = Rig(backend=backend())
    with rig.duet as duet:
        assert duet.wait(1.0) is False
        rig.session.send(commands.Quit())
        assert duet.wait(1.0) is True
    rig = Rig(backend=backend(), duration=2.0)
    with rig.duet as duet:
        assert duet.wait() is True
        assert rig.clock.now() == pytest.approx(102.0)
    assert "stopping" not in " ".join(rig.lines)


def test_a_failed_start_undoes_itself_and_keeps_no_recording(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT)
    for missing in ("Synth", "Keyboard"):
        fake = backend()
        fake.unplug(missing)
        rig = Rig(backend=fake, record=tmp_path / "take.mid")
        with pytest.raises(PortNotFoundError, match=missing):
            rig.duet.open()
        assert fake.open_ports() == [], "what was opened is closed"
        assert not (tmp_path / "take.mid").exists() and not journal_path(tmp_path / "take.mid").exists()
        assert signal.getsignal(signal.SIGINT) == before
        assert not rig.said("listening on")


# ---- paths no test ran before: end gesture, answer length, dynamics --------------------------------


def test_the_cc_end_gesture_ends_the_call_at_once() -> None:
    settings = SETTINGS.with_overrides(phrase={"end_gesture": "cc", "end_cc": 20, "silence_beats": 8.0})
    for value, ends in ((0, False), (127, True)):
        fake = backend()
        rig = Rig(settings, backend=fake)
        with rig.duet as duet:
            rig.play(CALL)
            fake.play("Keyboard", mido.Message("control_change", control=20, value=value))
            duet.wait(0.05)
            state = rig.session.engine.state
            assert (state is not State.CALLING) is ends, (value, state)
            if ends:
                duet.wait(2.0)
                assert rig.answer(), "and is answered"
    plain = Rig(SETTINGS.with_overrides(phrase={"silence_beats": 8.0}), backend=backend())
    with plain.duet:
        plain.play(CALL)
        plain.backend.play("Keyboard", mido.Message("control_change", control=20, value=127))
        plain.duet.wait(0.05)
        assert plain.session.engine.state is State.CALLING, "CC 20 is only a gesture when configured"


@pytest.mark.parametrize(("value", "beats"), [(127, 8), (50, 4), (0, 2)])
def test_cc_74_sets_the_answer_length(value: int, beats: int) -> None:
    """0..127 → 0.25..2× the call, in whole beats: a 4-beat call is answered in 8 beats, 4 (50 →
    ×0.94) or 2 (×0.25 = 1 beat, raised to min_beats)."""
    fake = backend()
    rig = Rig(SETTINGS.with_overrides(phrase={"early_entry": False}), backend=fake)
    with rig.duet as duet:
        fake.play("Keyboard", mido.Message("control_change", control=74, value=value))
        rig.play(CALL)
        duet.wait(10.0)
    answer = rig.answer()
    span = (max(t for t, m in answer if m.type == "note_off") - min(t for t, m in answer if m.type == "note_on"))
    assert (beats - 1) * PERIOD < span <= beats * PERIOD + 1e-6, span / PERIOD
    assert not any(m.type == "control_change" and m.control == 74 for _, m in fake.received("Synth"))


@pytest.mark.parametrize("mirror", [True, False])
def test_the_answer_follows_the_calls_dynamic_contour(mirror: bool) -> None:
    fake = backend()
    settings = SETTINGS.with_overrides(answer={"mirror": mirror, "min_beats": 8.0, "velocity_spread": 3},
                                       phrase={"early_entry": False})
    rig = Rig(settings, backend=fake)
    notes = [(i, 1, 60 + 2 * i) for i in range(8)]
    velocities = [30, 40, 50, 60, 80, 100, 115, 127]  # a crescendo
    with rig.duet as duet:
        rig.play(notes, velocities=velocities)
        duet.wait(8.0)
    vel = [m.velocity for _, m in rig.answer() if m.type == "note_on"]
    assert len(vel) >= 6
    if mirror:
        assert vel[0] <= 30 + 3 and vel[-1] >= 115 - 3, vel
        assert sum(b >= a - 6 for a, b in zip(vel, vel[1:])) == len(vel) - 1, f"rising as the call did: {vel}"
    else:
        mean = round(sum(velocities) / len(velocities))
        assert all(abs(v - mean) <= 3 for v in vel), (mean, vel)


# ---- the real threads on the real clock ---------------------------------------------------------------


def test_threads_on_the_real_clock_end_on_a_signal_to_ourselves() -> None:
    fake = FakeBackend(MonotonicClock(), inputs=["Keyboard"], outputs=["Synth"])
    listening = threading.Event()

    class View:
        def __init__(self, session: Session, stop: threading.Event) -> None:
            pass

        def start(self) -> None:
            listening.set()

        def stop(self) -> None:
            pass

    rig = Rig(backend=fake, threads=True, view=View)

    def player() -> None:
        assert listening.wait(10)
        fake.play("Keyboard", mido.Message("note_on", note=60, velocity=90))
        fake.play("Keyboard", mido.Message("note_off", note=60))
        os.kill(os.getpid(), signal.SIGINT)

    helper = threading.Thread(target=player)
    helper.start()
    try:
        assert rig.duet.run() == 0
    finally:
        helper.join(10)
    assert rig.said("stopping (SIGINT): all notes off")
    assert rig.duet.summary["notes_heard"] == 1
    thru = [m for _, m in fake.received("Synth") if m.channel == 0 and m.type in ("note_on", "note_off")]
    assert [m.type for m in thru] == ["note_on", "note_off"]
    assert fake.open_ports() == [] and not any(t.name.startswith("liveduet-") and t.is_alive()
                                               for t in threading.enumerate() if t.name != "liveduet-recorder")
