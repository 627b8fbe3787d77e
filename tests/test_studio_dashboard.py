"""The dashboard drawn by a child process (ui/screen.py) on a real terminal (a pty): frames arrive,
the alternate screen is entered and left, the daemon exits 0 with its summary below."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL = Path(os.environ.get("LIVEDUET_MODEL") or ROOT / "models" / "default")


@pytest.mark.skipif(not (MODEL / "card.json").exists(), reason=f"no model at {MODEL}")
@pytest.mark.parametrize("draw", ["process", "thread"])
def test_dashboard_draws_on_a_terminal_and_gives_it_back(draw: str) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "LIVEDUET_DRAW": draw}
    cmd = [sys.executable, "-m", "liveduet", "run", "--in", str(ROOT / "examples/call-and-response.mid"),
           "--tempo", "120", "--duration", "6", "--seed", "1"]
    proc = subprocess.Popen(cmd,
                            stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = bytearray()

    def drain() -> None:
        try:
            while chunk := os.read(master, 65536):
                out.extend(chunk)
        except OSError:  # the pty closed with the process
            pass

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        code = proc.wait(90)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    os.close(master)
    text = out.decode("utf-8", "replace")
    assert code == 0, text[-2000:]
    assert text.count("\x1b[?1049h") == 1 and text.count("\x1b[?1049l") == 1, "the screen is taken, then given back"
    assert text.count("CALLING") + text.count("ANSWERING") >= 2, "frames of the duet were drawn:" + repr(text[:3000])
    assert text.rindex("\x1b[?1049l") < text.rindex("liveduet session"), "the summary follows the restored screen"


def test_the_snapshot_crosses_the_pipe_as_plain_data_and_renders_the_same() -> None:
    import pickle

    from rich.console import Console

    from liveduet.live.session import SessionSnapshot
    from liveduet.live.snapshot import EngineSnapshot
    from liveduet.ui.dashboard import Harmony, render
    from liveduet.ui.screen import as_snapshot, plain

    e = EngineSnapshot(state="answering", bpm=96.0, beat=2.5, temperature=0.9, length_ratio=1.0,
                       call_tokens=("C4", "d1"), answer_tokens=("E4", "d1"), calls=1, answers=1, player_notes=1,
                       answer_notes=1, step_p50_ms=0.4, step_p99_ms=1.2, warnings=())
    snap = SessionSnapshot(engine=e, input_name="Keyboard", output_name="Synth", input_ok=True, output_ok=True,
                           recording=None, recorded_s=0.0, late_p99_ms=0.8, dropped=0, elapsed_s=3.0)
    data = pickle.dumps(plain(snap))
    assert b"liveduet" not in data, "no class of the daemon's needs importing in the child"

    def text(s: object) -> str:
        console = Console(width=100, color_system=None, record=True)
        console.print(render(s, 100, harmony=Harmony("C major", "C (one note)")))
        return console.export_text()

    assert text(as_snapshot(pickle.loads(data))) == text(snap)
