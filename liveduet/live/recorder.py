"""Session recording: both parts to a type-1 MIDI file, crash-safe through an append-only journal.

While playing, every message goes to memory and, within a second, to ``PATH.journal`` (one JSON line
per message, fsync'd by a background thread). `finish` writes the MIDI file atomically and removes
the journal; after a crash or ``kill -9``, `recover` rebuilds the file from the journal.

Invariant: the journal on disk is always a prefix of what is in memory, and `journaled_until` says
up to when. When it cannot be written (disk full), journaling stops with ONE warning saying so and
up to when the journal is complete; recording goes on in memory, and `finish` saves everything if
there is room, else (the journal removed to make room) at least the journalled part — a valid file.

Journal lines::

    {"liveduet_journal": 1, "out": "...", "started": "...", "tempo_bpm": 120.0, "ticks_per_beat": 480}
    {"t": 1.2345, "track": "player", "hex": "903c64"}     seconds since the recording's start
    {"tempo_bpm": 96.0}                                    tempo known later (last one wins)
    {"alive": 12.5}                                        heartbeat: the session lasted this long
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mido

from liveduet.clock import Clock, MonotonicClock
from liveduet.errors import LiveduetError
from liveduet.fsutil import check_output_file, disk_full, os_error_line
from liveduet.live.listener import clean
from liveduet.live.sessionfile import (  # the file itself: live/sessionfile.py
    DEFAULT_TEMPO_BPM,
    TICKS_PER_BEAT,
    TRACK_NAMES,
    Event,
    RecordingExistsError,
    build_midi,
    file_tempo,
    write_midi_atomic,
)
from liveduet.worker import Worker

log = logging.getLogger(__name__)

JOURNAL_SUFFIX = ".journal"
JOURNAL_VERSION = 1
MAX_SECONDS = 24 * 3600.0  # a journal time beyond this is damage (and would overflow a MIDI delta)


class JournalError(LiveduetError):
    """A journal cannot be read back."""


class RecordingError(LiveduetError):
    """The recording cannot be written (no space, a read-only or missing folder)."""


def journal_path(path: str | os.PathLike[str]) -> Path:
    """Where the journal for recording `path` lives."""
    return Path(str(path) + JOURNAL_SUFFIX)


def check_recording_path(path: str | os.PathLike[str], force: bool = False) -> Path:
    """What `Recorder` would refuse, said before a session starts: an unwritable place (one line,
    `OutputPathError`), an existing recording or the journal of an earlier session without `force`."""
    path = Path(path)
    if path.exists() and not path.is_dir() and not force:
        raise RecordingExistsError(f"{path} exists (use --force to overwrite, or another name)")
    check_output_file(path, "the recording")
    journal = journal_path(path)
    if journal.is_dir():
        raise RecordingError(f"cannot record to {path}: its journal {journal} is a folder")
    if journal.exists() and not force and not _empty(journal):
        raise RecordingExistsError(
            f"a journal of an earlier session is at {journal}: recover it with "
            f"`liveduet recover {journal} --out FILE`, or use --force to discard it"
        )
    return path


def _empty(path: Path) -> bool:
    """A journal with nothing in it (a session that could not even write its header): no obstacle."""
    try:
        return not path.read_bytes().strip()
    except OSError:
        return False


class Recorder(Worker):
    """Records `(time, track, message)` for one session; see the module docstring.

    `record` is cheap (an append under a lock) and safe from any thread; the journal is written by
    the flush thread (`start`) or by `flush()`. Hygiene messages are dropped. Problems the user should
    know about while playing go to `on_warning` (default: the log), once.
    """

    thread_name = "liveduet-recorder"

    def __init__(
        self,
        path: str | os.PathLike[str],
        force: bool = False,
        clock: Clock | None = None,
        tempo_bpm: float = DEFAULT_TEMPO_BPM,
        flush_interval: float = 0.5,
        t0: float | None = None,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.journal = journal_path(self.path)
        self.force = force
        if not force:
            if self.path.exists():
                raise RecordingExistsError(f"{self.path} exists; choose another name or use --force")
            if self.journal.exists() and not _empty(self.journal):
                raise RecordingExistsError(
                    f"a journal of an earlier session is at {self.journal}: recover it with "
                    f"`liveduet recover {self.journal} --out FILE`, or use --force to discard it"
                )
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self.t0 = self._clock.now() if t0 is None else t0
        self.tempo_bpm = tempo_bpm
        self.flush_interval = flush_interval
        self.on_warning = on_warning if on_warning is not None else log.warning
        self.filtered = 0
        self.journaled_until = 0.0  # seconds: the journal holds everything recorded up to here
        self.journal_error: str | None = None  # why journaling stopped; None while it works
        self.saved_until: float | None = None  # set by `finish` when only the journalled part fit

        self._lock = threading.Lock()  # guards _events and _pending; held only for appends
        self._io_lock = threading.Lock()  # one writer of the journal at a time
        self._flushed = threading.Condition()
        self._events: list[tuple[float, str, bytes]] = []  # what `events` returns, the messages as bytes
        self._pending: list[tuple[str, float | None]] = []  # (journal line, the time it vouches for)
        self._appended = 0  # lines handed to the journal so far
        self._written = 0  # lines on disk (fsync'd)
        self._last_t = 0.0
        Worker.__init__(self)
        self._finished = False

        header = {
            "liveduet_journal": JOURNAL_VERSION,
            "out": str(self.path),
            "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "tempo_bpm": tempo_bpm,
            "ticks_per_beat": TICKS_PER_BEAT,
        }
        self._fd: int | None = None
        self._size = 0  # bytes of whole lines in the journal
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.journal, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        except OSError as err:
            raise RecordingError(f"cannot record to {self.path}: {os_error_line(err)}") from err
        try:
            self._write_all((json.dumps(header) + "\n").encode())
            os.fsync(self._fd)
        except OSError as err:  # the disk is full already
            self._close_journal()
            self.journal.unlink(missing_ok=True)  # an empty journal would only confuse `recover`
            raise RecordingError(f"cannot record to {self.path}: {os_error_line(err)}") from err

    # ---- recording (any thread) ------------------------------------------------------------------

    def record(self, track: str, msg: mido.Message, t: float | None = None) -> bool:
        """Record `msg` on `track` ("player" or "liveduet") at clock time `t` (default: now)."""
        if track not in TRACK_NAMES:
            raise ValueError(f"unknown track {track!r}; expected one of {sorted(TRACK_NAMES)}")
        kept = clean(msg)
        if kept is None:
            self.filtered += 1
            return False
        rel = max(0.0, (self._clock.now() if t is None else t) - self.t0)
        data = bytes(kept.bin())
        line = json.dumps({"t": rel, "track": track, "hex": data.hex()})
        with self._lock:
            if self._finished:
                return False
            self._events.append((rel, track, data))  # bytes: ~40 B where a mido.Message takes ~250
            self._pending.append((line, rel))
            self._appended += 1
        return True

    def record_player(self, msg: mido.Message, t: float | None = None) -> bool:
        return self.record("player", msg, t)

    def on_sent(self, msg: mido.Message, due: float, actual: float) -> None:
        """The scheduler's hook: what liveduet played, at the time it actually went out."""
        self.record("liveduet", msg, actual)

    def set_tempo(self, bpm: float) -> None:
        """The tempo the file will use (journalled so `recover` knows it)."""
        with self._lock:
            self.tempo_bpm = bpm
            self._pending.append((json.dumps({"tempo_bpm": bpm}), None))
            self._appended += 1

    @property
    def events(self) -> list[Event]:
        with self._lock:
            events = list(self._events)
        return [(t, track, mido.Message.from_bytes(data)) for t, track, data in events]

    # ---- journal -------------------------------------------------------------------------------

    def _write_all(self, data: bytes) -> None:
        """Append `data`; `_size` counts what got written even when an error ends it."""
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            self._size += n
            view = view[n:]

    def flush(self) -> int:
        """Write pending journal lines and fsync; return how many lines were written.

        Never raises for the disk: a failure stops journaling (see the module doc)."""
        with self._io_lock:
            with self._lock:
                batch, self._pending = self._pending, []
                target = self._appended
            if self._fd is None:  # closed, or journaling stopped: the lines live on in memory
                return 0
            start = self._size
            data = "".join(line + "\n" for line, _ in batch).encode()
            try:
                if data:
                    self._write_all(data)
                os.fsync(self._fd)
            except OSError as err:
                self._journal_failed(err, batch, start)
                return 0
            self.journaled_until = max([self.journaled_until, *(t for _, t in batch if t is not None)])
        with self._flushed:
            self._written = max(self._written, target)
            self._flushed.notify_all()
        return len(batch)

    def _journal_failed(self, err: OSError, batch: list[tuple[str, float | None]], start: int) -> None:
        """Stop journaling (no retry every half second) and say so once. The journal keeps its whole
        lines: a partly written one is cut off (shrinking a file needs no space)."""
        done = start
        for line, t in batch:
            end = done + len(line.encode()) + 1
            if end > self._size:
                break
            done = end
            if t is not None:
                self.journaled_until = max(self.journaled_until, t)
        try:
            os.ftruncate(self._fd, done)
        except OSError:
            pass
        self._size = done
        self._close_journal()
        why = "the disk is full" if disk_full(err) else os_error_line(err)
        self.journal_error = why
        with self._flushed:
            self._flushed.notify_all()
        self.on_warning(
            f"recording: cannot write {self.journal.name} ({why}): crash-safe recording stopped, the journal "
            f"is complete up to {self.journaled_until:.1f} s; recording goes on in memory and is saved at exit"
        )

    def _close_journal(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def wait_flushed(self, timeout: float | None = None) -> bool:
        """Wait until everything recorded so far is on disk; True if it is (False once journaling
        has stopped)."""
        with self._lock:
            target = self._appended
        with self._flushed:
            self._flushed.wait_for(lambda: self._written >= target or self.journal_error is not None, timeout)
            return self._written >= target

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            try:
                with self._lock:
                    idle = not self._pending
                    if idle:  # a heartbeat tells `recover` how long a silent ending lasted
                        alive = self._clock.now() - self.t0
                        self._pending.append((json.dumps({"alive": alive}), alive))
                self.flush()
            except Exception:
                log.exception("recorder journal flush failed")

    def stop(self, timeout: float | None = 2.0) -> bool:
        """End the flush thread and flush what is left; True when the thread has ended."""
        ended = super().stop(timeout)
        self.flush()
        return ended

    # ---- the file ------------------------------------------------------------------------------

    def finish(self, tempo_bpm: float | None = None) -> Path:
        """Write the MIDI file atomically, then remove the journal. Open notes end at the end time.

        On a full disk the journal (a prefix of what is in memory) goes first to make room; if the
        whole session still does not fit, its journalled part does (`saved_until` says up to when):
        as MIDI it takes a fraction of the journal's space. Raises RecordingError when nothing could
        be written (the journal is kept unless it was removed for room)."""
        if self._finished:
            raise RuntimeError("Recorder.finish called twice")
        self.stop()
        bpm, _ = file_tempo(tempo_bpm if tempo_bpm is not None else self.tempo_bpm)
        if tempo_bpm is not None:
            self.set_tempo(bpm)
            self.flush()
        events = self.events
        end = max(self._clock.now() - self.t0, max((e[0] for e in events), default=0.0))
        try:
            write_midi_atomic(build_midi(events, bpm, end), self.path, force=self.force)
        except OSError as err:
            if not disk_full(err):
                kept = f"; the journal {self.journal} is kept for `liveduet recover`" if self.journal.exists() else ""
                raise RecordingError(f"cannot save the recording {self.path}: {os_error_line(err)}{kept}") from err
            self._save_on_full_disk(events, bpm, end)
        with self._lock:
            self._finished = True
        self._close_journal()
        self.journal.unlink(missing_ok=True)
        return self.path

    def _save_on_full_disk(self, events: list[Event], bpm: float, end: float) -> None:
        until = self.journaled_until
        self._close_journal()
        self.journal.unlink(missing_ok=True)
        try:
            write_midi_atomic(build_midi(events, bpm, end), self.path, force=self.force)
            return
        except OSError:
            pass
        part = [e for e in events if e[0] <= until]
        try:
            write_midi_atomic(build_midi(part, bpm, until), self.path, force=self.force)
        except OSError as err:
            raise RecordingError(f"cannot save the recording {self.path}: {os_error_line(err)}") from err
        self.saved_until = until

    def close(self) -> None:
        """Stop recording without writing the file; the journal stays for `recover`."""
        self.stop()
        with self._lock:
            self._finished = True
        self._close_journal()

    def discard(self) -> None:
        """Stop recording and keep nothing, not even the journal (a session that never started)."""
        self.close()
        self.journal.unlink(missing_ok=True)


@dataclass(frozen=True)
class Recovered:
    """What `recover` rebuilt."""

    path: Path
    events: int
    skipped_lines: int  # unreadable lines (a truncated last line after a crash is normal)
    tempo_bpm: float
    seconds: float
    note: str = ""  # what was repaired, for the user (e.g. an impossible tempo)


def _seconds(value: object) -> float:
    t = float(value)  # type: ignore[arg-type]
    if not 0.0 <= t <= MAX_SECONDS:  # NaN fails too
        raise ValueError(f"time {value!r} out of range")
    return t


def read_journal(path: str | os.PathLike[str]) -> tuple[dict, list[Event], float, int]:
    """Parse a journal: (header, events, end seconds, skipped lines). Tolerates damaged lines."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise JournalError(f"cannot read journal {path}: {err.strerror or err}") from err
    if not raw.strip():
        raise JournalError(f"{path} is empty: the session recorded nothing, there is nothing to recover")
    lines = raw.decode("utf-8", errors="replace").splitlines()
    try:
        header = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("liveduet_journal") != JOURNAL_VERSION:
        raise JournalError(f"{path} is not a liveduet journal (no valid header line)")
    events: list[Event] = []
    end = 0.0
    skipped = 0
    for line in lines[1:]:
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if "hex" in entry:
                msg = mido.Message.from_bytes(bytes.fromhex(entry["hex"]))
                t = _seconds(entry["t"])
                track = str(entry["track"])
                if track not in TRACK_NAMES:
                    raise ValueError(f"unknown track {track!r}")
                events.append((t, track, msg))
                end = max(end, t)
            elif "tempo_bpm" in entry:
                header["tempo_bpm"] = entry["tempo_bpm"]  # checked once, by `recover`: the last one wins
            elif "alive" in entry:
                end = max(end, _seconds(entry["alive"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            skipped += 1  # json.JSONDecodeError is a ValueError
    return header, events, end, skipped


def recover(
    journal: str | os.PathLike[str], out_path: str | os.PathLike[str] | None = None, force: bool = False
) -> Recovered:
    """Rebuild the MIDI file from a journal left by a crashed or killed session.

    `out_path` defaults to the journal's name without ``.journal``. The journal is kept.
    """
    header, events, end, skipped = read_journal(journal)
    if out_path is None:
        name = str(journal)
        out_path = name[: -len(JOURNAL_SUFFIX)] if name.endswith(JOURNAL_SUFFIX) else name + ".mid"
    out_path = Path(out_path)
    if out_path.exists() and not out_path.is_dir() and not force:
        raise RecordingExistsError(f"{out_path} exists; choose another name or use --force")
    check_output_file(out_path, "the recovered recording")
    bpm, note = file_tempo(header.get("tempo_bpm", DEFAULT_TEMPO_BPM))
    try:
        path = write_midi_atomic(build_midi(events, bpm, end), out_path, force=force)
    except OSError as err:
        raise RecordingError(f"cannot write {out_path}: {os_error_line(err)}") from err
    return Recovered(path=path, events=len(events), skipped_lines=skipped, tempo_bpm=bpm, seconds=end, note=note)
