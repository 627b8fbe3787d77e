"""A piano-roll picture of a recorded session: who played what, when, and where each phrase began.

The recording (liveduet.live.recorder) is a type-1 file with a tempo track, a "Player" track and a
"liveduet" track; other files work too (each named track gets a colour). Phrases are found from the
notes alone: a new phrase begins when the other part starts playing once the current part has gone
silent (the call/answer turn), or when a part plays again after a long silence of its own.
"""

from __future__ import annotations

import bisect
import io
import os
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

import mido

from liveduet.errors import LiveduetError, MidiFileError, OutputPathError
from liveduet.fsutil import check_output_file, os_error_line, write_atomic
from liveduet.music.midifile import MAX_BYTES
from liveduet.music.tokens import pitch_name

PLAYER, LIVEDUET = "Player", "liveduet"  # the recorder's track names
COLOURS = {PLAYER: "#1f77b4", LIVEDUET: "#e8710a"}
OTHER_COLOURS = ("#2ca02c", "#9467bd", "#8c564b", "#7f7f7f")
ROLE = {PLAYER: "call", LIVEDUET: "answer"}
OVERLAP_S = 0.05  # a turn may start this much before the other part's last note ends (release jitter)
SAME_PART_GAP_S = 2.0  # silence after which one part's notes start a new phrase of their own


@dataclass(frozen=True)
class Note:
    start: float  # seconds
    end: float
    pitch: int
    velocity: int
    part: str  # track name


@dataclass(frozen=True)
class Phrase:
    part: str
    start: float
    end: float  # when its last note ends
    notes: int


def _tempo_map(mid: mido.MidiFile) -> tuple[list[int], list[float], list[int]]:
    """Ticks where the tempo changes, the seconds at each, and the tempo (µs/beat) from there."""
    changes: dict[int, int] = {0: 500_000}
    for track in mid.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "set_tempo":
                changes[tick] = msg.tempo
    ticks, secs, tempos = [], [], []
    for tick, tempo in sorted(changes.items()):
        if ticks:
            secs.append(secs[-1] + (tick - ticks[-1]) * tempos[-1] / 1e6 / mid.ticks_per_beat)
        else:
            secs.append(tick * 500_000 / 1e6 / mid.ticks_per_beat)
        ticks.append(tick)
        tempos.append(tempo)
    return ticks, secs, tempos


def read_notes(path: str | os.PathLike[str]) -> list[Note]:
    """Every note of a MIDI file with its track's name, in seconds. Raises MidiFileError."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise MidiFileError(f"{path}: over the {MAX_BYTES} byte cap")
        mid = mido.MidiFile(path)
    except FileNotFoundError as err:
        raise LiveduetError(f"{path} not found") from err
    except (OSError, EOFError, ValueError, KeyError, IndexError) as err:
        raise MidiFileError(f"{path}: not a readable MIDI file ({str(err) or type(err).__name__})") from err
    if mid.type == 2 or mid.ticks_per_beat <= 0:
        raise MidiFileError(f"{path}: unsupported MIDI timing (type {mid.type}, division {mid.ticks_per_beat})")
    ticks, secs, tempos = _tempo_map(mid)

    def seconds(tick: int) -> float:
        i = bisect.bisect_right(ticks, tick) - 1
        return secs[i] + (tick - ticks[i]) * tempos[i] / 1e6 / mid.ticks_per_beat

    notes: list[Note] = []
    for index, track in enumerate(mid.tracks):
        name = next((m.name for m in track if m.type == "track_name"), "") or f"track {index}"
        open_notes: dict[tuple[int, int], deque[tuple[int, int]]] = defaultdict(deque)
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "note_on" and msg.velocity > 0:
                open_notes[(msg.channel, msg.note)].append((tick, msg.velocity))
            elif msg.type in ("note_on", "note_off") and open_notes[(msg.channel, msg.note)]:
                start, vel = open_notes[(msg.channel, msg.note)].popleft()  # first on, first off
                notes.append(Note(seconds(start), seconds(tick), msg.note, vel, name))
        for (_, pitch), starts in open_notes.items():  # never released: they last to the track's end
            notes.extend(Note(seconds(s), seconds(tick), pitch, v, name) for s, v in starts)
    notes.sort(key=lambda n: (n.start, n.pitch))
    return notes


def find_phrases(notes: list[Note], gap_s: float = SAME_PART_GAP_S) -> list[Phrase]:
    """Split time-sorted notes into phrases (see the module doc). A note of the other part that
    overlaps the current phrase (playing along, not taking a turn) starts nothing."""
    phrases: list[Phrase] = []
    part, start, end, count = None, 0.0, 0.0, 0
    for n in notes:
        turn = part is not None and n.part != part and n.start >= end - OVERLAP_S
        again = n.part == part and n.start - end >= gap_s
        if part is None or turn or again:
            if part is not None:
                phrases.append(Phrase(part, start, end, count))
            part, start, end, count = n.part, n.start, n.end, 0
        if n.part == part:
            end = max(end, n.end)
            count += 1
    if part is not None:
        phrases.append(Phrase(part, start, end, count))
    return phrases


def _colour(part: str, parts: list[str]) -> str:
    if part in COLOURS:
        return COLOURS[part]
    others = [p for p in parts if p not in COLOURS]
    return OTHER_COLOURS[others.index(part) % len(OTHER_COLOURS)]


def title_for(name: str, notes: list[Note], phrases: list[Phrase]) -> str:
    calls = sum(p.part == PLAYER for p in phrases)
    answers = sum(p.part == LIVEDUET for p in phrases)
    by_part = defaultdict(int)
    for n in notes:
        by_part[n.part] += 1
    counts = ", ".join(f"{k} {v} notes" for k, v in by_part.items())
    length = max(n.end for n in notes)
    return f"{name}: {_n(calls, 'call')}, {_n(answers, 'answer')} · {counts} · {length:.1f} s"


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def draw_report(midi: str | os.PathLike[str], out: str | os.PathLike[str], force: bool = False) -> Path:
    """Draw the session in `midi` as a PNG at `out`; returns the path. The file appears whole or not at all."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a file, from any thread or server
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Patch

    midi, out = Path(midi), Path(out)
    check_output_file(out, "the report", force=force)
    notes = read_notes(midi)
    if not notes:
        raise LiveduetError(f"{midi} has no notes to draw")
    phrases = find_phrases(notes)
    parts = list(dict.fromkeys(n.part for n in notes))
    length = max(n.end for n in notes)
    lo, hi = min(n.pitch for n in notes), max(n.pitch for n in notes)

    fig, ax = plt.subplots(figsize=(min(24.0, max(10.0, 4 + length / 4)), 5.5), dpi=100)
    try:
        numbers: dict[str, int] = defaultdict(int)
        for ph in phrases:
            colour = _colour(ph.part, parts)
            ax.axvspan(ph.start, ph.end, color=colour, alpha=0.08, lw=0)
            ax.axvline(ph.start, color=colour, lw=1, alpha=0.6)
            numbers[ph.part] += 1
            ax.text(ph.start, 1.0, f" {ROLE.get(ph.part, ph.part)} {numbers[ph.part]}", color=colour,
                    transform=ax.get_xaxis_transform(), va="bottom", ha="left", fontsize=8)
        for part in parts:
            mine = [n for n in notes if n.part == part]
            colour = _colour(part, parts)
            ax.barh([n.pitch for n in mine], [max(n.end - n.start, 0.01) for n in mine],
                    left=[n.start for n in mine], height=0.8, lw=0,
                    color=[to_rgba(colour, 0.45 + 0.55 * n.velocity / 127) for n in mine])
        ax.set_xlim(0, length * 1.01)
        ax.set_ylim(lo - 1.5, hi + 1.5)
        cs = [p for p in range(lo - 1, hi + 2) if p % 12 == 0] or [lo]
        ax.set_yticks(cs, [pitch_name(p) for p in cs])
        ax.set_xlabel("time (s)")
        ax.set_ylabel("pitch")
        ax.grid(axis="x", alpha=0.2)
        # Outside the axes: inside, it hides notes at the top right.
        ax.legend(handles=[Patch(color=_colour(p, parts), label=p) for p in parts], loc="upper left",
                  bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)
        ax.set_title(title_for(midi.name, notes, phrases), fontsize=10, pad=16)
        fig.tight_layout()
        png = io.BytesIO()
        fig.savefig(png, format="png")
        try:
            write_atomic(out, png.getvalue())  # whole or not at all, with a normal file mode
        except OSError as err:
            raise OutputPathError(f"cannot write {out}: {os_error_line(err)}") from err
    finally:
        plt.close(fig)
    return out
