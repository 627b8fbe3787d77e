"""The one streaming tokenizer, shared by corpus files and live input: notes in, events out.

Files come through `tokenize_notes` (window 0: notes on the same tick form a chord); the daemon feeds
`StreamTokenizer` message by message (a ~30 ms chord window, `performed=True`). Both are this code,
so training and the live path see identical tokens (docs/tokens.md; the vocabulary: music/tokens.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from liveduet.music.tokens import HALF_BEAT, TICKS, Event, TokenizerSettings


class _Group:
    """A chord being gathered."""

    __slots__ = ("onset", "pitches", "silence_before")

    def __init__(self, onset: float, silence_before: float | None) -> None:
        self.onset = onset  # beats, raw: the first note's time
        self.pitches: set[int] = set()
        self.silence_before = silence_before  # when everything fell silent before this group


class StreamTokenizer:
    """Turns note events, one at a time, into (pitch set, duration) events.

    Feed `note_on`, `note_off`, `pedal` with times in beats (files: ticks / ticks_per_beat;
    live: seconds × tempo / 60), in time order. An event is complete once the next onset is
    known, so it comes out then; `advance(now)` closes a chord whose window has passed and
    `flush(end)` ends the phrase. The same code serves files (window 0: same tick) and live input
    (window ≈ 30 ms), so training and the daemon see identical tokens. One difference, by design:
    with `performed=True` (live input) a silence between two notes of at most half their onset gap
    (and under a beat) is articulation and lengthens the note instead of becoming a rest, and the
    phrase's last note lasts to the next 8th; a file's rests are notated and stay exact
    (docs/tokens.md).
    """

    def __init__(self, settings: TokenizerSettings, window_beats: float = 0.0, performed: bool = False) -> None:
        self.s = settings
        self.window = window_beats
        self.performed = performed  # a performance: silences shorter than half the gap are articulation
        self.held: dict[int, int] = {}  # keys down: pitch → how many times struck and not released
        self.pedal_down = False
        self.sustained: set[int] = set()  # released keys the pedal still holds
        self.silence_since: float | None = None
        self.pending: _Group | None = None  # chord being gathered
        self.current: tuple[int, set[int]] | None = None  # (onset twelfths, pitches): waits for the next onset

    def _sounding(self) -> bool:
        return bool(self.held) or (self.pedal_down and bool(self.sustained))

    def note_on(self, beat: float, pitch: int) -> list[Event]:
        out: list[Event] = []
        group = self.pending
        if group is None or beat - group.onset > self.window:
            out = self._commit()
            group = self.pending = _Group(beat, None if self._sounding() else self.silence_since)
        group.pitches.add(pitch)
        self.held[pitch] = self.held.get(pitch, 0) + 1
        self.sustained.discard(pitch)
        self.silence_since = None
        return out

    def note_off(self, beat: float, pitch: int) -> list[Event]:
        count = self.held.get(pitch, 0)
        if count <= 0:
            return []  # a note-off without its note-on: nothing to end
        if count > 1:
            self.held[pitch] = count - 1  # struck twice, released once: still sounding
            return []
        del self.held[pitch]
        if self.pedal_down:
            self.sustained.add(pitch)
        if not self._sounding():
            self.silence_since = beat
        return []

    def pedal(self, beat: float, down: bool) -> list[Event]:
        if self.pedal_down and not down:
            held_something = bool(self.sustained)
            self.sustained.clear()
            if held_something and not self._sounding():  # a lift that released nothing changes nothing
                self.silence_since = beat
        self.pedal_down = down
        return []

    def advance(self, beat: float) -> list[Event]:
        """Close the chord being gathered once its window has passed (live input)."""
        if self.pending is not None and beat - self.pending.onset > self.window:
            return self._commit()
        return []

    def flush(self, end: float | None = None) -> list[Event]:
        """End of piece or phrase: emit everything. The last event lasts until its notes were
        released (or `end`, if they are still held)."""
        out = self._commit()
        if self.current is not None:
            onset, pitches = self.current
            stop = end if self._sounding() or self.silence_since is None else self.silence_since
            if stop is None:
                stop = onset / TICKS
            stop_q = max(self.s.quantize(stop), self.s.next_grid(onset))
            if self.performed:  # a phrase's last note, released early: its written value, to the 8th
                stop_q = -(-stop_q // HALF_BEAT) * HALF_BEAT
            out.append((tuple(sorted(pitches)), min(stop_q - onset, self.s.max_duration)))
            self.current = None
        self.pending = None
        return out

    def reset(self) -> None:
        self.__init__(self.s, self.window, self.performed)

    def _commit(self) -> list[Event]:
        """Move the gathered chord to `current`, emitting the previous event now that its end is known."""
        group, self.pending = self.pending, None
        if group is None:
            return []
        onset = self.s.quantize(group.onset)
        if self.current is None:
            self.current = (onset, set(group.pitches))
            return []
        cur_onset, cur_pitches = self.current
        if onset <= cur_onset:  # two groups on one grid point: one chord
            cur_pitches |= group.pitches
            return []
        out: list[Event] = []
        release = group.silence_before
        end = onset
        if release is not None:
            end = min(max(self.s.quantize(release), self.s.next_grid(cur_onset)), onset)
            gap = onset - release * TICKS  # twelfths of silence, unquantised
            if self.performed and 2 * gap <= onset - cur_onset and gap < TICKS:
                # Articulation, not a rest: a staccato 8th is still an 8th, as a score writes it.
                # Without this, live playing (notes held 60-95 % of their length) turned straight
                # 8ths into triplets and 16th rests the model never saw in its (legato) training scores.
                end = onset
        out.append((tuple(sorted(cur_pitches)), min(end - cur_onset, self.s.max_duration)))
        if end < onset:
            # Silences longer than max_duration are shortened: they carry no music.
            out.append(((), min(onset - end, self.s.max_duration)))
        self.current = (onset, set(group.pitches))
        return out


def tokenize_notes(
    notes: Iterable[tuple[float, float, int]], settings: TokenizerSettings, pedal: Iterable[tuple[float, bool]] = ()
) -> list[Event]:
    """(onset beats, end beats, pitch) notes → events, through the streaming tokenizer.
    At equal times note-offs come before pedal changes before note-ons (a repeated note ends, then
    strikes again); a zero-length note is struck, then released."""
    stream: list[tuple[float, int, int]] = []
    for onset, end, pitch in notes:
        stream.append((onset, 2, pitch))
        # A zero-length note's off sorts after its on (3), else it would sound to the end.
        stream.append((end, 0, pitch) if end > onset else (onset, 3, pitch))
    for beat, down in pedal:
        stream.append((beat, 1, int(down)))
    stream.sort()
    tok = StreamTokenizer(settings, window_beats=0.0)
    events: list[Event] = []
    last = 0.0
    for beat, kind, value in stream:
        if kind == 2:
            events += tok.note_on(beat, value)
        elif kind == 0 or kind == 3:
            events += tok.note_off(beat, value)
        else:
            events += tok.pedal(beat, bool(value))
        last = max(last, beat)
    events += tok.flush(last)
    return events
