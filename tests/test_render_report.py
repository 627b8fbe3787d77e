"""`liveduet render` (fluidsynth → WAV) and `liveduet report` (piano-roll PNG) on a tiny session."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import wave
from pathlib import Path

import mido
import numpy as np
import pytest

from liveduet.cli import main
from liveduet.commands import render as render_cmd
from liveduet.errors import LiveduetError, MidiFileError
from liveduet.live.recorder import build_midi
from liveduet.ui.report import LIVEDUET, PLAYER, Note, draw_report, find_phrases, read_notes, title_for

BPM = 96.0


def on(note: int, vel: int = 90) -> mido.Message:
    return mido.Message("note_on", note=note, velocity=vel)


def off(note: int) -> mido.Message:
    return mido.Message("note_off", note=note, velocity=0)


@pytest.fixture
def session_mid(tmp_path: Path) -> Path:
    """A recorded duet as the recorder writes it: a two-note call, then a chord answer."""
    events = [
        (0.10, "player", on(60)), (0.50, "player", off(60)),
        (0.50, "player", on(64)), (0.90, "player", off(64)),
        (1.60, "liveduet", on(67)), (1.60, "liveduet", on(71)),
        (2.40, "liveduet", off(67)), (2.40, "liveduet", off(71)),
    ]
    path = tmp_path / "session.mid"
    build_midi(events, BPM).save(path)
    return path


def have_fluidsynth() -> bool:
    return shutil.which("fluidsynth") is not None and any(p.is_file() for p in render_cmd.SOUNDFONTS)


def cli(*args: str, env_path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if env_path is not None:
        env["PATH"] = env_path
    return subprocess.run([sys.executable, "-m", "liveduet", *args], capture_output=True, text=True, env=env,
                          timeout=120)


# ---- render -------------------------------------------------------------------------------------


@pytest.mark.skipif(not have_fluidsynth(), reason="fluidsynth or a GM soundfont not installed "
                    "(apt-get install fluidsynth fluid-soundfont-gm)")
def test_render_writes_a_sounding_wav(session_mid: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "session.wav"
    assert main(["render", str(session_mid), "--out", str(out)]) == 0
    assert "rendered" in capsys.readouterr().out
    assert out.read_bytes()[:4] == b"RIFF" and out.read_bytes()[8:12] == b"WAVE"
    with wave.open(str(out)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 44100)
        seconds = w.getnframes() / w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    assert 2.4 <= seconds <= 10  # the last note ends at 2.4 s; fluidsynth adds the release tail
    level = np.abs(samples.astype(np.int32))
    assert level[: int(0.05 * 44100)].max() < 50  # silence before the first note at 0.1 s
    # Sound while the call plays and while the answer plays.
    assert level[int(0.2 * 44100) : int(0.5 * 44100)].max() > 1000
    assert level[int(1.7 * 44100) : int(2.3 * 44100)].max() > 1000
    assert not any(p.name.endswith(".tmp.wav") for p in tmp_path.iterdir())  # no temporary left


@pytest.mark.skipif(not have_fluidsynth(), reason="fluidsynth or a GM soundfont not installed")
def test_render_keeps_an_existing_wav_without_force(session_mid: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "session.wav"
    out.write_bytes(b"mine")
    assert main(["render", str(session_mid), "--out", str(out)]) == 2
    assert "exists (use --force" in capsys.readouterr().err
    assert out.read_bytes() == b"mine"
    assert main(["render", str(session_mid), "--out", str(out), "--force"]) == 0
    assert out.read_bytes()[:4] == b"RIFF"


def test_render_without_fluidsynth_names_the_package(session_mid: Path, tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = cli("render", str(session_mid), "--out", str(tmp_path / "x.wav"), env_path=str(empty))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "liveduet render: error: fluidsynth not found: install the Debian package fluidsynth "
        "(apt-get install fluidsynth)"
    ]
    assert not (tmp_path / "x.wav").exists()


def test_render_without_soundfont_names_the_package(session_mid: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("fluidsynth") is None:
        pytest.skip("fluidsynth not installed: the soundfont is looked for after it")
    monkeypatch.setattr(render_cmd, "SOUNDFONTS", (tmp_path / "FluidR3_GM.sf2", tmp_path / "default-GM.sf2"))
    with pytest.raises(LiveduetError, match=r"install the Debian package fluid-soundfont-gm"):
        render_cmd.render_wav(session_mid, tmp_path / "x.wav")
    with pytest.raises(LiveduetError, match=r"soundfont .*nope\.sf2 not found"):
        render_cmd.render_wav(session_mid, tmp_path / "x.wav", tmp_path / "nope.sf2")


def test_render_missing_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(tmp_path / "none.mid"), "--out", str(tmp_path / "x.wav")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"liveduet render: error: {tmp_path / 'none.mid'} not found"


# ---- report -------------------------------------------------------------------------------------


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_report_draws_a_png(session_mid: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.png"
    assert main(["report", str(session_mid), "--out", str(out)]) == 0
    width, height = png_size(out)
    assert 800 <= width <= 2400 and 400 <= height <= 1000
    assert out.stat().st_size > 10_000  # notes, labels, a title: not a blank canvas
    assert "1 call, 1 answer · Player 2 notes, liveduet 2 notes · 2.4 s" in capsys.readouterr().out
    assert main(["report", str(session_mid), "--out", str(out)]) == 2  # exists, no --force
    assert main(["report", str(session_mid), "--out", str(out), "--force"]) == 0


def test_report_errors(tmp_path: Path) -> None:
    with pytest.raises(LiveduetError, match="not found"):
        draw_report(tmp_path / "none.mid", tmp_path / "r.png")
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd garbage")
    with pytest.raises(MidiFileError, match="not a readable MIDI file"):
        draw_report(bad, tmp_path / "r.png")
    empty = tmp_path / "empty.mid"
    build_midi([], BPM).save(empty)
    with pytest.raises(LiveduetError, match="no notes"):
        draw_report(empty, tmp_path / "r.png")
    assert not (tmp_path / "r.png").exists()


def test_read_notes_in_seconds_with_track_names(session_mid: Path) -> None:
    notes = read_notes(session_mid)
    got = [(round(n.start, 3), round(n.end, 3), n.pitch, n.part) for n in notes]
    assert got == [
        (0.1, 0.5, 60, PLAYER), (0.5, 0.9, 64, PLAYER), (1.6, 2.4, 67, LIVEDUET), (1.6, 2.4, 71, LIVEDUET),
    ]


def test_read_notes_follows_tempo_changes(tmp_path: Path) -> None:
    mid = mido.MidiFile(type=1, ticks_per_beat=480)
    mid.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500_000, time=0),
                                      mido.MetaMessage("set_tempo", tempo=1_000_000, time=960)]))
    mid.tracks.append(mido.MidiTrack([mido.MetaMessage("track_name", name="Player", time=0),
                                      on(60).copy(time=960), off(60).copy(time=480)]))
    path = tmp_path / "tempo.mid"
    mid.save(path)
    (note,) = read_notes(path)
    assert (note.start, note.end) == pytest.approx((1.0, 2.0))  # 2 beats at 120, then 1 beat at 60


def n(start: float, end: float, part: str) -> Note:
    return Note(start, end, 60, 80, part)


def test_phrases_turns_overlaps_and_gaps() -> None:
    notes = [
        n(0.0, 0.5, PLAYER), n(0.5, 1.0, PLAYER),  # call 1
        n(1.5, 2.0, LIVEDUET), n(1.8, 2.6, LIVEDUET),  # answer 1
        n(2.2, 2.4, PLAYER),  # the player plays along: no new phrase
        n(3.0, 3.5, PLAYER),  # turn: call 2
        n(6.0, 6.5, PLAYER),  # no answer came; after a long silence: call 3
        n(6.47, 7.0, LIVEDUET),  # starts within the release jitter of the call's end: answer 2
    ]
    phrases = find_phrases(notes)
    assert [(p.part, p.start, p.end, p.notes) for p in phrases] == [
        (PLAYER, 0.0, 1.0, 2), (LIVEDUET, 1.5, 2.6, 2), (PLAYER, 3.0, 3.5, 1), (PLAYER, 6.0, 6.5, 1),
        (LIVEDUET, 6.47, 7.0, 1),
    ]
    assert title_for("s.mid", notes, phrases) == "s.mid: 3 calls, 2 answers · Player 5 notes, liveduet 3 notes · 7.0 s"
