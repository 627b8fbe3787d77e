"""Recorder: the type-1 file it writes, its journal, and recovery after a crash or kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import mido
import pytest

from liveduet.cli import main
from liveduet.clock import ManualClock
from liveduet.errors import LiveduetError
from liveduet.live.recorder import (
    TICKS_PER_BEAT,
    JournalError,
    Recorder,
    RecordingError,
    RecordingExistsError,
    journal_path,
    read_journal,
    recover,
)


def on(note: int, ch: int = 0, vel: int = 80) -> mido.Message:
    return mido.Message("note_on", channel=ch, note=note, velocity=vel)


def off(note: int, ch: int = 0) -> mido.Message:
    return mido.Message("note_off", channel=ch, note=note, velocity=0)


def absolute(track: mido.MidiTrack) -> list[tuple[int, mido.Message]]:
    """(absolute tick, message) for every message of a track, meta included."""
    t = 0
    out = []
    for msg in track:
        t += msg.time
        out.append((t, msg))
    return out


def notes(track: mido.MidiTrack) -> list[tuple[int, str, int]]:
    return [(t, m.type, m.note) for t, m in absolute(track) if m.type in ("note_on", "note_off")]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=50.0)


def test_writes_type1_with_tempo_player_and_liveduet_tracks(tmp_path: Path, clock: ManualClock) -> None:
    out = tmp_path / "session.mid"
    rec = Recorder(out, clock=clock)
    rec.record_player(on(60), t=50.0)
    rec.record_player(off(60), t=50.5)  # one beat at 120 bpm = 480 ticks
    rec.on_sent(on(67, ch=1), due=51.0, actual=51.001)  # actual time is what is recorded
    rec.on_sent(off(67, ch=1), due=51.25, actual=51.25)
    clock.set(52.0)
    assert rec.finish(tempo_bpm=120) == out

    mid = mido.MidiFile(out)
    assert mid.type == 1 and mid.ticks_per_beat == TICKS_PER_BEAT == 480
    assert len(mid.tracks) == 3
    tempo, player, duet = mid.tracks
    assert [m.type for m in tempo] == ["set_tempo", "time_signature", "end_of_track"]
    assert tempo[0].tempo == 500_000
    assert player.name == "Player" and duet.name == "liveduet"
    assert notes(player) == [(0, "note_on", 60), (480, "note_off", 60)]
    # 1.001 s × 960 ticks/s = 960.96 → 961; 1.25 s → 1200.
    assert notes(duet) == [(961, "note_on", 67), (1200, "note_off", 67)]
    assert duet[1].channel == 1
    # Every track ends at the session end (2 s = 1920 ticks).
    assert all(absolute(tr)[-1][0] == 1920 and tr[-1].type == "end_of_track" for tr in mid.tracks)
    assert not journal_path(out).exists()


def test_ticks_follow_the_tempo_given_at_finish(tmp_path: Path, clock: ManualClock) -> None:
    rec = Recorder(tmp_path / "a.mid", clock=clock)
    rec.record_player(on(60), t=50.0)
    rec.record_player(off(60), t=50.6)  # 0.6 s at 100 bpm = one beat
    rec.finish(tempo_bpm=100)
    mid = mido.MidiFile(tmp_path / "a.mid")
    assert mid.tracks[0][0].tempo == 600_000
    assert notes(mid.tracks[1]) == [(0, "note_on", 60), (480, "note_off", 60)]
    assert mid.length == pytest.approx(0.6)


def test_hygiene_messages_never_reach_the_file(tmp_path: Path, clock: ManualClock) -> None:
    rec = Recorder(tmp_path / "h.mid", clock=clock)
    junk = [
        mido.Message("clock"), mido.Message("start"), mido.Message("stop"), mido.Message("continue"),
        mido.Message("active_sensing"), mido.Message("sysex", data=[0x7E, 1]), mido.Message("reset"),
        mido.Message("songpos", pos=8),
    ]  # fmt: skip
    for msg in junk:
        assert rec.record_player(msg, t=50.1) is False
    rec.record_player(on(60), t=50.2)
    rec.record_player(on(60, vel=0), t=50.3)  # running-status style note-off
    rec.finish()
    assert rec.filtered == len(junk)
    mid = mido.MidiFile(tmp_path / "h.mid")
    types = {m.type for tr in mid.tracks for m in tr}
    assert types <= {"set_tempo", "time_signature", "track_name", "end_of_track", "note_on", "note_off"}
    assert [m for _, m in absolute(mid.tracks[1]) if m.type.startswith("note")][-1].type == "note_off"


def test_open_notes_are_closed_at_the_end(tmp_path: Path, clock: ManualClock) -> None:
    rec = Recorder(tmp_path / "o.mid", clock=clock)
    rec.record_player(on(60), t=50.0)
    rec.on_sent(on(64), 50.1, 50.1)
    rec.on_sent(on(64), 50.2, 50.2)  # twice without release: two note-offs needed
    clock.set(51.0)
    rec.finish(tempo_bpm=120)
    mid = mido.MidiFile(tmp_path / "o.mid")
    assert notes(mid.tracks[1]) == [(0, "note_on", 60), (960, "note_off", 60)]
    assert notes(mid.tracks[2])[-2:] == [(960, "note_off", 64), (960, "note_off", 64)]


def test_existing_file_is_not_overwritten_without_force(tmp_path: Path, clock: ManualClock) -> None:
    out = tmp_path / "take.mid"
    out.write_bytes(b"precious")
    with pytest.raises(RecordingExistsError, match="--force") as info:
        Recorder(out, clock=clock)
    assert isinstance(info.value, LiveduetError)
    assert out.read_bytes() == b"precious" and not journal_path(out).exists()
    rec = Recorder(out, force=True, clock=clock)
    rec.record_player(on(60), t=50.0)
    rec.finish()
    assert len(mido.MidiFile(out).tracks) == 3


def test_file_appearing_during_the_session_is_not_overwritten(tmp_path: Path, clock: ManualClock) -> None:
    out = tmp_path / "race.mid"
    rec = Recorder(out, clock=clock)
    rec.record_player(on(60), t=50.0)
    out.write_bytes(b"someone else's")
    with pytest.raises(RecordingExistsError):
        rec.finish()
    assert out.read_bytes() == b"someone else's"
    assert journal_path(out).exists()  # nothing lost: the journal can still be recovered


def test_journal_of_an_earlier_session_blocks_a_new_one(tmp_path: Path, clock: ManualClock) -> None:
    out = tmp_path / "j.mid"
    journal_path(out).write_text("{}\n")
    with pytest.raises(RecordingExistsError, match="liveduet recover"):
        Recorder(out, clock=clock)


def test_atomic_write_leaves_old_file_and_no_temp_on_failure(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "atomic.mid"
    out.write_bytes(b"old")
    rec = Recorder(out, force=True, clock=clock)
    rec.record_player(on(60), t=50.0)

    def crash(src: object, dst: object) -> None:
        raise OSError("disk pulled")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(RecordingError, match="disk pulled; the journal .* is kept"):  # one line, no traceback
        rec.finish()
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atomic.mid", "atomic.mid.journal"]


def test_journal_is_flushed_by_the_background_thread(tmp_path: Path, clock: ManualClock) -> None:
    out = tmp_path / "live.mid"
    rec = Recorder(out, clock=clock, flush_interval=0.05)
    rec.start()
    try:
        rec.record_player(on(60), t=50.25)
        assert rec.wait_flushed(timeout=5.0)  # no explicit flush(): the thread did it
        lines = journal_path(out).read_text().splitlines()
        header = json.loads(lines[0])
        assert header["liveduet_journal"] == 1 and header["tempo_bpm"] == 120.0
        assert header["out"] == str(out)
        assert {"t": 0.25, "track": "player", "hex": "903c50"} in [json.loads(x) for x in lines[1:]]
    finally:
        rec.stop()
        rec.close()


def test_recover_after_simulated_crash_with_truncated_last_line(tmp_path: Path, clock: ManualClock) -> None:
    out = tmp_path / "crash.mid"
    rec = Recorder(out, clock=clock, tempo_bpm=90)
    rec.record_player(on(60), t=50.0)
    rec.on_sent(on(67), 50.5, 50.5)
    rec.record_player(off(60), t=51.0)
    rec.set_tempo(100)
    rec.flush()
    journal = journal_path(out)
    with open(journal, "a") as f:
        f.write('{"t": 1.5, "track": "liveduet", "he')  # power cut mid-line
    # no finish(): the process "died" here
    result = recover(journal)
    assert result.path == out and result.events == 3 and result.skipped_lines == 1
    assert result.tempo_bpm == 100
    mid = mido.MidiFile(out)
    assert mid.tracks[0][0].tempo == 600_000
    assert notes(mid.tracks[1]) == [(0, "note_on", 60), (800, "note_off", 60)]  # 1 s at 100 bpm
    assert notes(mid.tracks[2]) == [(0 + 400, "note_on", 67), (800, "note_off", 67)]  # closed at the end
    assert journal.exists()  # kept until the user is satisfied
    with pytest.raises(RecordingExistsError):
        recover(journal)
    assert recover(journal, tmp_path / "other.mid").events == 3


def test_recover_rejects_a_file_that_is_not_a_journal(tmp_path: Path) -> None:
    bogus = tmp_path / "x.journal"
    bogus.write_bytes(b"MThd\x00\x00")
    with pytest.raises(JournalError, match="not a liveduet journal"):
        recover(bogus)
    with pytest.raises(JournalError, match="cannot read"):
        read_journal(tmp_path / "missing.journal")


def test_recover_command(tmp_path: Path, clock: ManualClock, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmd.mid"
    rec = Recorder(out, clock=clock)
    rec.record_player(on(60), t=50.0)
    rec.flush()
    dest = tmp_path / "rescued.mid"
    assert main(["recover", str(journal_path(out)), "--out", str(dest)]) == 0
    assert "recovered 1 events" in capsys.readouterr().out
    assert main(["recover", str(journal_path(out)), "--out", str(dest)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["recover", str(journal_path(out)), "--out", str(dest), "--force"]) == 0


RECORDING_CHILD = textwrap.dedent(
    """
    import sys, threading, mido
    from liveduet.live.recorder import Recorder
    rec = Recorder(sys.argv[1], flush_interval=0.1)
    rec.start()
    t0 = rec.t0
    for i in range(8):
        rec.record_player(mido.Message("note_on", note=60 + i, velocity=90), t=t0 + i * 0.25)
        rec.on_sent(mido.Message("note_on", note=72 + i, velocity=70), t0 + i * 0.25, t0 + i * 0.25 + 0.001)
        rec.record_player(mido.Message("note_off", note=60 + i), t=t0 + i * 0.25 + 0.2)
    rec.record_player(mido.Message("clock"), t=t0 + 2.0)  # hygiene: never journalled
    assert rec.wait_flushed(timeout=10)
    print("ready", flush=True)
    threading.Event().wait()  # keep "playing" until killed
    """
)


def test_kill_9_during_a_session_then_recover_gives_a_readable_file(tmp_path: Path) -> None:
    out = tmp_path / "killed.mid"
    child = subprocess.Popen(
        [sys.executable, "-c", RECORDING_CHILD, str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = child.stdout.readline() if child.stdout else ""
        assert line.strip() == "ready", child.stderr.read() if child.stderr else ""
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert not out.exists()
    result = recover(journal_path(out))
    mid = mido.MidiFile(result.path)
    assert result.events == 24
    assert [n for _, kind, n in notes(mid.tracks[1]) if kind == "note_on"] == list(range(60, 68))
    assert [n for _, kind, n in notes(mid.tracks[2]) if kind == "note_on"] == list(range(72, 80))
    offs = [n for _, kind, n in notes(mid.tracks[2]) if kind == "note_off"]
    assert sorted(offs) == list(range(72, 80))  # liveduet's notes were never released: closed at the end
    assert mid.length >= 1.75
