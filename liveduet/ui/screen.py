"""The dashboard drawn by a child process, so Rich's rendering never holds the daemon's GIL.

    daemon: pusher thread (10 Hz) ── Pipe: (snapshot as dicts, log lines, notice) ──> child: Rich Live → terminal

Building and printing one frame at 120×40 costs 6–15 ms of pure Python; drawn on a thread of the
daemon it held the interpreter for that long ten times a second, and the scheduler thread, woken
for a due note, waited for its turn (answer lateness p99 1.2–1.5 ms instead of ~0.8). In a child
the daemon's cost is one pickle of an immutable snapshot (~50 µs) per frame. Key and chord
(music21) are computed in the child too. The child inherits the terminal (stdout) and ignores
Ctrl-C: the daemon ends it (None on the pipe), and it restores the screen on its way out.
While the screen is taken, the daemon's stderr goes to a `LogBuffer` (shown in the log panel).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any, TextIO

STOP_TIMEOUT_S = 3.0
NICE = 10


def plain(snapshot: Any) -> dict | None:
    """A session snapshot as plain dicts for the pipe: unpickling the session's own classes would
    import the engine, and torch with it, into the child (seconds before the first frame)."""
    if snapshot is None:
        return None
    return {**vars(snapshot), "engine": dict(vars(snapshot.engine))}


def as_snapshot(data: dict | None) -> Any:
    """`plain`'s dicts back as something `render` reads like a snapshot (attributes)."""
    if data is None:
        return None
    return SimpleNamespace(**{**data, "engine": SimpleNamespace(**data["engine"])})


def lower_priority(step: int = NICE) -> None:
    """Yield the CPU to the duet: a view's process is niced (on 2 cores the drawing's 10–15 % of a
    core otherwise competes with the scheduler thread for a CPU)."""
    with contextlib.suppress(OSError, AttributeError):
        os.nice(step)


def draw_main(conn: Any, refresh_hz: float) -> None:
    """The child: draw the latest (snapshot, log, notice) until None or the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the daemon's to handle
    lower_priority()
    from rich.console import Console
    from rich.live import Live

    from liveduet.ui.dashboard import render
    from liveduet.ui.harmony import HarmonyCache, harmony_inputs

    console = Console()
    # music21 on a thread of the child: a frame never waits for it (it returns the last names).
    harmony = HarmonyCache(executor=ThreadPoolExecutor(1))
    latest: list[Any] = [(None, (), "")]

    def frame() -> Any:
        snap, log, notice = latest[0]
        names = harmony.names(*harmony_inputs(snap)) if snap is not None else None
        size = console.size
        return render(snap, size.width, size.height, harmony=names, log=log, notice=notice)

    with Live(console=console, get_renderable=frame, refresh_per_second=refresh_hz, screen=True,
              redirect_stdout=False, redirect_stderr=False, transient=False):
        while True:
            try:
                item = conn.recv()
            except (EOFError, OSError):
                break
            if item is None:
                break
            snap, log, notice = item
            latest[0] = (as_snapshot(snap), log, notice)
    console.file.flush()
    os._exit(0)  # the screen is restored: do not wait for a music21 analysis still running


class ScreenProcess:
    """Starts the child, pushes what `source()` returns at `hz` from a thread, stops it cleanly."""

    def __init__(self, source: Callable[[], tuple], hz: float) -> None:
        self.source, self.hz = source, hz
        ctx = mp.get_context("spawn")
        child, self._conn = ctx.Pipe(duplex=False)  # (reading end, writing end)
        self._proc = ctx.Process(target=draw_main, args=(child, hz), name="liveduet-screen", daemon=True)
        self._child_conn = child
        self._quit = threading.Event()
        self._thread = threading.Thread(target=self._push, name="liveduet-screen-push", daemon=True)

    def start(self) -> None:
        self._proc.start()
        self._child_conn.close()  # the child holds its end; ours closing lets it see EOF if we die
        self._thread.start()

    def _push(self) -> None:
        last: Any = None
        while not self._quit.wait(1 / self.hz):
            try:
                item = self.source()
            except Exception:  # a frame that could not be gathered: the next one will be
                continue
            if item == last:
                continue  # nothing new to draw (snapshots compare by value)
            last = item
            try:
                self._conn.send(item)
            except (OSError, ValueError):  # the child is gone: the duet goes on without a screen
                return

    def stop(self) -> None:
        self._quit.set()
        self._thread.join(1.0)
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(None)
        self._proc.join(STOP_TIMEOUT_S)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(1.0)
        self._conn.close()


class LogBuffer:
    """Stands in for sys.stderr while the dashboard runs: `write` appends to a deque, nothing more,
    so a log line from the engine thread costs microseconds and never waits on a lock or a tty."""

    def __init__(self, original: TextIO, maxlen: int = 5000) -> None:
        self.original = original
        self.lines: deque[str] = deque(maxlen=maxlen)
        self._partial = ""

    def write(self, text: str) -> int:
        *done, self._partial = (self._partial + text).split("\n")
        self.lines.extend(done)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.original.fileno()  # for faulthandler & co: they bypass Python's buffers anyway

    @property
    def encoding(self) -> str:
        return getattr(self.original, "encoding", "utf-8")

    def tail(self, n: int = 3) -> tuple[str, ...]:
        """The last `n` lines, from any thread (a line written meanwhile is tried again, or left out)."""
        for _ in range(3):
            try:
                return tuple(self.lines)[-n:]
            except RuntimeError:  # "deque mutated during iteration": the engine thread just wrote
                continue
        return ()

    def drain(self) -> list[str]:
        out = list(self.lines) + ([self._partial] if self._partial else [])
        self.lines.clear()
        self._partial = ""
        return out
