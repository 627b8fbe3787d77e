"""Start, probe and wire a JACK server with the dummy driver, for tests that need real MIDI ports."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

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


class Capture:
    """What a test port received, as (time, message) pairs, and a wait for the first `n`."""

    def __init__(self) -> None:
        self.received: list = []  # (time, message)
        self.lock = threading.Lock()

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


class Synth(Capture):
    """A virtual input port standing for the user's synth: collects what arrives, with perf_counter times."""

    def __init__(self, backend, name: str) -> None:
        super().__init__()
        self.port = backend.open_input(name, virtual=True, callback=self._on)

    def _on(self, msg) -> None:
        with self.lock:
            self.received.append((time.perf_counter(), msg))

    def messages(self, channel: int | None = None) -> list:
        with self.lock:
            return [m for _, m in self.received if channel is None or getattr(m, "channel", None) == channel]



class FrameSynth(Capture):
    """A JACK MIDI input standing for a sample-accurate synth: each message with the time of the
    frame it was written at (JACK's cycle start + its offset), in perf_counter seconds — where a synth
    that renders at frame offsets plays it. rtmidi's input (`Synth`) stamps on arrival instead, which
    is quantised to JACK's period. The client is `<name>` with one port `in`."""

    def __init__(self, name: str) -> None:
        import ctypes

        from liveduet.io import jackout

        class Event(ctypes.Structure):
            _fields_ = [("time", ctypes.c_uint32), ("size", ctypes.c_size_t),
                        ("buffer", ctypes.POINTER(ctypes.c_ubyte))]

        lib = jackout._load()
        lib.jack_midi_get_event_count.restype = ctypes.c_uint32
        lib.jack_midi_get_event_count.argtypes = [ctypes.c_void_p]
        lib.jack_midi_event_get.restype = ctypes.c_int
        lib.jack_midi_event_get.argtypes = [ctypes.POINTER(Event), ctypes.c_void_p, ctypes.c_uint32]
        super().__init__()  # received: (frame time in perf_counter seconds, message)
        self._lib, self._ctypes, self._event = lib, ctypes, Event
        status = ctypes.c_int(0)
        self._client = lib.jack_client_open(name.encode(), jackout.NO_START_SERVER | jackout.USE_EXACT_NAME,
                                            ctypes.byref(status))
        if not self._client:
            raise RuntimeError(f"FrameSynth: cannot open a JACK client (status 0x{status.value:x})")
        self._port = lib.jack_port_register(self._client, b"in", jackout.MIDI_TYPE, 0x1, 0)
        self._offset = jackout.raw_offset()
        self._cb = jackout.PROCESS(self._process)
        lib.jack_set_process_callback(self._client, jackout.fn_address(self._cb), None)
        lib.jack_activate(self._client)
        self.name = f"{name}:in"

    def _process(self, nframes: int, _arg: object) -> int:
        import mido

        c, lib = self._ctypes, self._lib
        buf = lib.jack_port_get_buffer(self._port, nframes)
        frames, cur, nxt, period = c.c_uint32(), c.c_uint64(), c.c_uint64(), c.c_float()
        lib.jack_get_cycle_times(self._client, c.byref(frames), c.byref(cur), c.byref(nxt), c.byref(period))
        span = (nxt.value - cur.value) * 1e-6
        ev = self._event()
        for i in range(lib.jack_midi_get_event_count(buf)):
            if lib.jack_midi_event_get(c.byref(ev), buf, i) == 0:
                data = bytes(ev.buffer[: ev.size])
                t = cur.value * 1e-6 + ev.time * span / nframes - self._offset
                with self.lock:
                    self.received.append((t, mido.Message.from_bytes(data)))
        return 0

    def close(self) -> None:
        self._lib.jack_deactivate(self._client)
        self._lib.jack_client_close(self._client)


def check_delivery(server: JackServer, attempt: Callable[[], T], check: Callable[[T], None], tries: int = 3) -> None:
    """Run `attempt` and `check` its result; a failed check is retried only if JACK had an xrun meanwhile.

    On a starved machine the dummy driver misses cycles and JACK itself drops or repeats MIDI events
    (measured: losses only in cycles with an xrun). A failure without an xrun is a real failure; if
    every try fails with xruns, the test is skipped as inconclusive.
    """
    for _ in range(tries):
        before = server.xruns()
        result = attempt()
        try:
            check(result)
            return
        except AssertionError:
            if before is None or server.xruns() == before:
                raise
    import pytest

    pytest.skip(f"failed in all {tries} tries, each with JACK xruns (machine overloaded): inconclusive")
