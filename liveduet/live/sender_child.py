"""The sender process: the output ports and the Scheduler, alone in their own interpreter.

`python -m liveduet.live.sender_child BACKEND` is started by `live/sender.py` (never by a user). It
holds no model, no view and no web server, so the scheduler thread never waits for another thread's
Python (a GIL of its own) — with the model, the candidates, the VAE and the views in the daemon, the
scheduler there waited 1–3 ms at p99 on two cores. Frames (4-byte length + pickle) come on stdin:

    ("open", query, virtual) → ("r", (id, name)) | ("r", ("error", class name, line))
    ("use", id | None)       the port the scheduler sends on from now on
    ("close", id) → ("r", None)
    ("S", due, bytes, tag)   schedule          ("N", bytes, tag)   send now (thru)
    ("C", tag)   cancel      ("P",)   panic    ("Q",) → ("r", None)   stop: close every open note

and reports go back on stdout: ("s", [(bytes, due, actual)], [lateness], counters) for what was sent,
("w", line) for a problem. End of stdin (the daemon ended, however it ended) stops the scheduler —
every open note is closed — and closes the ports: a crashed daemon leaves no stuck note.

On JACK the output is frame-timed (io/jackout.py): the scheduler hands each note over `LEAD_S` early
and JACK's process callback writes it at the frame where it is due, so the child's wake-ups no longer
set the timing; lateness is measured there. Elsewhere (ALSA, or LIVEDUET_JACK_TIMED=0, or no C
compiler to build the callback) rtmidi's output with the spinning scheduler.

Invariant: the Scheduler's (every note-on gets exactly one note-off), now also across a daemon crash.
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

import mido

from liveduet.io import jackout
from liveduet.io.portnames import match_port

HEADER = struct.Struct("<I")
MAX_FRAME = 1 << 20
SPIN_S = 0.001  # the scheduler spins this last stretch before a due time (~1 % of a core at 8 notes/s)


def write_frame(out: BinaryIO, obj: Any) -> None:
    """One frame: length, then the pickle (protocol 5)."""
    data = pickle.dumps(obj, protocol=5)
    out.write(HEADER.pack(len(data)) + data)
    out.flush()


def read_frame(inp: BinaryIO) -> Any:
    """The next frame's object, or None at the end of the stream (or a torn frame)."""
    head = inp.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (n,) = HEADER.unpack(head)
    if n > MAX_FRAME:
        raise ValueError(f"frame of {n} bytes")
    data = inp.read(n)
    if len(data) < n:
        return None
    return pickle.loads(data)


class Reports:
    """What the scheduler sent, batched for the daemon by a writer thread (a blocked pipe must never
    stall a send: the scheduler thread only appends under a lock)."""

    def __init__(self, out: BinaryIO, counters: Callable[[], tuple]) -> None:
        self._out = out
        self._counters = counters
        self._cond = threading.Condition()
        self._sent: list[tuple[bytes, float, float]] = []
        self._late: list[float] = []
        self._other: list[Any] = []
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="liveduet-sender-reports", daemon=True)
        self._thread.start()

    def sent(self, msg: mido.Message, due: float, actual: float) -> None:
        with self._cond:
            self._sent.append((bytes(msg.bytes()), due, actual))
            self._cond.notify()

    def late(self, seconds: float) -> None:
        with self._cond:
            self._late.append(seconds)
            self._cond.notify()

    def frame(self, obj: Any) -> None:
        """A reply or a warning, in order after the reports queued before it."""
        with self._cond:
            self._other.append(obj)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(2.0)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._sent or self._late or self._other or self._closed)
                sent, late, other = self._sent, self._late, self._other
                self._sent, self._late, self._other = [], [], []
                closed = self._closed
            try:
                if sent or late:
                    write_frame(self._out, ("s", sent, late, self._counters()))
                for obj in other:
                    write_frame(self._out, obj)
            except (BrokenPipeError, OSError):
                return  # the daemon is gone: stdin's end will stop us
            if closed:
                return


def serve(backend_module: str, inp: BinaryIO, out: BinaryIO) -> None:
    """Run until stdin ends; see the module doc."""
    from liveduet.errors import LiveduetError
    from liveduet.io import ports
    from liveduet.live.scheduler import Scheduler, realtime_priority

    # Every thread here under SCHED_FIFO (they inherit it): one that held the GIL and was preempted
    # by a busy core's ordinary work would make the scheduler thread wait behind it for milliseconds.
    realtime_priority()
    sys.setswitchinterval(0.0002)
    backend = ports.get_backend_module(backend_module)
    timed, why_not = timed_output(backend_module)
    held: dict[int, Any] = {}
    current: list[Any] = [None]
    lock = threading.Lock()  # the port in use, swapped by "use" while the scheduler sends

    def send(msg: mido.Message) -> None:
        with lock:
            if current[0] is not None:
                current[0].send(msg)

    def send_at(msg: mido.Message, due: float, report: bool, tag: str) -> None:
        with lock:
            if current[0] is not None:
                current[0].send_at(msg, due, report, tag)

    def retract(tag: str | None) -> None:
        with lock:
            if current[0] is not None:
                current[0].retract(tag)

    def written(msg: mido.Message, due: float, actual: float, report: bool) -> None:
        reports.late(actual - due)
        if report:
            reports.sent(msg, due, actual)

    reports: Reports
    on_sent = lambda m, due, actual: reports.sent(m, due, actual)  # noqa: E731
    if timed:  # JACK writes each note at its frame: no spinning, lateness measured in the graph
        # LIVEDUET_JACK_RETRACT=0 is a diagnostic (benchmarks/bench_bargein.py): a barge-in without the retract.
        no_retract = os.environ.get("LIVEDUET_JACK_RETRACT", "1") == "0"
        sched = Scheduler(send, on_sent=on_sent, send_at=send_at, lead=jackout.LEAD_S,
                          retract=None if no_retract else retract)
    else:
        sched = Scheduler(send, on_sent=on_sent, on_late=lambda x: reports.late(x), spin=SPIN_S)
    reports = Reports(out, lambda: (sched.sent, sched.retriggers, sched.stray_note_offs, sched.errors))
    if why_not:
        reports.frame(("w", why_not))
    sched.start()
    try:
        while (frame := read_frame(inp)) is not None:
            op = frame[0]
            if op == "S":
                sched.schedule(frame[1], mido.Message.from_bytes(frame[2]), frame[3])
            elif op == "N":
                sched.send_now(mido.Message.from_bytes(frame[1]), frame[2])
            elif op == "C":
                sched.cancel(frame[1])
            elif op == "P":
                sched.panic()
            elif op == "Q":
                sched.stop()
                reports.frame(("r", None))
            elif op == "open":
                try:
                    port = open_port(backend, frame[1], frame[2], timed, written)
                except LiveduetError as err:
                    reports.frame(("r", ("error", type(err).__name__, str(err))))
                else:
                    held[id(port)] = port
                    reports.frame(("r", (id(port), port.name)))
            elif op == "use":
                with lock:
                    current[0] = held.get(frame[1]) if frame[1] is not None else None
            elif op == "close":
                port = held.pop(frame[1], None)
                with lock:
                    if current[0] is port:
                        current[0] = None
                if port is not None:
                    port.close()
                reports.frame(("r", None))
    finally:
        sched.stop()  # the daemon ended without "Q" (a crash, a kill): close what sounds
        with lock:
            current[0] = None
        for port in held.values():
            port.close()
        reports.close()


def timed_output(backend_module: str) -> tuple[bool, str | None]:
    """Whether JACK gets the frame-accurate output (io/jackout.py), and why not where it should.
    LIVEDUET_JACK_TIMED=0 is a diagnostic: rtmidi's output and the spinning scheduler, side by side."""
    if not backend_module.endswith("/UNIX_JACK") or os.environ.get("LIVEDUET_JACK_TIMED", "1") == "0":
        return False, None
    try:
        jackout._load()
        jackout.build_callback()
    except (jackout.JackOutputError, OSError) as err:
        return False, f"notes go out through rtmidi (up to a JACK period late): {err}"
    return True, None


def open_port(backend: Any, query: str, virtual: bool, timed: bool, written: jackout.OnWritten) -> Any:
    """The output port for `query`, as `ports.open_output` resolves it; a timed JACK one if `timed`."""
    from liveduet.io import ports

    if not timed:
        return ports.open_output(backend, query, virtual=virtual)
    name = query if virtual else match_port(query, ports.port_names(backend, "output"), "output")
    return jackout.JackTimedOutput(name, virtual=virtual, on_written=written)


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python -m liveduet.live.sender_child BACKEND (started by liveduet run)", file=sys.stderr)
        return 2
    # Frames only on the pipe: anything printed by a library would corrupt it.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    serve(sys.argv[1], sys.stdin.buffer, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
