"""A small, capped Standard MIDI File reader for corpora, and a safe writer.

Why not mido for corpora: a real corpus holds broken files, and mido reads a 400 KB
variable-length number in 39 s, builds a validated Message object per event (3.6 ms for a
chorale), and accepts some corrupt files silently. This reader keeps only what the tokenizer needs
(notes, sustain pedal, tempo), follows the SMF spec strictly (a variable-length number has at most
4 bytes), and enforces caps on size, events, length and time, so no file can hang a run.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import mido

from liveduet.errors import MidiFileError
from liveduet.fsutil import write_atomic

MAX_BYTES = 8 * 1024 * 1024
MAX_EVENTS = 2_000_000
MAX_BEATS = 100_000  # ~14 hours at 120 bpm: anything longer is a broken delta
MAX_SECONDS = 10.0
DRUM_CHANNEL = 9  # channel 10, counted from 1


@dataclass
class MidiNotes:
    """What a file holds for the tokenizer: notes in beats, sustain pedal, tempo map."""

    ticks_per_beat: int
    notes: list[tuple[float, float, int]] = field(default_factory=list)  # (onset, end, pitch) in beats
    pedal: list[tuple[float, bool]] = field(default_factory=list)  # (beat, down)
    tempos: list[tuple[float, float]] = field(default_factory=list)  # (beat, bpm)
    drum_notes: int = 0
    end_beat: float = 0.0  # where the last event of any kind (end of track included) lies
    velocities: list[int] = field(default_factory=list)  # the note-on velocity of each of `notes`
    tracks: int = 0  # MTrk chunks read
    filtered_notes: int = 0  # notes left out by a program filter

    @property
    def first_bpm(self) -> float:
        return self.tempos[0][1] if self.tempos else 120.0

    def seconds_at(self, beat: float) -> float:
        """`beat` in seconds through the tempo map (120 bpm until the first tempo event)."""
        seconds, at, bpm = 0.0, 0.0, 120.0
        for change, new_bpm in self.tempos:
            if change >= beat:
                break
            seconds += (change - at) * 60.0 / bpm
            at, bpm = change, new_bpm
        return seconds + (beat - at) * 60.0 / bpm

    @property
    def seconds(self) -> float:
        """How long the file plays, trailing silence included (what a renderer writes)."""
        return self.seconds_at(self.end_beat)


def _unwrap(data: bytes) -> bytes:
    """The SMF inside a file: plain, or RIFF-wrapped (RMID)."""
    if data[:4] == b"RIFF" and data[8:12] == b"RMID":
        pos = 12
        while pos + 8 <= len(data):
            size = int.from_bytes(data[pos + 4 : pos + 8], "little")
            if data[pos : pos + 4] == b"data":
                return data[pos + 8 : pos + 8 + size]
            pos += 8 + size + (size & 1)
        raise MidiFileError("RIFF file has no MIDI data chunk")
    return data


def read_midi_bytes(path: str | Path) -> bytes:
    """A file's bytes, under the size cap. Raises MidiFileError with a one-line reason."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise MidiFileError(f"{size} bytes is over the {MAX_BYTES} byte cap")
        return path.read_bytes()
    except OSError as err:
        raise MidiFileError(f"cannot read: {err.strerror or err}") from err


def read_midi(path: str | Path, max_seconds: float = MAX_SECONDS) -> MidiNotes:
    """Read a MIDI file's notes. Raises MidiFileError with a one-line reason."""
    return parse_midi(read_midi_bytes(path), max_seconds)


def parse_midi(data: bytes, max_seconds: float = MAX_SECONDS, programs: frozenset[int] | None = None) -> MidiNotes:
    """Parse SMF bytes. `programs`: keep only notes played with these General MIDI programs
    (0..127, from each channel's program changes; program 0 until the first) — None keeps all.
    Drums (channel 10) are never notes."""
    started = time.perf_counter()
    if not data:
        raise MidiFileError("empty file")
    data = _unwrap(data)
    if data[:4] != b"MThd":
        raise MidiFileError("not a MIDI file (no MThd header)")
    if len(data) < 14:
        raise MidiFileError("truncated header")
    hlen = int.from_bytes(data[4:8], "big")
    fmt = int.from_bytes(data[8:10], "big")
    ntracks = int.from_bytes(data[10:12], "big")
    division = int.from_bytes(data[12:14], "big")
    if hlen < 6:
        raise MidiFileError(f"header length {hlen} is under 6")
    if fmt == 2:
        raise MidiFileError("type 2 (independent sequences) is not supported")
    if fmt > 2:
        raise MidiFileError(f"unknown MIDI file type {fmt}")
    if division & 0x8000:
        raise MidiFileError("SMPTE time division is not supported (no beats to quantise to)")
    if division == 0:
        raise MidiFileError("ticks_per_beat is 0")
    tpb = division
    max_tick = MAX_BEATS * tpb

    # Raw events: (tick, order, kind, value) — order puts note-offs before pedal before note-ons
    # (a repeated note ends, then strikes again), and the offs of zero-length notes last.
    # A note's value is its key (the pitch; with a program filter pitch | channel << 8, so notes
    # pair up per channel), and a note-on's also carries its velocity << 16.
    raw: list[tuple[int, int, int, int]] = []
    changes: dict[int, list[tuple[int, int]]] = {}  # channel → (tick, program), with a filter only
    drum_notes = 0
    end_tick = 0
    pos = 8 + hlen
    found = 0
    while found < ntracks and pos + 8 <= len(data):
        ctype, clen = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "big")
        body_start, body_end = pos + 8, pos + 8 + clen
        pos = body_end
        if ctype != b"MTrk":
            continue  # unknown chunks are skipped, as the spec says
        found += 1
        if body_end > len(data):
            raise MidiFileError(f"track {found} is truncated ({clen} bytes announced, {len(data) - body_start} there)")
        tick = 0
        i = body_start
        status = 0
        struck: dict[int, int] = {}  # key → tick of its latest note-on in this track
        while i < body_end:
            delta = data[i]  # i < body_end: the loop condition
            i += 1
            if delta & 0x80:  # a delta of 128 ticks or more: up to 3 more bytes
                delta &= 0x7F
                for _ in range(3):
                    if i >= body_end:
                        raise MidiFileError(f"track {found} ends inside a delta time")
                    b = data[i]
                    i += 1
                    delta = (delta << 7) | (b & 0x7F)
                    if not b & 0x80:
                        break
                else:
                    raise MidiFileError(f"track {found}: variable-length number over 4 bytes")
            tick += delta
            if tick > max_tick:
                raise MidiFileError(f"an event lies {tick // tpb} beats in (cap {MAX_BEATS}): broken delta time")
            end_tick = max(end_tick, tick)
            if i >= body_end:
                raise MidiFileError(f"track {found} ends after a delta time")
            b = data[i]
            if b & 0x80:
                status = b
                i += 1
            elif status == 0 or status >= 0xF0:
                raise MidiFileError(f"track {found}: data byte without a status byte")
            if status == 0xFF or status in (0xF0, 0xF7):
                if status == 0xFF:
                    if i >= body_end:
                        raise MidiFileError(f"track {found}: truncated meta event")
                    mtype = data[i]
                    i += 1
                length = 0
                for _ in range(4):
                    if i >= body_end:
                        raise MidiFileError(f"track {found}: truncated length")
                    b = data[i]
                    i += 1
                    length = (length << 7) | (b & 0x7F)
                    if not b & 0x80:
                        break
                else:
                    raise MidiFileError(f"track {found}: variable-length number over 4 bytes")
                if i + length > body_end:
                    raise MidiFileError(f"track {found}: event runs past the end of the track")
                if status == 0xFF:
                    if mtype == 0x51 and length == 3:
                        raw.append((tick, 1, 9, int.from_bytes(data[i : i + 3], "big")))
                    elif mtype == 0x2F:
                        i += length
                        break
                i += length
                status = 0  # running status is cancelled by meta and sysex events
                continue
            kind = status & 0xF0
            channel = status & 0x0F
            nbytes = 1 if kind in (0xC0, 0xD0) else 2
            if i + nbytes > body_end:
                raise MidiFileError(f"track {found}: truncated channel message")
            d1 = data[i]
            d2 = data[i + 1] if nbytes == 2 else 0
            i += nbytes
            if (d1 | d2) & 0x80:
                raise MidiFileError(f"track {found}: data byte over 127 at byte {i}")
            if kind == 0x90 or kind == 0x80:
                key = d1 if programs is None else d1 | channel << 8
                if channel == DRUM_CHANNEL:
                    drum_notes += kind == 0x90 and d2 > 0
                elif kind == 0x90 and d2 > 0:
                    raw.append((tick, 2, 1, key | d2 << 16))
                    struck[key] = tick
                elif struck.get(key) == tick:
                    # A zero-length note (on, then off at the same tick): its off must sort after
                    # its on, or the note would stay open to the end of the file.
                    del struck[key]
                    raw.append((tick, 3, 0, key))
                else:  # note-off, or a note-on with velocity 0, which is a note-off
                    raw.append((tick, 0, 0, key))
            elif kind == 0xC0 and programs is not None:
                changes.setdefault(channel, []).append((tick, d1))
            elif kind == 0xB0 and d1 == 64 and channel != DRUM_CHANNEL:
                raw.append((tick, 1, 2, int(d2 >= 64)))
            if len(raw) > MAX_EVENTS:
                raise MidiFileError(f"over {MAX_EVENTS} events")
            if (len(raw) & 0xFFF) == 0 and time.perf_counter() - started > max_seconds:
                raise MidiFileError(f"reading took over {max_seconds:g} s")
    if found == 0:
        raise MidiFileError("no tracks")

    raw.sort()
    out = MidiNotes(ticks_per_beat=tpb, drum_notes=drum_notes, end_beat=end_tick / tpb, tracks=found)
    for timeline in changes.values():
        timeline.sort()
    notes: list[tuple[float, float, int, int]] = []  # (onset, end, pitch, velocity)
    open_at: dict[int, list[int]] = {}  # key → tick << 7 | velocity of each note sounding
    pedal_down = False
    for tick, _, kind, value in raw:
        beat = tick / tpb
        if kind == 1:
            key = value & 0xFFFF
            if programs is not None and _program_at(changes.get(key >> 8), tick) not in programs:
                out.filtered_notes += 1
                continue
            open_at.setdefault(key, []).append(tick << 7 | value >> 16)
        elif kind == 0:
            starts = open_at.get(value)
            if starts:
                start = starts.pop(0)
                notes.append(((start >> 7) / tpb, beat, value & 0x7F, start & 0x7F))
        elif kind == 2:
            if bool(value) != pedal_down:
                pedal_down = bool(value)
                out.pedal.append((beat, pedal_down))
        elif kind == 9 and value > 0:
            out.tempos.append((beat, 60_000_000 / value))
    last = raw[-1][0] / tpb if raw else 0.0
    for key, starts in open_at.items():  # notes never released end with the file
        notes.extend(((s >> 7) / tpb, last, key & 0x7F, s & 0x7F) for s in starts)
    notes.sort()
    if notes:
        onsets, ends, pitches, velocities = zip(*notes)
        out.notes = list(zip(onsets, ends, pitches))
        out.velocities = list(velocities)
    return out


def _program_at(timeline: list[tuple[int, int]] | None, tick: int) -> int:
    """The program a channel plays at `tick` (0, acoustic grand, before its first change)."""
    if not timeline:
        return 0
    if len(timeline) == 1:  # the usual case: one program change, at the start
        return timeline[0][1] if tick >= timeline[0][0] else 0
    program = 0
    for at, value in timeline:
        if at > tick:
            break
        program = value
    return program


def notes_to_midi(
    notes: list[tuple[float, float, int, int]], bpm: float = 120.0, ticks_per_beat: int = 480,
    track_name: str = "liveduet", program: int = 0,
) -> mido.MidiFile:
    """(onset beats, end beats, pitch, velocity) → a type-1 MIDI file with a tempo track."""
    meta = mido.MidiTrack()
    meta.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0))
    meta.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
    meta.append(mido.MetaMessage("end_of_track", time=0))
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("track_name", name=track_name, time=0))
    track.append(mido.Message("program_change", program=program, time=0))
    msgs: list[tuple[int, int, mido.Message]] = []
    for onset, end, pitch, vel in notes:
        on, off = round(onset * ticks_per_beat), round(end * ticks_per_beat)
        msgs.append((on, 1, mido.Message("note_on", note=pitch, velocity=vel)))
        msgs.append((max(off, on + 1), 0, mido.Message("note_off", note=pitch, velocity=0)))
    msgs.sort(key=lambda m: (m[0], m[1]))
    now = 0
    for tick, _, msg in msgs:
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    mid = mido.MidiFile(type=1, ticks_per_beat=ticks_per_beat)
    mid.tracks.extend([meta, track])
    return mid


def save_atomic(mid: mido.MidiFile, path: str | Path, force: bool = False) -> Path:
    """Write a MIDI file atomically (liveduet/fsutil.py): `path` is the old file or the new one,
    never half of it."""
    path = Path(path)
    if path.exists() and not force:
        raise MidiFileError(f"{path} exists (use --force to overwrite)")
    buf = io.BytesIO()
    mid.save(file=buf)  # mido's save(filename) truncates the target first: build in memory instead
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, buf.getvalue())
