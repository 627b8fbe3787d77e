"""Session recording: both parts to a type-1 MIDI file, crash-safe through an append-only journal.

While playing, every message goes to memory and, within a second, to ``PATH.journal`` (one JSON line
per message, fsync'd by a background thread). `finish` writes the MIDI file atomically and removes
the journal; after a crash or ``kill -9``, `recover` rebuilds the file from the journal.

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
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import mido

from liveduet.errors import LiveduetError
from liveduet.live.clock import Clock, MonotonicClock
from liveduet.live.listener import clean
from liveduet.music.midifile import save_atomic
from liveduet.worker import Worker

log = logging.getLogger(__name__)

TICKS_PER_BEAT = 480
TRACK_NAMES = {"player": "Player", "liveduet": "liveduet"}  # journal key -> track_name in the file
JOURNAL_SUFFIX = ".journal"
JOURNAL_VERSION = 1
DEFAULT_TEMPO_BPM = 120.0

Event = tuple[float, str, mido.Message]  # (seconds since start, track, message)


class RecordingExistsError(LiveduetError):
    """The recording (or a journal of an earlier session) is already there and force was not given."""


class JournalError(LiveduetError):
    """A journal cannot be read back."""


def journal_path(path: str | os.PathLike[str]) -> Path:
    """Where the journal for recording `path` lives."""
    return Path(str(path) + JOURNAL_SUFFIX)


class Recorder(Worker):
    """Records `(time, track, message)` for one session; see the module docstring.

    `record` is cheap (an append under a lock) and safe from any thread; the journal is written by
    the flush thread (`start`) or by `flush()`. Hygiene messages are dropped.
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
    ) -> None:
        self.path = Path(path)
        self.journal = journal_path(self.path)
        self.force = force
        if not force:
            if self.path.exists():
                raise RecordingExistsError(f"{self.path} exists; choose another name or use --force")
            if self.journal.exists():
                raise RecordingExistsError(
                    f"a journal of an earlier session is at {self.journal}: recover it with "
                    f"`liveduet recover {self.journal} --out FILE`, or use --force to discard it"
                )
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self.t0 = self._clock.now() if t0 is None else t0
        self.tempo_bpm = tempo_bpm
        self.flush_interval = flush_interval
        self.filtered = 0

        self._lock = threading.Lock()  # guards _events and _pending; held only for appends
        self._io_lock = threading.Lock()  # one writer of the journal at a time
        self._flushed = threading.Condition()
        self._events: list[Event] = []
        self._pending: list[str] = []
        self._appended = 0  # lines handed to the journal so far
        self._written = 0  # lines on disk (fsync'd)
        self._last_t = 0.0
        Worker.__init__(self)
        self._finished = False

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._journal_file = open(self.journal, "w", encoding="utf-8")  # noqa: SIM115 - closed in finish
        header = {
            "liveduet_journal": JOURNAL_VERSION,
            "out": str(self.path),
            "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "tempo_bpm": tempo_bpm,
            "ticks_per_beat": TICKS_PER_BEAT,
        }
        self._journal_file.write(json.dumps(header) + "\n")
        self.flush()

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
        line = json.dumps({"t": rel, "track": track, "hex": kept.bin().hex()})
        with self._lock:
            if self._finished:
                return False
            self._events.append((rel, track, kept))
            self._pending.append(line)
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
            self._pending.append(json.dumps({"tempo_bpm": bpm}))
            self._appended += 1

    @property
    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    # ---- journal -------------------------------------------------------------------------------

    def flush(self) -> int:
        """Write pending journal lines and fsync; return how many lines were written."""
        with self._io_lock:
            with self._lock:
                lines, self._pending = self._pending, []
                target = self._appended
            if self._journal_file.closed:
                return 0
            if lines:
                self._journal_file.write("\n".join(lines) + "\n")
            self._journal_file.flush()
            os.fsync(self._journal_file.fileno())
        with self._flushed:
            self._written = max(self._written, target)
            self._flushed.notify_all()
        return len(lines)

    def wait_flushed(self, timeout: float | None = None) -> bool:
        """Wait until everything recorded so far is on disk; True if it is."""
        with self._lock:
            target = self._appended
        with self._flushed:
            return self._flushed.wait_for(lambda: self._written >= target, timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            try:
                with self._lock:
                    idle = not self._pending
                    if idle:  # a heartbeat tells `recover` how long a silent ending lasted
                        self._pending.append(json.dumps({"alive": self._clock.now() - self.t0}))
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
        """Write the MIDI file atomically, then remove the journal. Open notes end at the end time."""
        if self._finished:
            raise RuntimeError("Recorder.finish called twice")
        self.stop()
        bpm = tempo_bpm if tempo_bpm is not None else self.tempo_bpm
        if tempo_bpm is not None:
            self.set_tempo(tempo_bpm)
            self.flush()
        events = self.events
        end = max(self._clock.now() - self.t0, max((e[0] for e in events), default=0.0))
        write_midi_atomic(build_midi(events, bpm, end), self.path, force=self.force)
        with self._lock:
            self._finished = True
        self._journal_file.close()
        self.journal.unlink(missing_ok=True)
        return self.path

    def close(self) -> None:
        """Stop recording without writing the file; the journal stays for `recover`."""
        self.stop()
        with self._lock:
            self._finished = True
        self._journal_file.close()


def _ticks(seconds: float, tempo_us: int) -> int:
    return round(max(0.0, seconds) * TICKS_PER_BEAT * 1_000_000 / tempo_us)


def build_midi(events: Iterable[Event], tempo_bpm: float, end_time: float | None = None) -> mido.MidiFile:
    """A type-1 file: tempo track, "Player", "liveduet"; 480 ticks per beat; open notes closed at the end.

    Times convert with the tempo written to the file, so reading it back gives the recorded seconds
    to within half a tick.
    """
    if not tempo_bpm > 0:
        raise ValueError(f"tempo must be positive, got {tempo_bpm}")
    tempo_us = mido.bpm2tempo(tempo_bpm)
    by_track: dict[str, list[tuple[int, mido.Message]]] = {name: [] for name in TRACK_NAMES}
    for t, track, msg in sorted(events, key=lambda e: e[0]):  # stable: same-time order kept
        kept = clean(msg)
        if kept is not None and track in by_track:
            by_track[track].append((_ticks(t, tempo_us), kept))

    last = max((tick for evs in by_track.values() for tick, _ in evs), default=0)
    end_tick = max(last, _ticks(end_time or 0.0, tempo_us))

    mid = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    tempo_track = mido.MidiTrack(
        [
            mido.MetaMessage("set_tempo", tempo=tempo_us, time=0),
            mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0),
        ]
    )
    tempo_track.append(mido.MetaMessage("end_of_track", time=end_tick))
    mid.tracks.append(tempo_track)
    for key, title in TRACK_NAMES.items():
        timeline = by_track[key]
        sounding: Counter[tuple[int, int]] = Counter()
        for _, msg in timeline:
            if msg.type == "note_on":
                sounding[(msg.channel, msg.note)] += 1
            elif msg.type == "note_off" and sounding[(msg.channel, msg.note)] > 0:
                sounding[(msg.channel, msg.note)] -= 1
        for (ch, note), n in sorted(sounding.items()):
            timeline += [(end_tick, mido.Message("note_off", channel=ch, note=note, velocity=0))] * n
        track = mido.MidiTrack([mido.MetaMessage("track_name", name=title, time=0)])
        prev = 0
        for tick, msg in timeline:
            track.append(msg.copy(time=tick - prev))
            prev = tick
        track.append(mido.MetaMessage("end_of_track", time=end_tick - prev))
        mid.tracks.append(track)
    return mid


def write_midi_atomic(mid: mido.MidiFile, path: str | os.PathLike[str], force: bool = False) -> Path:
    """`save_atomic`, refusing an existing recording with the recorder's own error."""
    path = Path(path)
    if path.exists() and not force:
        raise RecordingExistsError(f"{path} exists; choose another name or use --force")
    return save_atomic(mid, path, force=True)


@dataclass(frozen=True)
class Recovered:
    """What `recover` rebuilt."""

    path: Path
    events: int
    skipped_lines: int  # unreadable lines (a truncated last line after a crash is normal)
    tempo_bpm: float
    seconds: float


def read_journal(path: str | os.PathLike[str]) -> tuple[dict, list[Event], float, int]:
    """Parse a journal: (header, events, end seconds, skipped lines). Tolerates damaged lines."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise JournalError(f"cannot read journal {path}: {err.strerror or err}") from err
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
                t = float(entry["t"])
                track = str(entry["track"])
                if track not in TRACK_NAMES:
                    raise ValueError(f"unknown track {track!r}")
                events.append((t, track, msg))
                end = max(end, t)
            elif "tempo_bpm" in entry:
                header["tempo_bpm"] = float(entry["tempo_bpm"])
            elif "alive" in entry:
                end = max(end, float(entry["alive"]))
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
    bpm = float(header.get("tempo_bpm") or DEFAULT_TEMPO_BPM)
    if not bpm > 0:
        raise JournalError(f"{journal} has an invalid tempo {bpm}")
    path = write_midi_atomic(build_midi(events, bpm, end), out_path, force=force)
    return Recovered(path=path, events=len(events), skipped_lines=skipped, tempo_bpm=bpm, seconds=end)
