"""Files liveduet writes for the user get the mode a plain `open(path, "w")` would give them
(0666 less the umask), and an overwritten file keeps its own mode (issue #8, defect 1)."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import mido
import pytest

from liveduet.cli import main
from liveduet.clock import ManualClock
from liveduet.commands import render as render_cmd
from liveduet.fsutil import install, write_atomic
from liveduet.live.recorder import Recorder, build_midi, journal_path, recover
from liveduet.ui.report import draw_report

UMASK = 0o027  # not the usual 022: a writer that ignores the umask (or the old mode) shows


@pytest.fixture
def umask() -> Iterator[int]:
    old = os.umask(UMASK)
    try:
        yield UMASK
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def existing(path: Path, data: bytes = b"old") -> Path:
    path.write_bytes(data)
    os.chmod(path, 0o644)
    return path


def session(path: Path) -> Path:
    events = [(0.0, "player", mido.Message("note_on", note=60, velocity=90)),
              (0.5, "player", mido.Message("note_off", note=60)),
              (0.6, "liveduet", mido.Message("note_on", note=64, velocity=90)),
              (1.0, "liveduet", mido.Message("note_off", note=64))]
    build_midi(events, 120.0).save(path)
    return path


def test_write_atomic_and_install(tmp_path: Path, umask: int) -> None:
    assert mode(write_atomic(tmp_path / "new.bin", b"x")) == 0o666 & ~umask
    assert mode(write_atomic(existing(tmp_path / "old.bin"), b"x")) == 0o644
    tmp = tmp_path / ".tmp"
    tmp.write_bytes(b"y")
    os.chmod(tmp, 0o600)  # what mkstemp (or another program) gave it
    assert mode(install(tmp, existing(tmp_path / "old2.bin"))) == 0o644 and not tmp.exists()


def test_recording_and_recover(tmp_path: Path, umask: int) -> None:
    clock = ManualClock(start=0.0)
    rec = Recorder(tmp_path / "new.mid", clock=clock)
    rec.record_player(mido.Message("note_on", note=60), t=0.0)
    assert mode(journal_path(rec.path)) == 0o666 & ~umask
    rec.flush()
    (tmp_path / "copy.journal").write_bytes(journal_path(rec.path).read_bytes())
    assert mode(rec.finish()) == 0o666 & ~umask
    rec = Recorder(existing(tmp_path / "old.mid"), force=True, clock=clock)
    assert mode(rec.finish()) == 0o644
    assert mode(recover(tmp_path / "copy.journal", tmp_path / "rec.mid").path) == 0o666 & ~umask
    assert mode(recover(tmp_path / "copy.journal", existing(tmp_path / "old.mid"), force=True).path) == 0o644


def test_report_png(tmp_path: Path, umask: int) -> None:
    mid = session(tmp_path / "s.mid")
    assert mode(draw_report(mid, tmp_path / "new.png")) == 0o666 & ~umask
    assert mode(draw_report(mid, existing(tmp_path / "old.png"), force=True)) == 0o644
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.skipif(shutil.which("fluidsynth") is None or not any(p.is_file() for p in render_cmd.SOUNDFONTS),
                    reason="needs fluidsynth and a General MIDI soundfont")
def test_render_wav(tmp_path: Path, umask: int) -> None:
    mid = session(tmp_path / "s.mid")
    assert mode(render_cmd.render_wav(mid, tmp_path / "new.wav")) == 0o666 & ~umask
    assert mode(render_cmd.render_wav(mid, existing(tmp_path / "old.wav"), force=True)) == 0o644


def test_generate(tmp_path: Path, umask: int) -> None:
    args = ["generate", "--tokens", "6", "--temperature", "1", "--seed", "0", "--out"]
    assert main([*args, str(tmp_path / "new.mid")]) == 0
    assert mode(tmp_path / "new.mid") == 0o666 & ~umask
    assert main([*args, str(existing(tmp_path / "old.mid")), "--force"]) == 0
    assert mode(tmp_path / "old.mid") == 0o644
