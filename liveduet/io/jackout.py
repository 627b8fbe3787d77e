"""Sample-accurate MIDI output on JACK: each message written into the cycle that covers its due time,
at its own frame.

rtmidi's JACK output queues a message for the next process cycle and writes it at frame 0: a note
enters the graph up to one period (2.67 ms at `-p 128`) after it was sent, and only if the
scheduler woke on time to send it — on a shared VM 1–3 % of wake-ups came 1–4 ms late. Here the
scheduler hands a note over `LEAD_S` early with its due time (`send_at`); JACK's process callback
writes it at the frame where it is due. A note is late only if it was handed over after its cycle
began (a stall longer than `LEAD_S` minus one period); that lateness is measured in the callback,
on the graph's clock, and each written note is reported with it (`on_written`). Messages sent now
(`send`: thru, barge-in, panic) go into the next cycle at its first free frame, as rtmidi's do.

Order (`Order`): no message goes out before one handed over earlier for the same key —
(channel, note), (channel, controller) or (channel, kind). A barge-in's note-off sent now follows a
note-on handed over for 3 ms later, so the Scheduler's invariant (one note-off per note-on) holds
on the wire; `close` waits for the queue to drain. `retract(group)` (barge-in: the answer's tag; panic
and stop: all) drops the note-ons handed over for it and not yet written, so a cancelled answer starts
nothing due after the next JACK cycle; their note-offs still go out (a note-off for a silent note is
harmless, a missing one is a stuck note).

The process callback is C (`jacktimed.c`): JACK's realtime thread must never wait for Python's
GIL (a Python callback doubled the server's xruns here and lost MIDI with them). It is built with
the system's C compiler on first use and cached (~/.cache/liveduet); without a compiler the sender
keeps rtmidi's output. libjack is reached through ctypes (the library python-rtmidi's JACK API loads
too): no package beyond the design's. Times: the scheduler's clock is `time.perf_counter` (CLOCK_MONOTONIC), JACK's is
CLOCK_MONOTONIC_RAW; each hand-over converts with the offset read at that moment.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import itertools
import os
import shutil
import subprocess
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mido

from liveduet.errors import LiveduetError

LEAD_S = 0.02  # hand-over this early: stalls up to ~17 ms (20 ms − one 2.67 ms period) cost nothing
GROUPS = 1024  # retract groups (answers' tags) remembered: an older answer's notes are long written
MAX_EVENTS_PER_CYCLE = 64  # the rest wait a cycle: a full port buffer drops events silently
DRAIN_S = 0.2  # `close` waits this long at most for handed-over messages to go out
POLL_S = 0.005  # what was written is reported this often (the recording, the figures)
MIDI_TYPE = b"8 bit raw midi"
NO_START_SERVER = 0x01
USE_EXACT_NAME = 0x02
PORT_IS_OUTPUT = 0x2


OnWritten = Callable[[mido.Message, float, float, Any], None]  # (message, due, actual, token)


class JackOutputError(LiveduetError):
    """A JACK output port could not be made or connected."""


# ---- the order of hand-over (Python's side) ------------------------------------------------------


def order_key(data: bytes) -> tuple[int, ...]:
    """Messages with the same key keep their hand-over order on the wire."""
    status = data[0]
    kind, channel = status & 0xF0, status & 0x0F
    if kind in (0x80, 0x90, 0xA0):
        return (channel, 0x90, data[1])  # note on/off and poly pressure of one note share a key
    if kind == 0xB0:
        return (channel, 0xB0, data[1])
    return (channel, kind)


class Order:
    """The time each message is written at: its own, but never before a message handed over earlier
    for the same key, nor before one sent now (so thru and panic keep their order against notes that
    are already late). The callback writes by (time, sequence). Not thread-safe: callers hold a lock."""

    def __init__(self) -> None:
        self._seq = itertools.count()
        self._last: dict[tuple[int, ...], float] = {}  # key -> time of its latest message (bounded by the keys)
        self._floor = float("-inf")  # the latest message sent now

    def place(self, data: bytes, at: float, now: bool) -> tuple[float, int]:
        key = order_key(data)
        when = max(at, self._last.get(key, at), self._floor)
        if now:
            self._floor = at  # the present, not `when`: one held-back note must not delay all thru
        self._last[key] = when
        return when, next(self._seq)


# ---- the C callback: built once per source, loaded with ctypes ---------------------------------------

PROCESS = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p)
SHUTDOWN = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
SOURCE = Path(__file__).with_name("jacktimed.c")
_lib: ctypes.CDLL | None = None
_timed: ctypes.CDLL | None = None


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "liveduet"


def build_callback() -> ctypes.CDLL:
    """The compiled `jacktimed.c` (cached by its hash; `cc` builds it on first use, ~0.3 s)."""
    global _timed
    if _timed is not None:
        return _timed
    src = SOURCE.read_bytes()
    lib_path = _cache_dir() / f"jacktimed-{hashlib.sha256(src).hexdigest()[:12]}.so"
    if not lib_path.exists():
        cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise JackOutputError("no C compiler (cc) to build the JACK output's callback")
        lib_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = lib_path.with_suffix(f".{os.getpid()}.tmp")
        try:
            done = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(tmp), str(SOURCE)],
                                  capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise JackOutputError(f"cannot run the C compiler {cc!r} ({err})") from err
        if done.returncode != 0:
            tmp.unlink(missing_ok=True)
            first = (done.stderr.strip().splitlines() or ["no message"])[0]
            raise JackOutputError(f"cannot build the JACK output's callback: {first}")
        os.replace(tmp, lib_path)  # another process may build the same file at once: both are whole
    lib = ctypes.CDLL(str(lib_path))
    vp, i = ctypes.c_void_p, ctypes.c_int
    lib.lt_new.restype, lib.lt_new.argtypes = vp, [vp, vp, vp, vp, vp, vp, i]
    lib.lt_free.restype, lib.lt_free.argtypes = None, [vp]
    lib.lt_push.restype = i
    lib.lt_push.argtypes = [vp, ctypes.c_double, ctypes.c_double, ctypes.c_uint64, ctypes.c_char_p, i, i,
                            ctypes.c_uint32]
    lib.lt_pending.restype, lib.lt_pending.argtypes = i, [vp]
    lib.lt_read_late.restype = i
    lib.lt_read_late.argtypes = [vp, ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_double), i]
    lib.lt_process.restype, lib.lt_process.argtypes = i, [ctypes.c_uint32, vp]
    lib.lt_retract.restype, lib.lt_retract.argtypes = i, [vp, ctypes.c_uint32]
    lib.lt_retracted.restype, lib.lt_retracted.argtypes = ctypes.c_uint32, [vp]
    _timed = lib
    return lib


def _load() -> ctypes.CDLL:
    """libjack, with the signatures used here."""
    global _lib
    if _lib is not None:
        return _lib
    path = ctypes.util.find_library("jack") or "libjack.so.0"
    try:
        lib = ctypes.CDLL(path)
    except OSError as err:
        raise JackOutputError(f"libjack is not installed ({err})") from err
    vp, u32 = ctypes.c_void_p, ctypes.c_uint32
    sig = {
        "jack_client_open": (vp, [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]),
        "jack_port_register": (vp, [vp, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_ulong]),
        "jack_set_process_callback": (ctypes.c_int, [vp, vp, vp]),
        "jack_on_shutdown": (None, [vp, SHUTDOWN, vp]),
        "jack_activate": (ctypes.c_int, [vp]),
        "jack_deactivate": (ctypes.c_int, [vp]),
        "jack_client_close": (ctypes.c_int, [vp]),
        "jack_connect": (ctypes.c_int, [vp, ctypes.c_char_p, ctypes.c_char_p]),
        "jack_port_name": (ctypes.c_char_p, [vp]),
        "jack_port_get_buffer": (vp, [vp, u32]),
        "jack_midi_clear_buffer": (None, [vp]),
        "jack_midi_event_write": (ctypes.c_int, [vp, u32, ctypes.c_char_p, ctypes.c_size_t]),
        "jack_get_cycle_times": (ctypes.c_int, [vp, ctypes.POINTER(u32), ctypes.POINTER(ctypes.c_uint64),
                                                ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_float)]),
    }
    for name, (restype, argtypes) in sig.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    _lib = lib
    return lib


def fn_address(fn: Any) -> int:
    """The C address of a ctypes function (or callback), to hand to `lt_new`."""
    return ctypes.cast(fn, ctypes.c_void_p).value or 0


def raw_offset() -> float:
    """JACK's clock (CLOCK_MONOTONIC_RAW) minus the scheduler's (perf_counter), read now."""
    a = time.perf_counter()
    raw = time.clock_gettime(time.CLOCK_MONOTONIC_RAW)
    b = time.perf_counter()
    return raw - (a + b) / 2


class JackTimedOutput:
    """One JACK client with one MIDI output port; `send` now, `send_at` at a due time (perf_counter
    seconds). `name` (a full port name) is connected to; `virtual` leaves the port for others to
    connect, named as rtmidi names its own (`RtMidiOut Client:<name>`), so what users see is unchanged.
    What was written reaches `on_written(msg, due, actual, token)` from a reader thread (every
    `POLL_S`): `actual` is the time of its frame, `token` what `send_at` was given."""

    def __init__(self, name: str, virtual: bool = False, on_written: OnWritten | None = None) -> None:
        lib, timed = _load(), build_callback()
        self._c = timed
        self.name = name
        self._on_written = on_written
        self._inflight: dict[int, tuple[mido.Message, float, Any]] = {}  # seq -> what send_at was given
        self._lock = threading.Lock()  # one producer at a time for the C ring
        self._order = Order()
        self._groups: OrderedDict[str, int] = OrderedDict()  # retract group -> its id in C (1, 2, ...)
        self._group_ids = itertools.count(1)
        self._closed = False
        self._alive = True
        status = ctypes.c_int(0)
        client_name, port_name = ("RtMidiOut Client", name) if virtual else ("liveduet", "out")
        self._client = lib.jack_client_open(client_name.encode(), NO_START_SERVER, ctypes.byref(status))
        if not self._client:
            raise JackOutputError(f"cannot open a JACK client (status 0x{status.value:x}): is jackd running?")
        self._port = lib.jack_port_register(self._client, port_name.encode(), MIDI_TYPE, PORT_IS_OUTPUT, 0)
        self._state = timed.lt_new(
            self._client, self._port, fn_address(lib.jack_port_get_buffer), fn_address(lib.jack_midi_clear_buffer),
            fn_address(lib.jack_midi_event_write), fn_address(lib.jack_get_cycle_times), MAX_EVENTS_PER_CYCLE)
        self._shutdown_cb = SHUTDOWN(self._shutdown)  # ctypes callbacks must outlive the client
        if self._port:
            lib.jack_on_shutdown(self._client, self._shutdown_cb, None)
        if (not self._port or not self._state
                or lib.jack_set_process_callback(self._client, fn_address(timed.lt_process), self._state)
                or lib.jack_activate(self._client)):
            lib.jack_client_close(self._client)
            timed.lt_free(self._state)
            raise JackOutputError(f"cannot make a JACK MIDI output for {name!r}")
        if not virtual and lib.jack_connect(self._client, lib.jack_port_name(self._port), name.encode()):
            self._close_client()
            timed.lt_free(self._state)
            raise JackOutputError(f"cannot connect to the JACK MIDI port {name!r}")
        self._reader = threading.Thread(target=self._poll_written, name="liveduet-jack-written", daemon=True)
        self._reader.start()

    def send(self, msg: mido.Message) -> None:
        """Into the next cycle, after anything handed over earlier for the same key."""
        self._push(msg, time.clock_gettime(time.CLOCK_MONOTONIC_RAW), None)

    def send_at(self, msg: mido.Message, due: float, token: Any = None, group: str | None = None) -> None:
        """At `due` (perf_counter seconds), to the frame; reported to `on_written` once written. `group`
        (an answer's tag) is what `retract` names."""
        self._push(msg, due + raw_offset(), (due, token), group)

    def retract(self, group: str | None = None) -> None:
        """Drop the note-ons handed over to `send_at` for `group` (None: for any) and not yet written;
        they are never reported."""
        with self._lock:
            gid = 0 if group is None else self._groups.get(group)
            if gid is None or self._closed:
                return  # nothing was handed over for it
            if self._c.lt_retract(self._state, gid):
                raise JackOutputError("the JACK output's queue is full (4,096 messages handed over)")

    def pending(self) -> int:
        return 0 if self._closed else self._c.lt_pending(self._state)

    def close(self) -> None:
        """Let what was handed over go out (a note-off must follow its note-on), then close."""
        if self._closed:
            return
        deadline = time.monotonic() + DRAIN_S
        while self._alive and self.pending() and time.monotonic() < deadline:
            time.sleep(0.002)
        self._closed = True
        self._close_client()
        self._reader.join(1.0)
        self._read_written()
        self._c.lt_free(self._state)

    def _group_id(self, group: str | None) -> int:
        """The C id of a retract group (0: none); the oldest are forgotten past GROUPS. Call with the lock."""
        if group is None:
            return 0
        gid = self._groups.pop(group, None) or next(self._group_ids)
        self._groups[group] = gid
        if len(self._groups) > GROUPS:
            self._groups.popitem(last=False)
        return gid

    def _push(self, msg: mido.Message, at: float, timed: tuple[float, Any] | None, group: str | None = None) -> None:
        if self._closed:
            return  # as rtmidi after close, minus its segfault
        data = bytes(msg.bytes())
        with self._lock:
            when, seq = self._order.place(data, at, now=timed is None)
            if timed is not None:
                self._inflight[seq] = (msg, *timed)
            gid = self._group_id(group)
            if self._c.lt_push(self._state, when, at, seq, data, len(data), int(timed is not None), gid):
                self._inflight.pop(seq, None)
                raise JackOutputError("the JACK output's queue is full (4,096 messages handed over)")

    def _close_client(self) -> None:
        lib = _load()
        lib.jack_deactivate(self._client)
        lib.jack_client_close(self._client)

    def _poll_written(self) -> None:
        while not self._closed:
            time.sleep(POLL_S)
            self._read_written()

    def _read_written(self) -> None:
        seqs, lates = (ctypes.c_uint64 * 256)(), (ctypes.c_double * 256)()
        while (n := self._c.lt_read_late(self._state, seqs, lates, 256)) > 0:
            with self._lock:
                done = [(self._inflight.pop(seq, None), late) for seq, late in zip(seqs[:n], lates[:n], strict=True)]
            if self._on_written is not None:
                for item, late in done:
                    if item is not None and late >= 0:  # < 0: retracted, never written
                        msg, due, token = item
                        self._on_written(msg, due, due + late, token)

    def _shutdown(self, _arg: object) -> None:
        self._alive = False  # the server went away: nothing will drain
