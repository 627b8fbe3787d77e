"""What the studio serves from disk: recordings addressed by id, models by name; never a client's path.

A recording's id is its file name without `.mid`, and only names the folder's own listing holds are
ids: a client sends an id, the server looks it up in that listing, so no path from a client reaches
the disk. Each file passes the capped MIDI reader (music/midifile.py) before mido reads its tracks.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import mido

from liveduet.errors import LiveduetError, MidiFileError
from liveduet.live.sessionfile import TRACK_NAMES
from liveduet.music.midifile import read_midi

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")
MAX_LISTED = 500  # newest first; an old folder of thousands of files is not a page
LIVEDUET = TRACK_NAMES["liveduet"]


class NotFoundError(LiveduetError):
    """No such recording, model or result (a 404)."""


@dataclass(frozen=True)
class Recording:
    id: str
    path: Path
    modified: float
    size: int


def list_recordings(folder: Path) -> dict[str, Recording]:
    """The folder's .mid files by id, newest first (at most MAX_LISTED)."""
    found: list[Recording] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return {}
    for path in entries:
        if path.suffix.lower() != ".mid" or not ID_RE.match(path.stem):
            continue
        try:
            st = path.stat()
        except OSError:
            continue
        if path.is_file():
            found.append(Recording(path.stem, path, st.st_mtime, st.st_size))
    found.sort(key=lambda r: r.modified, reverse=True)
    return {r.id: r for r in found[:MAX_LISTED]}


def find_recording(folder: Path, rec_id: str) -> Recording:
    """The recording an id names; NotFoundError otherwise (bad ids included)."""
    if not isinstance(rec_id, str) or not ID_RE.match(rec_id):
        raise NotFoundError(f"no recording {rec_id!r}")
    rec = list_recordings(folder).get(rec_id)
    if rec is None:
        raise NotFoundError(f"no recording {rec_id!r}")
    return rec


def track_notes(path: Path) -> tuple[list[list], float]:
    """[on s, off s, pitch, velocity, part] per note (part 0: the player, 1: liveduet) and the length in
    seconds. The capped reader checks the file first; mido then splits it by track."""
    length = read_midi(path).seconds  # MidiFileError on a broken or oversized file
    try:
        mid = mido.MidiFile(path)
    except (OSError, ValueError, EOFError, KeyError, IndexError) as err:
        raise MidiFileError(f"cannot read {path.name}: {err}") from err
    tempo = 500_000
    notes: list[list] = []
    for track in mid.tracks:
        name = next((m.name for m in track if m.type == "track_name"), "")
        part = 1 if name == LIVEDUET else 0  # anything not liveduet's own track counts as the player
        seconds, ticks_tempo = 0.0, tempo
        open_: dict[tuple[int, int], tuple[float, int]] = {}
        for msg in track:
            seconds += mido.tick2second(msg.time, mid.ticks_per_beat, ticks_tempo)
            if msg.type == "set_tempo":
                tempo = ticks_tempo = msg.tempo
            elif msg.type == "note_on" and msg.velocity > 0:
                open_[(msg.channel, msg.note)] = (seconds, msg.velocity)
            elif msg.type in ("note_off", "note_on"):
                start = open_.pop((msg.channel, msg.note), None)
                if start is not None:
                    notes.append([round(start[0], 4), round(seconds, 4), msg.note, start[1], part])
    notes.sort()
    return notes, length


def phrases(notes: list[list]) -> tuple[int, int]:
    """(calls, answers): the runs of player notes and of liveduet notes, in onset order."""
    calls = answers = 0
    last = None
    for note in notes:
        part = note[4]
        if part != last:
            calls, answers = calls + (part == 0), answers + (part == 1)
            last = part
    return calls, answers


@functools.lru_cache(maxsize=1024)
def _summary(path: Path, modified: float, size: int) -> tuple[float, int, int, str | None]:  # noqa: ARG001 - cache key
    try:
        notes, length = track_notes(path)
    except MidiFileError as err:
        return 0.0, 0, 0, str(err)
    return (length, *phrases(notes), None)


def describe(rec: Recording) -> dict:
    """A recording as the Sessions list shows it (read once per version of the file)."""
    length, calls, answers, error = _summary(rec.path, rec.modified, rec.size)
    return {"id": rec.id, "date": dt.datetime.fromtimestamp(rec.modified).isoformat(timespec="seconds"),
            "seconds": round(length, 1), "calls": calls, "answers": answers, "bytes": rec.size, "error": error}


def list_models(folders: list[Path]) -> dict[str, Path]:
    """Exported model folders (with a card.json) by name: each folder given, or each one inside it."""
    models: dict[str, Path] = {}
    for folder in folders:
        candidates = [folder] if (folder / "card.json").is_file() else sorted(
            p for p in (folder.iterdir() if folder.is_dir() else []) if (p / "card.json").is_file())
        for path in candidates:
            name = path.name if ID_RE.match(path.name) else None
            if name and name not in models:
                models[name] = path
    return models


def family_of(path: Path) -> str:
    """The family an exported folder's card names ("lm", "vae", "gan"; "unknown" for an unreadable card),
    so the page offers language models for Generate and VAEs for vary and morph."""
    import json

    from liveduet.model.family import family_of_card

    try:
        card = json.loads((path / "card.json").read_text())
    except (OSError, ValueError):
        return "unknown"
    return family_of_card(card) if isinstance(card, dict) else "unknown"
