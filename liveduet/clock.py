"""Clocks for the real-time path: monotonic seconds, injectable so tests never sleep.

Every timestamp in the live path (input stamps, due times, recording times) comes from one `Clock`.
`MonotonicClock` is the real one; `ManualClock` is moved by the test.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """A source of monotonic seconds and a way to wait on it."""

    def now(self) -> float:
        """Seconds on a monotonic scale (the origin is arbitrary)."""
        ...

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Wait until `event` is set or `timeout` seconds pass; return whether the event is set."""
        ...


class MonotonicClock:
    """The real clock: `time.perf_counter` (monotonic, sub-microsecond resolution)."""

    def now(self) -> float:
        return time.perf_counter()

    def wait(self, event: threading.Event, timeout: float) -> bool:
        return event.wait(max(0.0, timeout))


class ManualClock:
    """A clock that only moves when told to. Thread-safe.

    `wait` never blocks: if the event is not set it advances the clock by `timeout` (as if the time
    had elapsed) and returns False. That keeps paced senders deterministic in tests: their pauses show
    up as exact gaps in the recorded timestamps.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._t = float(start)
        self._lock = threading.Lock()
        self.waits: list[float] = []  # every timeout asked for, for tests that check pacing

    def now(self) -> float:
        with self._lock:
            return self._t

    def advance(self, dt: float) -> float:
        """Move the clock forward by `dt` seconds; return the new time."""
        if dt < 0:
            raise ValueError(f"a monotonic clock cannot go back (dt={dt})")
        with self._lock:
            self._t += dt
            return self._t

    def set(self, t: float) -> None:
        """Jump to absolute time `t` (not earlier than now)."""
        with self._lock:
            if t < self._t:
                raise ValueError(f"a monotonic clock cannot go back ({t} < {self._t})")
            self._t = float(t)

    def wait(self, event: threading.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        self.waits.append(timeout)
        self.advance(max(0.0, timeout))
        return event.is_set()
