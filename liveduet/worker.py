"""The one lifecycle every background worker shares: start(), stop(timeout), join(timeout).

A subclass calls `Worker.__init__`, writes `_run` (which returns once `_stop` is set) and names
its thread. Producers are stopped this way before the ports they send on are closed.
"""

from __future__ import annotations

import threading


class Worker:
    thread_name = "liveduet-worker"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 2.0) -> bool:
        """Ask the thread to end and wait for it; True when it has ended."""
        self._stop.set()
        return self.join(timeout)

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()
