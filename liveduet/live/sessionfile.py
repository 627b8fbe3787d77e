"""A session's recording as a MIDI file: type 1, a tempo track, "Player" and "liveduet"; pure.

`build_midi` turns `(seconds, track, message)` events into the file (open notes closed at the end),
`file_tempo` makes any tempo fit for one, `write_midi_atomic` saves it without ever leaving half a
file. The recorder (live/recorder.py) and `recover` write through here.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import mido

from liveduet.errors import LiveduetError
from liveduet.live.listener import clean
from liveduet.music.midifile import save_atomic

TICKS_PER_BEAT = 480
TRACK_NAMES = {"player": "Player", "liveduet": "liveduet"}  # journal key -> track_name in the file
DEFAULT_TEMPO_BPM = 120.0
MIN_TEMPO_BPM, MAX_TEMPO_BPM = 20.0, 300.0  # the live settings' range

Event = tuple[float, str, mido.Message]  # (seconds since start, track, message)


class RecordingExistsError(LiveduetError):
    """The recording (or a journal of an earlier session) is already there and force was not given."""


def _ticks(seconds: float, tempo_us: int) -> int:
    return round(max(0.0, seconds) * TICKS_PER_BEAT * 1_000_000 / tempo_us)


def build_midi(events: Iterable[Event], tempo_bpm: float, end_time: float | None = None) -> mido.MidiFile:
    """A type-1 file: tempo track, "Player", "liveduet"; 480 ticks per beat; open notes closed at the end.

    Times convert with the tempo written to the file, so reading it back gives the recorded seconds
    to within half a tick.
    """
    if not MIN_TEMPO_BPM <= tempo_bpm <= MAX_TEMPO_BPM:  # NaN fails too
        raise ValueError(f"tempo must lie in {MIN_TEMPO_BPM:g}..{MAX_TEMPO_BPM:g} bpm, got {tempo_bpm}")
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


def file_tempo(bpm: object) -> tuple[float, str]:
    """A tempo fit for the file, and a note when `bpm` was not one (the times are in seconds, so any
    tempo keeps them right; only the beat grid a sequencer shows depends on it)."""
    try:
        value = float(bpm)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        return DEFAULT_TEMPO_BPM, f"tempo {bpm!r} is not a tempo: used {DEFAULT_TEMPO_BPM:g} bpm"
    clamped = min(MAX_TEMPO_BPM, max(MIN_TEMPO_BPM, value))
    if clamped != value:
        return clamped, f"tempo {value:g} bpm is outside {MIN_TEMPO_BPM:g}..{MAX_TEMPO_BPM:g}: used {clamped:g} bpm"
    return value, ""
