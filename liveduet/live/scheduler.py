"""The output scheduler: a time-sorted heap of MIDI events sent at absolute due times.

One worker thread waits on a condition until the next event is due (absolute times from one
monotonic clock, so waits never accumulate drift), then sends it. One lock guards the heap, the
open-note table and the port, so the thru path (`send_now`), barge-in (`cancel`) and `panic` can
never interleave a send with the worker's.

Invariant: every note-on that went out gets exactly one note-off. A note-on for a (channel, note)
that is already sounding first sends a note-off (retrigger); a note-off for a note the sender does
not own is dropped; `cancel`, `panic` and `stop` close what is open. With a timing port (`send_at`)
they first retract the note-ons handed over early and not yet written (the port drops them): those
never go out, and the note-offs that close them then reach the synth for a note it never started.

Tests drive it without a thread: `ManualClock.set(t)` then `run_due()`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import mido

from liveduet.clock import Clock, MonotonicClock
from liveduet.live.listener import clean
from liveduet.live.panic import BURST, PAUSE_S, SUSTAIN, note_offs, panic_messages, send_paced

log = logging.getLogger(__name__)

THRU_TAG = "thru"  # the player's own notes; never reported to `on_sent` (the recorder gets them at input)
ANSWER_TAG = "answer"
WARM_NAPS = 3  # with spinning on: the longest wait before a note, in spins (see `_run`)
MAX_WAIT_S = 0.25  # re-check the heap at least this often, whatever the clock does

Key = tuple[int, int]  # (channel, note)
OnSent = Callable[[mido.Message, float, float], None]  # (message, due, actual)


@dataclass(frozen=True)
class LatenessStats:
    """Lateness (actual send time − due time) in seconds over the last samples."""

    count: int
    p50: float
    p99: float
    max: float
    mean: float
    jitter: float  # population standard deviation

    @classmethod
    def of(cls, samples: Iterable[float]) -> LatenessStats:
        xs = sorted(samples)
        if not xs:
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0)
        return cls(
            count=len(xs),
            p50=percentile(xs, 50),
            p99=percentile(xs, 99),
            max=xs[-1],
            mean=statistics.fmean(xs),
            jitter=statistics.pstdev(xs),
        )


def percentile(sorted_xs: list[float], q: float) -> float:
    """Linear-interpolated percentile of an ascending list (numpy's default method)."""
    pos = (len(sorted_xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def realtime_priority(level: int = 1) -> bool:
    """Ask the OS to run the calling thread under SCHED_FIFO (as JACK runs its own): a note due now
    must not wait behind a view's or a model's Python for a core. Quietly False where not allowed."""
    try:
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_FIFO, os.sched_param(level))
    except (AttributeError, OSError):
        return False
    return True


class Scheduler:
    """Sends scheduled messages through `send` at their due times; see the module docstring."""

    def __init__(
        self,
        send: Callable[[mido.Message], None],
        clock: Clock | None = None,
        on_sent: OnSent | None = None,
        on_late: Callable[[float], None] | None = None,
        burst: int = BURST,
        pause: float = PAUSE_S,
        max_samples: int = 10_000,
        spin: float = 0.0,
        send_at: Callable[[mido.Message, float, bool, str], None] | None = None,
        lead: float = 0.0,
        retract: Callable[[str | None], None] | None = None,
    ) -> None:
        self._send = send
        # A port that times messages itself (io/jackout.py) gets scheduled ones `lead` seconds early
        # with their due time, whether to report them and their tag; it measures and reports them once
        # written.
        self._send_at = send_at
        self.lead = lead if send_at is not None else 0.0
        # ...and drops the note-ons of a tag (None: all) it holds and has not written when asked
        # (barge-in, panic, stop): a cancelled answer must not start notes in its last `lead`.
        self._retract = retract if send_at is not None else None
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self._on_sent = on_sent
        self._on_late = on_late  # each lateness sample (the sender process reports them to the daemon)
        self.burst = burst
        self.pause = pause
        self.spin = spin  # seconds before a due time the worker stops waiting and spins (see `_spin`)

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, mido.Message, str]] = []
        self._seq = itertools.count()
        self._open: dict[Key, str] = {}  # sounding note -> tag that owns it
        self._pedal: dict[int, str] = {}  # channel with sustain down -> tag that pressed it
        self._channels: set[int] = set()  # every channel we have sent on, for panic
        self._lateness: deque[float] = deque(maxlen=max_samples)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._closed = False

        # Counters, read by the dashboard (ints: reads are atomic).
        self.sent = 0
        self.retriggers = 0
        self.stray_note_offs = 0
        self.refused_after_close = 0
        self.errors = 0

    # ---- producers -------------------------------------------------------------------------

    def schedule(self, due: float, msg: mido.Message, tag: str = ANSWER_TAG) -> bool:
        """Queue `msg` for absolute time `due` (clock seconds). False once the scheduler is stopped."""
        kept = clean(msg)
        if kept is None:
            raise ValueError(f"the scheduler sends channel messages only, not {msg.type!r}")
        with self._cond:
            if self._closed or self._stopping:
                self.refused_after_close += 1
                return False
            seq = next(self._seq)
            heapq.heappush(self._heap, (due, seq, kept, tag))
            if self._heap[0][1] == seq:
                self._cond.notify()  # new earliest event: the worker must shorten its wait
        return True

    def schedule_many(self, events: Iterable[tuple[float, mido.Message]], tag: str = ANSWER_TAG) -> int:
        """Queue several `(due, message)` pairs; return how many were accepted."""
        return sum(self.schedule(due, msg, tag) for due, msg in events)

    def send_now(self, msg: mido.Message, tag: str = THRU_TAG) -> bool:
        """Send at once, ahead of the heap (MIDI thru). False (nothing sent) once stopped."""
        kept = clean(msg)
        if kept is None:
            return False
        with self._lock:
            if self._closed:
                self.refused_after_close += 1
                return False
            now = self._clock.now()
            # Bookkeeping sees the normalised message; the wire gets the player's bytes unchanged
            # (a velocity-0 note-on stays one: latency testers and some synths care).
            self._deliver(kept, tag, now, measure=False, wire=msg)
        return True

    # ---- the worker ----------------------------------------------------------------------------

    def run_due(self, now: float | None = None, limit: int | None = None) -> int:
        """Send every event due by `now` (default: the clock, re-read per event), at most `limit`
        messages; return how many messages went out. The worker thread calls this; so do tests."""
        sent = 0
        while limit is None or sent < limit:
            with self._lock:
                if self._closed or not self._heap:
                    break
                t = self._clock.now() if now is None else now
                if self._heap[0][0] > t + self.lead:
                    break
                due, _, msg, tag = heapq.heappop(self._heap)
                sent += self._deliver(msg, tag, due, measure=True)
        return sent

    def next_due(self) -> float | None:
        with self._lock:
            return self._heap[0][0] if self._heap else None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("Scheduler already started")
        self._thread = threading.Thread(target=self._run, name="liveduet-scheduler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        realtime_priority()
        while True:
            try:
                sent = self.run_due(limit=self.burst)
            except Exception as err:
                self.errors += 1
                if self.errors == 1:
                    log.exception("scheduler send failed: %s", err)
                sent = 0
            spin_until = None
            with self._cond:
                if self._stopping or self._closed:
                    return
                if not self._heap:
                    timeout = MAX_WAIT_S
                elif sent >= self.burst:
                    timeout = self.pause  # a burst went out: let JACK drain before the next
                else:
                    timeout = min(MAX_WAIT_S, self._heap[0][0] - self.lead - self._clock.now())
                    if self.spin > 0 and 0 < timeout <= self.spin:
                        spin_until, timeout = self._heap[0][0] - self.lead, 0.0
                    elif self.spin > 0 and timeout > self.spin:
                        # Wake a little early, then spin to the due time; and nap in short waits while
                        # notes are queued: a CPU left idle longer wakes slowly (a VM's idle vCPU can
                        # take milliseconds to come back). ~1 % of a core while answering.
                        timeout = min(timeout - self.spin, self.spin * WARM_NAPS)
                if timeout > 0:
                    self._cond.wait(timeout)
            if spin_until is not None:
                self._spin(spin_until)

    def _spin(self, until: float) -> None:
        """Yield (the GIL too: `sleep(0)`) until `until` or an earlier event: a timed wait wakes
        0.1–0.3 ms late, a spin within microseconds. Only in the sender process (`spin > 0`), where
        the last millisecond before a note costs nobody's Python."""
        heap = self._heap
        while self._clock.now() < until and not self._stopping:
            if heap and heap[0][0] < until:  # one read of a list item: atomic, no lock needed
                until = heap[0][0]
            time.sleep(0)

    def stop(self, timeout: float | None = 1.0) -> bool:
        """End the worker, drop what is pending and close every open note and pedal.

        After `stop` returns nothing is ever sent again, so the port may be closed. Returns False if
        the worker did not end within `timeout` (it still sends nothing more).
        """
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        ended = self.join(timeout)
        with self._lock:
            if self._closed:
                return ended
            self._heap.clear()
            self._retract_held(None)
            msgs = note_offs(self._open) + [
                mido.Message("control_change", channel=ch, control=SUSTAIN, value=0) for ch in sorted(self._pedal)
            ]
            try:
                send_paced(self._closer(), msgs, self._clock, self.burst, self.pause)
            except Exception as err:
                self.errors += 1
                log.warning("could not close open notes on stop: %s", err)
            self._open.clear()
            self._pedal.clear()
            self._closed = True
        return ended

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- barge-in and panic ---------------------------------------------------------------------

    def cancel(self, tag: str) -> int:
        """Drop pending events of `tag` and at once close its open notes and sustain; return messages sent."""
        with self._cond:
            if self._closed:
                return 0
            self._heap = [e for e in self._heap if e[3] != tag]
            heapq.heapify(self._heap)
            self._retract_held(tag)
            keys = sorted(k for k, t in self._open.items() if t == tag)
            pedals = sorted(ch for ch, t in self._pedal.items() if t == tag)
            msgs = note_offs(keys) + [
                mido.Message("control_change", channel=ch, control=SUSTAIN, value=0) for ch in pedals
            ]

            def deliver(m: mido.Message) -> None:
                self._deliver(m, tag, self._clock.now(), measure=False)

            # The lock is held across the pauses: no new note may slip in between our note-offs.
            n = send_paced(deliver, msgs, self._clock, self.burst, self.pause)
            self._cond.notify()
            return n

    def panic(self) -> int:
        """Drop everything pending; note-off every open note; then CC64=0, CC123, CC120 on every used
        channel, paced. Returns the number of messages sent."""
        with self._cond:
            if self._closed:
                return 0
            self._heap.clear()
            self._retract_held(None)
            msgs = panic_messages(self._open, self._channels)
            emit = self._closer()
            self._open.clear()
            self._pedal.clear()
            n = send_paced(emit, msgs, self._clock, self.burst, self.pause)
            self._cond.notify()
            return n

    # ---- state for the dashboard and tests ------------------------------------------------------

    def open_notes(self, tag: str | None = None) -> list[Key]:
        with self._lock:
            return sorted(k for k, t in self._open.items() if tag is None or t == tag)

    def pending(self, tag: str | None = None) -> int:
        with self._lock:
            return sum(1 for e in self._heap if tag is None or e[3] == tag)

    def lateness_stats(self) -> LatenessStats:
        with self._lock:
            samples = list(self._lateness)
        return LatenessStats.of(samples)

    # ---- internals (call with the lock held) ------------------------------------------------------

    def _deliver(self, msg: mido.Message, tag: str, due: float, measure: bool, wire: mido.Message | None = None) -> int:
        """Send one message with open-note bookkeeping; return how many messages went out."""
        timed = measure and self._send_at is not None
        measure = measure and not timed  # the timing port measures its own
        if msg.type == "note_on":
            key = (msg.channel, msg.note)
            out = 0
            owner = self._open.pop(key, None)
            # The player striking a key they hold (or a tester's repeated probe) goes through as
            # played: thru adds nothing to the player's stream. Across senders, a retrigger
            # note-off keeps every note-on paired with one note-off.
            if owner is not None and not (owner == THRU_TAG and tag == THRU_TAG):
                self.retriggers += 1
                off = mido.Message("note_off", channel=msg.channel, note=msg.note, velocity=0)
                self._emit(off, due, report=owner != THRU_TAG, timed=timed, tag=tag)
                out += 1
            actual = self._emit(msg, due, report=tag != THRU_TAG, wire=wire, timed=timed, tag=tag)
            self._open[key] = tag
            if measure:
                self._measured(actual - due)
            return out + 1
        if msg.type == "note_off":
            key = (msg.channel, msg.note)
            owner = self._open.get(key)
            if owner != tag and (owner is not None or tag != THRU_TAG):
                # Taken over by another sender (retrigger): its owner will close it. A player's
                # note-off for a note we never saw (held before we started) still goes through.
                self.stray_note_offs += 1
                return 0
            self._open.pop(key, None)
        elif msg.type == "control_change" and msg.control == SUSTAIN:
            if msg.value >= 64:
                self._pedal[msg.channel] = tag
            else:
                self._pedal.pop(msg.channel, None)
        actual = self._emit(msg, due, report=tag != THRU_TAG, wire=wire, timed=timed, tag=tag)
        if measure:
            self._measured(actual - due)
        return 1

    def _retract_held(self, tag: str | None) -> None:
        """Ask the timing port to drop the note-ons of `tag` (None: all) it holds; the note-offs follow."""
        if self._retract is None:
            return
        try:
            self._retract(tag)
        except Exception as err:  # the note-offs must still go out
            self.errors += 1
            log.warning("could not retract handed-over notes: %s", err)

    def _measured(self, late: float) -> None:
        self._lateness.append(late)
        if self._on_late is not None:
            self._on_late(late)

    def _closer(self) -> Callable[[mido.Message], None]:
        """A sender for closing messages that reports all but note-offs of the player's (thru) notes."""
        thru = {k for k, t in self._open.items() if t == THRU_TAG}

        def emit(m: mido.Message) -> None:
            self._emit(m, report=not (m.type == "note_off" and (m.channel, m.note) in thru))

        return emit

    def _emit(self, msg: mido.Message, due: float | None = None, report: bool = True,
              wire: mido.Message | None = None, timed: bool = False, tag: str = "") -> float:
        self.sent += 1
        self._channels.add(msg.channel)
        if timed and due is not None:
            # The port reports it (to whoever `on_sent` would tell) once written, with its frame's time.
            self._send_at(msg if wire is None else wire, due, report, tag)
            return due
        self._send(msg if wire is None else wire)
        actual = self._clock.now()
        if report and self._on_sent is not None:
            self._on_sent(msg, actual if due is None else due, actual)
        return actual
