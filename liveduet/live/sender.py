"""The daemon's side of the sender process (live/sender_child.py): a Scheduler that lives elsewhere.

`SenderProcess` has the Scheduler's interface as the engine, the session and the views use it —
`schedule`, `send_now`, `cancel`, `panic`, `stop`, `next_due`, `pending`, `lateness_stats`, the
counters — and forwards each call as one frame down a pipe, in order, to a child process that
holds the output port and the real Scheduler. The model, the candidates, the VAE's encoder, the
web page and the dashboard's feed run in this process; the notes go out from one that runs nothing
else, so their Python can no longer make an answer late (the daemon's GIL is not the sender's).

What the child sent comes back as reports (a reader thread): `on_sent(msg, due, actual)` for the
recorder and the engine, lateness samples for the summary and the views. `next_due`, `pending` and
`_heap` (the web page's view of queued answer notes) read a mirror of what was scheduled and is not
due yet, pruned by the clock: both processes read the same CLOCK_MONOTONIC.

Invariant: every call reaches the child in the order it was made (one lock, one pipe); when the
daemon dies the child still closes every open note (its stdin ends).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import pickle
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import mido

from liveduet.clock import Clock, MonotonicClock
from liveduet.errors import MidiBackendError, PortNotFoundError
from liveduet.live.listener import clean
from liveduet.live.scheduler import ANSWER_TAG, THRU_TAG, LatenessStats, OnSent
from liveduet.live.sender_child import HEADER, read_frame

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 10.0  # opening a JACK port takes ~50 ms; a child that does not answer in this is stuck
ERRORS = {"PortNotFoundError": PortNotFoundError}


class RemoteOutput:
    """An output port held by the sender process: a name and a handle (what `ports.open_output`
    returns, for the duet's purposes)."""

    def __init__(self, sender: SenderProcess, handle: int, name: str) -> None:
        self.sender, self.handle, self.name = sender, handle, name
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sender.close_port(self)


class SenderProcess:
    """See the module doc. Start it, open ports through it, hand it to the Session as its scheduler."""

    def __init__(self, backend_module: str, clock: Clock | None = None, on_sent: OnSent | None = None,
                 on_warning: Callable[[str], None] | None = None, max_samples: int = 10_000) -> None:
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self.on_sent = on_sent
        self.on_warning = on_warning
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "liveduet.live.sender_child", backend_module],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
                start_new_session=True,  # a Ctrl-C reaches the daemon only; the child ends when it does
            )
        except OSError as err:
            raise MidiBackendError(f"cannot start the sender process ({err.strerror or err})") from err
        self._fd = self._proc.stdin.fileno()  # type: ignore[union-attr]
        self._write_lock = threading.Lock()
        self._call_lock = threading.Lock()
        self._replies: deque[Any] = deque()
        self._reply = threading.Condition()
        self._mirror_lock = threading.Lock()
        self._heap: list[tuple[float, int, mido.Message, str]] = []  # scheduled, not yet due
        self._seq = itertools.count()
        self._lateness: deque[float] = deque(maxlen=max_samples)
        self._stderr: deque[str] = deque(maxlen=20)
        self._stopping = self._closed = self._gone = False
        self.sent = self.retriggers = self.stray_note_offs = self.errors = self.refused_after_close = 0
        self._threads = [threading.Thread(target=f, name=f"liveduet-sender-{n}", daemon=True)
                         for f, n in ((self._read_reports, "reports"), (self._read_stderr, "stderr"))]
        for t in self._threads:
            t.start()

    # ---- ports --------------------------------------------------------------------------------

    def open_output(self, query: str, virtual: bool = False) -> RemoteOutput:
        """Open an output port in the child (PortNotFoundError / MidiBackendError as `ports.open_output`)."""
        reply = self._call(("open", query, virtual))
        if isinstance(reply, tuple) and reply and reply[0] == "error":
            raise ERRORS.get(reply[1], MidiBackendError)(reply[2])
        handle, name = reply
        return RemoteOutput(self, handle, name)

    def use_output(self, port: RemoteOutput | None) -> None:
        """Send on `port` from now on (None: on nothing, the recording still gets every answer)."""
        self._put(("use", port.handle if port is not None else None))

    def close_port(self, port: RemoteOutput) -> None:
        if not self._gone:
            self._call(("close", port.handle))

    # ---- the Scheduler's interface ------------------------------------------------------------

    def schedule(self, due: float, msg: mido.Message, tag: str = ANSWER_TAG) -> bool:
        kept = clean(msg)
        if kept is None:
            raise ValueError(f"the scheduler sends channel messages only, not {msg.type!r}")
        if self._closed or self._stopping:
            self.refused_after_close += 1
            return False
        with self._mirror_lock:
            heapq.heappush(self._heap, (due, next(self._seq), kept, tag))
        return self._put(("S", due, bytes(kept.bytes()), tag))

    def schedule_many(self, events: Iterable[tuple[float, mido.Message]], tag: str = ANSWER_TAG) -> int:
        return sum(self.schedule(due, msg, tag) for due, msg in events)

    def send_now(self, msg: mido.Message, tag: str = THRU_TAG) -> bool:
        if clean(msg) is None:
            return False
        if self._closed:
            self.refused_after_close += 1
            return False
        return self._put(("N", bytes(msg.bytes()), tag))  # the player's bytes, unchanged

    def cancel(self, tag: str) -> int:
        """Drop `tag`'s pending events and close its notes (in the child); 0: the count stays there."""
        with self._mirror_lock:
            self._heap = [e for e in self._heap if e[3] != tag]
            heapq.heapify(self._heap)
        self._put(("C", tag))
        return 0

    def panic(self) -> int:
        with self._mirror_lock:
            self._heap.clear()
        self._put(("P",))
        return 0

    def run_due(self, now: float | None = None, limit: int | None = None) -> int:  # noqa: ARG002
        return 0  # the child's own thread sends

    def next_due(self) -> float | None:
        with self._mirror_lock:
            self._prune()
            return self._heap[0][0] if self._heap else None

    def pending(self, tag: str | None = None) -> int:
        with self._mirror_lock:
            self._prune()
            return sum(1 for e in self._heap if tag is None or e[3] == tag)

    def lateness_stats(self) -> LatenessStats:
        return LatenessStats.of(list(self._lateness))

    def start(self) -> None:
        """Nothing to start: the child's scheduler runs from its first moment."""

    def stop(self, timeout: float | None = 1.0) -> bool:
        """Stop the child's scheduler: pending events dropped, every open note and pedal closed.
        Nothing is sent after it returns; the ports stay open until closed."""
        self._stopping = True
        with self._mirror_lock:
            self._heap.clear()
        ended = self._gone or self._call(("Q",), timeout, missing=False) is None
        self._closed = True
        return ended

    def join(self, timeout: float | None = None) -> bool:  # noqa: ARG002
        return True

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, timeout: float = 3.0) -> None:
        """End the child (after `stop` and the ports' `close`): stdin ends, it closes what is left."""
        self._closed = True
        try:
            self._proc.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for t in self._threads:
            t.join(1.0)

    @property
    def pid(self) -> int:
        return self._proc.pid

    # ---- the pipe -----------------------------------------------------------------------------

    def _prune(self) -> None:
        now = self._clock.now()
        while self._heap and self._heap[0][0] < now:
            heapq.heappop(self._heap)

    def _put(self, obj: Any) -> bool:
        data = pickle.dumps(obj, protocol=5)
        frame = HEADER.pack(len(data)) + data
        with self._write_lock:
            if self._gone:
                return False
            try:
                view = memoryview(frame)
                while view:
                    view = view[os.write(self._fd, view):]
            except OSError:
                self._gone = True
                return False
        return True

    def _call(self, obj: Any, timeout: float | None = CALL_TIMEOUT_S, missing: Any = None) -> Any:
        """A request with a reply (one at a time); `missing` when the child does not answer."""
        with self._call_lock:
            with self._reply:
                self._replies.clear()
            if not self._put(obj):
                return self._dead(missing)
            with self._reply:
                if not self._reply.wait_for(lambda: self._replies or self._gone, timeout):
                    return missing
                return self._replies.popleft() if self._replies else self._dead(missing)

    def _dead(self, missing: Any) -> Any:
        if missing is None and not self._stopping:
            last = self._stderr[-1] if self._stderr else "no message"
            raise MidiBackendError(f"the sender process ended ({last})")
        return missing

    def _read_reports(self) -> None:
        inp = self._proc.stdout
        assert inp is not None
        while True:
            try:
                frame = read_frame(inp)
            except (OSError, ValueError, pickle.UnpicklingError, EOFError):
                frame = None
            if frame is None:
                break
            kind = frame[0]
            if kind == "s":
                _, sent, late, counters = frame
                self.sent, self.retriggers, self.stray_note_offs, errors = counters
                if errors > self.errors and self.on_warning is not None and self.errors == 0:
                    self.on_warning("sending to the output port failed (see the log)")
                self.errors = errors
                self._lateness.extend(late)
                on_sent = self.on_sent
                if on_sent is not None:
                    for raw, due, actual in sent:
                        on_sent(mido.Message.from_bytes(raw), due, actual)
            elif kind == "w":
                log.warning("sender: %s", frame[1])
                if self.on_warning is not None:
                    self.on_warning(frame[1])
            elif kind == "r":
                with self._reply:
                    self._replies.append(frame[1])
                    self._reply.notify_all()
        with self._reply:
            self._gone = True
            self._reply.notify_all()
        if not self._closed and not self._stopping and self.on_warning is not None:
            last = self._stderr[-1] if self._stderr else "no message"
            self.on_warning(f"the sender process ended: no more answers ({last})")

    def _read_stderr(self) -> None:
        err = self._proc.stderr
        assert err is not None
        for raw in iter(err.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._stderr.append(line)
                log.warning("sender: %s", line)
