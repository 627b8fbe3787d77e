"""Start, probe and wire a JACK server with the dummy driver, for tests that need real MIDI ports."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

# One period = 128 frames at 48 kHz = 2.67 ms; no sound card needed. Realtime scheduling (-R) when
# we may (root, or rtprio granted): on a loaded 2-core machine a non-realtime server had ~1,600
# xruns in a 20 s test and lost MIDI events with them; realtime cut that to a few dozen. jackd
# falls back to normal scheduling by itself when it is not allowed realtime.
JACKD_CMD = ["jackd", "-R", "-d", "dummy", "-r", "48000", "-p", "128"]


def _env() -> dict[str, str]:
    # Probing must never autostart a server of its own.
    return {**os.environ, "JACK_NO_START_SERVER": "1"}


@dataclass
class JackServer:
    """The server the tests use. `log_path` is None when it was already running (not ours)."""

    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def xruns(self) -> int | None:
        """How many xruns/process errors jackd has logged so far; None if we cannot know.

        On an overloaded machine the dummy driver misses cycles; JACK then loses or repeats MIDI
        events (measured: losses only in cycles with an xrun). Delivery checks use this to tell a
        starved machine from a bug.
        """
        if self.log_path is None or not self.log_path.exists():
            return None
        lines = self.log_path.read_text(errors="replace").splitlines()
        return sum(1 for line in lines if "XRun" in line or "Process error" in line)


def have_jackd() -> bool:
    return shutil.which("jackd") is not None and shutil.which("jack_lsp") is not None


def jack_running(timeout: float = 5.0) -> bool:
    """Whether a JACK server answers (`jack_lsp` exits 0)."""
    try:
        done = subprocess.run(["jack_lsp"], env=_env(), capture_output=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def start_jackd(log_path: Path | None = None, timeout: float = 15.0) -> subprocess.Popen[bytes]:
    """Start jackd and return once it answers; raise RuntimeError (with its log) if it does not."""
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115 - lives with the server
    proc = subprocess.Popen(JACKD_CMD, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            proc.wait(timeout=0.1)  # doubles as the poll interval, and notices an early exit
        except subprocess.TimeoutExpired:
            if jack_running():
                return proc
            continue
        break
    stop_jackd(proc)
    text = log_path.read_text(errors="replace")[-2000:] if log_path and log_path.exists() else ""
    raise RuntimeError(f"jackd did not come up (exit {proc.returncode}): {text}")


def stop_jackd(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def jack_connect(source: str, destination: str) -> None:
    """Connect two JACK ports by full name; raise RuntimeError with jack_connect's message if it fails."""
    done = subprocess.run(["jack_connect", source, destination], env=_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"jack_connect {source!r} {destination!r}: {done.stderr.strip() or done.stdout.strip()}")


def jack_ports() -> list[str]:
    """Every JACK port name (audio and MIDI), as `jack_lsp` lists them."""
    done = subprocess.run(["jack_lsp"], env=_env(), capture_output=True, text=True)
    return done.stdout.splitlines() if done.returncode == 0 else []


def corpus_phrase(bpm: float = 120.0) -> list:
    """Four beats of a Bach chorale (soprano and bass, from music21's corpus) as (seconds, message),
    note-offs 30 ms early so a repeated note re-strikes: the call the real-port tests and benchmarks play."""
    import mido
    from music21 import corpus

    score = corpus.parse("bach/bwv66.6").stripTies()
    events = []
    for part in (score.parts[0], score.parts[-1]):
        for n in part.flatten().notes:
            if n.offset < 4:
                on, off = float(n.offset), min(float(n.offset + n.quarterLength), 4.0)
                events.append((on * 60 / bpm, mido.Message("note_on", note=n.pitch.midi, velocity=80)))
                events.append((off * 60 / bpm - 0.03, mido.Message("note_off", note=n.pitch.midi)))
    return sorted(events, key=lambda e: (e[0], e[1].type == "note_on"))


class Synth:
    """A virtual input port standing for the user's synth: collects what arrives, with perf_counter times."""

    def __init__(self, backend, name: str) -> None:
        self.received: list = []  # (time, message)
        self.lock = threading.Lock()
        self.port = backend.open_input(name, virtual=True, callback=self._on)

    def _on(self, msg) -> None:
        with self.lock:
            self.received.append((time.perf_counter(), msg))

    def messages(self, channel: int | None = None) -> list:
        with self.lock:
            return [m for _, m in self.received if channel is None or getattr(m, "channel", None) == channel]

    def wait_for(self, n: int, timeout: float = 5.0) -> list:
        """(time, message) pairs once at least `n` arrived, or what arrived by `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= n:
                    return list(self.received)
            time.sleep(0.01)
        with self.lock:
            return list(self.received)
