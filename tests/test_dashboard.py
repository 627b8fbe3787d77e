"""Dashboard: fixed snapshots rendered to plain text, key/chord naming, keys, and terminal restore."""

from __future__ import annotations

import io
import os
import sys
import termios
import threading
import time
from dataclasses import replace

import pytest
from rich.console import Console

from liveduet.live import commands
from liveduet.live.session import SessionSnapshot
from liveduet.live.snapshot import EngineSnapshot
from liveduet.ui import harmony
from liveduet.ui.dashboard import (
    Dashboard,
    HarmonyCache,
    chord_name,
    current_pitches,
    key_name,
    parse_token_names,
    piano_roll,
    render,
)


def toks(names: str) -> tuple[str, ...]:
    """Token names written as the dashboard shows them, space-separated."""
    return tuple(names.split())


CALL = toks("G3+D4+B4 d1 C4 d1/2 D4 d1/2 E4 d1 R d1/2 G4 d1/2")
ANSWER = toks("E4+G4+C5 d1 D5 d1/2 C5 d1/2 B4 d1 G4+B4+D5 d1")


def snap(**engine: object) -> SessionSnapshot:
    e = EngineSnapshot(
        state="answering", bpm=96.0, beat=2.5, temperature=0.9, length_ratio=1.0, call_tokens=CALL,
        answer_tokens=ANSWER, calls=2, answers=2, player_notes=30, answer_notes=22, step_p50_ms=0.41,
        step_p99_ms=1.2, warnings=("output port lost: Synth",),
    )
    return SessionSnapshot(
        engine=replace(e, **engine), input_name="Keyboard", output_name="Synth", input_ok=True, output_ok=False,
        recording="/tmp/x.mid", recorded_s=12.34, late_p99_ms=0.8, dropped=3, elapsed_s=30.2,
    )


def text(renderable: object, width: int = 100) -> str:
    console = Console(width=width, color_system=None, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


# ---- the frame ------------------------------------------------------------------------------------


def test_answering_frame_shows_everything() -> None:
    out = text(render(snap(), 100))
    lines = out.splitlines()
    assert "ANSWERING   beat 2.50 ○ ○ ● ○   96.0 bpm (estimated)   key G major   chord G major triad" in lines[1]
    assert "in Keyboard (connected)   out Synth (LOST)" in out
    assert "temperature 0.90 (+/-)   answer length ×1.00   mode call   scale lock off" in out
    assert "calls 2  answers 2  notes in 30  out 22" in out
    assert "G3+D4+B4 d1 C4 d1/2 D4 d1/2 E4 d1 R d1/2 G4" in out  # the call's tokens
    assert "E4+G4+C5 d1 D5 d1/2 C5 d1/2 B4 d1 G4+B4+D5 d1" in out  # the answer's
    assert "model step p50 0.41 ms  p99 1.20 ms   answer lateness p99 0.80 ms   dropped 3" in out
    assert "recording /tmp/x.mid  12.3 s" in out
    assert "⚠ output port lost: Synth" in out
    assert lines[-1].startswith("p panic   + / - temperature   r record on/off   q quit")
    assert all(len(line) <= 100 for line in lines)


def test_call_and_answer_rolls_side_by_side() -> None:
    lines = text(render(snap(), 100)).splitlines()
    pairs = [line.split("││") for line in lines if "││" in line]
    call = [left[2:].rstrip() for left, _ in pairs]
    answer = [right[1:-1].rstrip() for _, right in pairs]
    assert call[:7] == [
        "B4  █▒▒▒·   ·   ·",  # a chord on beat 0 ...
        "G4  ·   ·   ·   · █▒",  # ... the call's last note after a rest
        "E4  ·   ·   █▒▒▒·",
        "D4  █▒▒▒· █▒·   ·",
        "C4  ·   █▒  ·   ·",
        "G3  █▒▒▒·   ·   ·",
        "1 col = 1/4 beat",
    ]
    assert answer[0] == "D5  ·   █▒  ·   █▒▒▒"
    assert "B4  ·   ·   █▒▒▒█▒▒▒" in answer  # B4 struck again on beat 3: two onsets


def test_listening_frame_without_tokens_or_recording() -> None:
    s = snap(state="listening", beat=0.0, call_tokens=(), answer_tokens=(), warnings=())
    s = replace(s, recording=None, output_ok=True)
    out = text(render(s, 100))
    assert "LISTENING" in out and "○ ○ ○ ○" in out
    assert "key —   chord —" in out
    assert out.count("(nothing yet)") == 2
    assert "not recording (start with --record FILE.mid)" in out
    assert "warnings" in out and "none" in out and "⚠" not in out
    assert "out Synth (connected)" in out
    assert "out none (record only)" in text(render(replace(s, output_name="(none)"), 100))


def test_answer_not_started_yet_says_when() -> None:
    assert "beat -0.50 in 0.5 beats" in text(render(snap(beat=-0.5), 100))


def test_no_snapshot_yet() -> None:
    out = text(render(None, 100))
    assert "starting…" in out and "q quit" in out


def test_notice_and_log_lines() -> None:
    out = text(render(snap(), 100, log=["[ 1.00] one", "[ 2.00] two"], notice="temperature → 1.00"))
    assert "[ 2.00] two" in out
    assert out.splitlines()[-1].endswith("q quit   temperature → 1.00")


@pytest.mark.parametrize("width", [60, 80, 120, 160])
def test_other_widths_fit(width: int) -> None:
    out = text(render(snap(), width), width)
    assert all(len(line) <= width for line in out.splitlines())
    assert "ANSWERING" in out and "q quit" in out and "⚠ output port lost" in out


@pytest.mark.parametrize("width", [70, 100])
def test_height_shrinks_the_rolls(width: int) -> None:
    warned = snap(warnings=("a", "b", "c"))
    tall = text(render(warned, width, log=["x", "y", "z"]), width).count("\n")
    for height in ((30, 40) if width >= 100 else (40,)):
        lines = text(render(warned, width, height, log=["x", "y", "z"]), width).splitlines()
        assert len(lines) <= height and lines[-1].startswith("p panic")
    assert text(render(warned, width, 30, log=["x", "y", "z"]), width).count("\n") < tall


def test_long_token_lists_keep_the_newest() -> None:
    many = tuple(f"C4 d1/4 D4 d1/4 E{i % 2 + 4} d1/4".split()[j] for i in range(20) for j in range(6))
    out = text(render(snap(call_tokens=many), 100))
    assert "… " in out


# ---- tokens, roll, theory ------------------------------------------------------------------------------


def test_parse_token_names() -> None:
    # A cut-off start (a duration first), specials and a trailing pitch are skipped.
    assert parse_token_names(["d1/2", "<bos>", "C4", "d1", "R", "d1/3", "E4+G4", "d3/4", "A4"]) == [
        ((60,), 12), ((), 4), ((64, 67), 9),
    ]
    assert parse_token_names(["bogus", "d1", "C#4", "d2"]) == [((61,), 24)]


def test_piano_roll_rows_and_columns() -> None:
    rows, scale = piano_roll(parse_token_names(toks("C4 d1 E4 d1/2 R d1/2 G4+C4 d1")), columns=40)
    assert scale == "1 col = 1/4 beat"
    assert rows == [
        "G4  ·   ·   █▒▒▒",
        "F#4 ·   ·   ·   ",
        "F4  ·   ·   ·   ",
        "E4  ·   █▒  ·   ",
        "D#4 ·   ·   ·   ",
        "D4  ·   ·   ·   ",
        "C#4 ·   ·   ·   ",
        "C4  █▒▒▒·   █▒▒▒",
    ]


def test_piano_roll_wide_range_shows_played_pitches_and_coarser_columns() -> None:
    events = [((36,), 48), ((84,), 48), ((60,), 48)]  # 12 beats over four octaves
    rows, scale = piano_roll(events, columns=20)
    assert [r[:4].strip() for r in rows] == ["C6", "C4", "C2"]
    assert scale == "1 col = 1 beat"
    assert rows[0] == "C6  ····█▒▒▒····"
    rows, scale = piano_roll([((p,), 3) for p in range(40, 60)], columns=80, max_rows=5)
    assert len(rows) == 5 and rows[0].startswith("B3") and "15 lower pitches not shown" in scale


@pytest.mark.parametrize(
    ("tokens", "key"),
    [
        ("C4 d1 D4 d1 E4 d1 F4 d1 G4 d1 A4 d1 B4 d1 C5 d2 G4 d1 C4+E4+G4 d2", "C major"),
        ("A3 d1 B3 d1 C4 d1 D4 d1 E4 d1 F4 d1 G#4 d1 A4 d2 E4 d1 A3+C4+E4 d2", "A minor"),
        ("G3+D4+B4 d1 C4 d1/2 D4 d1/2 E4 d1 F#4 d1/2 G4 d1/2 D4 d1 G3+B3+D4 d2", "G major"),
        ("B-3 d1 D4 d1 F4 d1 E-4 d1 B-3+D4+F4 d2", "Bb major"),
        ("d1 <bos> R d2", "—"),
    ],
)
def test_key_name(tokens: str, key: str) -> None:
    assert key_name(tuple(tokens.replace("B-", "A#").replace("E-", "D#").split())) == key


@pytest.mark.parametrize(
    ("pitches", "name"),
    [
        ((60, 64, 67), "C major triad"),
        ((64, 67, 72), "C major triad"),  # an inversion names its root
        ((55, 59, 62, 65), "G dominant seventh chord"),
        ((57, 60, 64), "A minor triad"),
        ((60, 63), "minor third on C"),
        ((62,), "D (one note)"),
        ((48, 60), "C (one note)"),
        ((), "—"),
    ],
)
def test_chord_name(pitches: tuple[int, ...], name: str) -> None:
    assert chord_name(pitches) == name


def test_current_chord_is_the_last_beat() -> None:
    events = parse_token_names(toks("D4 d1 C4 d1/2 E4 d1/4 G4 d1/4"))
    assert current_pitches(events) == (60, 64, 67)
    assert current_pitches(parse_token_names(toks("C4 d4"))) == (60,)  # a long note: itself
    assert current_pitches([]) == ()


def test_harmony_cache_throttles_the_key_analysis(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(harmony, "key_name", lambda names: calls.append(names) or f"key{len(calls)}")
    now = [0.0]
    cache = HarmonyCache(key_every_s=0.5, clock=lambda: now[0])
    assert cache.names(("C4", "d1"), ("C4", "d1")).key == "key1"
    now[0] = 0.2
    assert cache.names(("C4", "d1", "E4", "d1"), ("E4", "d1")).key == "key1"  # too soon: last value
    assert cache.names(("C4", "d1", "E4", "d1"), ("E4", "d1")).chord == "E (one note)"  # chords follow at once
    now[0] = 0.6
    assert cache.names(("C4", "d1", "E4", "d1"), ("E4", "d1")).key == "key2"
    now[0] = 5.0
    assert cache.names(("C4", "d1", "E4", "d1"), ()).key == "key2"  # same input: cached, no new analysis
    assert len(calls) == 2


# ---- the live view ---------------------------------------------------------------------------------------


class FakeSession:
    def __init__(self, snapshot: SessionSnapshot | None) -> None:
        self._snapshot = snapshot
        self.panics = 0
        self.temperatures: list[float] = []

    def snapshot(self) -> SessionSnapshot | None:
        return self._snapshot

    def panic(self) -> None:
        self.panics += 1

    def set_temperature(self, value: float) -> None:
        self.temperatures.append(value)

    def toggle_recording(self) -> str:
        self.recording = not getattr(self, "recording", False)
        return "recording to x.mid" if self.recording else "recorded x.mid"

    def send(self, cmd: commands.Command) -> str | None:
        """The session's one entry for commands, dispatched as the real one does."""
        if isinstance(cmd, commands.Panic):
            self.panic()
        elif isinstance(cmd, commands.SetTemperature):
            self.set_temperature(cmd.value)
        elif isinstance(cmd, commands.Record):
            return self.toggle_recording()
        return None


def test_keys() -> None:
    session, stop = FakeSession(snap()), threading.Event()
    board = Dashboard(session, stop, console=Console(file=io.StringIO()), keys=False, capture_stderr=False)
    board.handle_key("p")
    assert session.panics == 1
    board.handle_key("+")
    board.handle_key("+")  # faster than the snapshot (still 0.9): builds on the last value sent
    board.handle_key("-")
    assert session.temperatures == [1.0, 1.1, 1.0]
    board.handle_key("r")
    assert board._notice == "recording to x.mid" and not stop.is_set()
    board.handle_key("r")
    assert board._notice == "recorded x.mid"
    board.handle_key("x")
    assert session.panics == 1 and len(session.temperatures) == 3
    board.handle_key("q")
    assert stop.is_set()


def test_temperature_stays_in_range() -> None:
    session = FakeSession(snap(temperature=0.1))
    board = Dashboard(session, threading.Event(), console=Console(file=io.StringIO()), keys=False)
    board.handle_key("-")
    assert session.temperatures == [0.1]


def test_frame_pulls_the_snapshot() -> None:
    session = FakeSession(None)
    board = Dashboard(session, threading.Event(), console=Console(file=io.StringIO(), width=100), keys=False)
    assert "starting…" in text(board.frame())
    session._snapshot = snap()
    assert "ANSWERING" in text(board.frame())


def test_stderr_goes_to_the_log_panel_then_back() -> None:
    original = sys.stderr
    screen = Console(file=io.StringIO(), width=100, height=40, force_terminal=True)
    board = Dashboard(FakeSession(snap()), threading.Event(), console=screen, keys=False)
    board.start()
    try:
        assert sys.stderr is not original
        print("[  3.00] call 1: 12 tokens", file=sys.stderr, flush=True)
        assert "[  3.00] call 1: 12 tokens" in text(board.frame())
    finally:
        board.stop()
    assert sys.stderr is original
    assert "\x1b[?1049h" in screen.file.getvalue()  # the alternate screen, left again at stop
    assert screen.file.getvalue().rstrip().endswith("\x1b[?1049l")


def test_piped_output_keeps_stderr() -> None:
    original = sys.stderr
    board = Dashboard(FakeSession(snap()), threading.Event(), console=Console(file=io.StringIO()), keys=False)
    board.start()
    try:
        assert sys.stderr is original
    finally:
        board.stop()


def test_keys_from_a_terminal_and_the_terminal_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    master, slave = os.openpty()
    tty_in = os.fdopen(slave, "r")
    try:
        before = termios.tcgetattr(slave)
        monkeypatch.setattr(sys, "stdin", tty_in)
        stop = threading.Event()
        session = FakeSession(snap())
        board = Dashboard(session, stop, console=Console(file=io.StringIO(), width=100), capture_stderr=False)
        board.start()
        try:
            during = termios.tcgetattr(slave)
            assert not during[3] & termios.ICANON and not during[3] & termios.ECHO  # cbreak, unechoed
            os.write(master, b"p+q")
            assert stop.wait(2.0)
            deadline = time.monotonic() + 2.0
            while session.panics == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert session.panics == 1 and session.temperatures == [1.0]
        finally:
            board.stop()
        assert termios.tcgetattr(slave) == before
    finally:
        tty_in.close()
        os.close(master)


def test_harmony_off_the_daemons_interpreter_never_waits() -> None:
    from concurrent.futures import Future

    from liveduet.ui.dashboard import HarmonyCache

    class Deferred:
        """An executor whose work finishes only when the test says so."""

        def __init__(self) -> None:
            self.jobs: list[tuple[Future, tuple]] = []

        def submit(self, fn, *args):
            future: Future = Future()
            self.jobs.append((future, (fn, args)))
            return future

        def finish(self) -> None:
            for future, (fn, args) in self.jobs:
                if not future.done():
                    future.set_result(fn(*args))

    ex = Deferred()
    cache = HarmonyCache(key_every_s=0.0, executor=ex)
    tokens = ("C4", "d1", "E4", "d1", "G4", "d1")
    first = cache.names(tokens, ("C4+E4+G4", "d1"))
    assert first.key == "—" and len(ex.jobs) == 1, "asked, not waited for"
    ex.finish()
    later = cache.names(tokens, ("C4+E4+G4", "d1"))
    assert later.key == "C major" and "triad" in later.chord
