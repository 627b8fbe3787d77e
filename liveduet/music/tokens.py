"""The vocabulary: the tokens of liveduet-tokens/1 (the one streaming tokenizer is music/stream.py).

An *event* is what a part does at one onset: a pitch set (one note, a chord, or the empty set for
a rest) plus its rhythm, the time until the next event, quantised to a grid with triplets. Each
event is written as two tokens, a pitch token then a duration token (a factored pair)::

    <bos>  E4+G4+C5 d1  C4 d1/2  D4 d1/2  R d1  G3+D4+B4 d2 ... <eos>

Why factored: a joint (pitch set, duration) token would multiply ~2,000 chords by ~30 durations
into a sparse vocabulary where most pairs are never seen, so the model could not learn that a C
major chord is a C major chord whatever its length, and a chord played live in an unseen rhythm
would have no token. Factored, every pitch set combines with every duration; the grammar
(pitch, duration, pitch, ...) is enforced when sampling by masking.

Time is measured in beats (quarter notes) and quantised in twelfths of a beat to the union of a
16th-note grid and an 8th-triplet grid (positions 0, 1/4, 1/3, 1/2, 2/3, 3/4 within a beat).
Onsets are quantised on that absolute grid and durations are differences of quantised onsets, so
quantisation error never accumulates. See docs/tokens.md.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from liveduet.errors import VocabularyError

SCHEME = "liveduet-tokens/1"
TICKS = 12  # grid resolution: twelfths of a beat
HALF_BEAT = TICKS // 2
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<bos>", "<eos>")
REST_NAME = "R"

PitchSet = tuple[int, ...]
Event = tuple[PitchSet, int]  # (sorted MIDI pitches, or () for a rest; duration in twelfths)


@dataclass(frozen=True)
class TokenizerSettings:
    """Everything that decides which tokens a piece becomes; saved with every vocabulary."""

    grid: tuple[int, ...] = (0, 3, 4, 6, 8, 9)  # allowed onsets within a beat, in twelfths
    max_duration: int = 8 * TICKS  # longer notes are cut, longer silences shortened, to 8 beats
    min_pitch: int = 21  # A0: the piano's range
    max_pitch: int = 108  # C8
    chord_window: float = 0.03  # seconds: live notes struck this close form one chord

    def __post_init__(self) -> None:
        if not self.grid or self.grid[0] != 0 or any(not 0 <= g < TICKS for g in self.grid):
            raise VocabularyError(f"grid must start at 0 and lie in 0..{TICKS - 1}, got {self.grid}")
        if not 1 <= self.max_duration <= 64 * TICKS:
            raise VocabularyError(f"max_duration must be 1..{64 * TICKS} twelfths, got {self.max_duration}")
        if not 0 <= self.min_pitch <= self.max_pitch <= 127:
            raise VocabularyError(f"pitch range {self.min_pitch}..{self.max_pitch} is not within 0..127")
        if not 0 <= self.chord_window <= 0.2:
            raise VocabularyError(f"chord_window must be 0..0.2 s, got {self.chord_window}")
        # quantize() looks the nearest grid point up between midpoints (not a field: not saved).
        points = (*sorted(set(self.grid)), TICKS)
        object.__setattr__(self, "_points", points)
        object.__setattr__(self, "_midpoints", tuple((a + b) / 2 for a, b in zip(points, points[1:])))

    @classmethod
    def from_dict(cls, data: dict) -> TokenizerSettings:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "grid" in known:
            known["grid"] = tuple(known["grid"])
        return cls(**known)

    def quantize(self, beat: float) -> int:
        """Nearest grid position to `beat`, in twelfths of a beat (ties go earlier)."""
        whole = int(beat // 1)
        frac = (beat - whole) * TICKS
        # Exactly a midpoint: bisect_left picks the earlier point.
        return whole * TICKS + self._points[bisect_left(self._midpoints, frac)]

    def next_grid(self, pos: int) -> int:
        """The first grid position after `pos` (twelfths)."""
        whole, frac = divmod(pos, TICKS)
        later = [g for g in self.grid if g > frac]
        return whole * TICKS + later[0] if later else (whole + 1) * TICKS


def pitch_name(pitch: int) -> str:
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def pitchset_name(pitches: PitchSet) -> str:
    return "+".join(pitch_name(p) for p in pitches) if pitches else REST_NAME


def parse_pitch(name: str) -> int:
    """'C#4' -> 61. Raises VocabularyError on a bad name."""
    for length in (2, 1):
        letter, octave = name[:length], name[length:]
        if letter in NOTE_NAMES:
            try:
                return NOTE_NAMES.index(letter) + 12 * (int(octave) + 1)
            except ValueError:
                break
    raise VocabularyError(f"bad pitch name {name!r} (expected e.g. C4, F#3)")


def duration_name(twelfths: int) -> str:
    frac = Fraction(twelfths, TICKS)
    return f"d{frac.numerator}" if frac.denominator == 1 else f"d{frac.numerator}/{frac.denominator}"


class Vocabulary:
    """Token ids: specials, then durations 1..max_duration twelfths, then the rest, the single
    notes of the piano range, and the corpus' chords, most frequent first."""

    def __init__(self, settings: TokenizerSettings, chords: Iterable[PitchSet] = ()) -> None:
        self.settings = settings
        s = settings
        self.dur_base = len(SPECIALS)
        self.rest_id = self.dur_base + s.max_duration
        singles = [(p,) for p in range(s.min_pitch, s.max_pitch + 1)]
        extra = [c for c in chords if len(c) > 1]
        self.pitchsets: list[PitchSet] = [(), *singles, *extra]
        self.tokens: list[str] = [
            *SPECIALS,
            *(duration_name(d) for d in range(1, s.max_duration + 1)),
            *(pitchset_name(c) for c in self.pitchsets),
        ]
        self._ids = {c: self.rest_id + i for i, c in enumerate(self.pitchsets)}
        if len(self._ids) != len(self.pitchsets):
            raise VocabularyError("vocabulary lists a chord twice")
        for c in extra:
            if list(c) != sorted(set(c)) or c[0] < s.min_pitch or c[-1] > s.max_pitch:
                raise VocabularyError(f"chord {pitchset_name(c)} is unsorted or outside the pitch range")
        # The nearest-chord search scores all pitch sets at once: one row per MIDI pitch saying
        # which sets hold it, and each set's size; then top and bass notes (-100 for the rest)
        # break ties among the few closest (~20 µs for 1,000 chords, ~60 µs for 5,000).
        self._member = np.zeros((128, len(self.pitchsets)), dtype=np.uint8)
        for i, c in enumerate(self.pitchsets):
            self._member[list(c), i] = 1
        self._size = np.array([len(c) for c in self.pitchsets], dtype=np.int64)
        self._tops = [c[-1] if c else -100 for c in self.pitchsets]
        self._basses = [c[0] if c else -100 for c in self.pitchsets]
        self.misses = 0  # pitch sets mapped to a nearest chord since creation
        n = len(self.tokens)
        self.duration_mask = np.zeros(n, dtype=np.bool_)
        self.duration_mask[self.dur_base : self.rest_id] = True
        self.pitch_mask = np.zeros(n, dtype=np.bool_)
        self.pitch_mask[self.rest_id :] = True

    def __len__(self) -> int:
        return len(self.tokens)

    # -- durations ---------------------------------------------------------------------------
    def duration_id(self, twelfths: int) -> int:
        return self.dur_base + min(max(int(twelfths), 1), self.settings.max_duration) - 1

    def duration_of(self, token: int) -> int:
        """Twelfths of a beat for a duration token."""
        if not self.duration_mask[token]:
            raise VocabularyError(f"token {token} ({self.tokens[token]}) is not a duration")
        return token - self.dur_base + 1

    # -- pitch sets --------------------------------------------------------------------------
    def pitches_of(self, token: int) -> PitchSet:
        if not self.pitch_mask[token]:
            raise VocabularyError(f"token {token} ({self.tokens[token]}) is not a pitch set")
        return self.pitchsets[token - self.rest_id]

    def fold(self, pitches: Iterable[int]) -> PitchSet:
        """Pitches moved by octaves into the vocabulary's range, deduplicated and sorted."""
        lo, hi = self.settings.min_pitch, self.settings.max_pitch
        key = tuple(sorted(set(pitches)))
        if not key or (lo <= key[0] and key[-1] <= hi):
            return key  # the usual case: nothing to move
        out = set()
        for p in key:
            if p < lo:
                p += 12 * -((p - lo) // 12)  # up by whole octaves to the first one >= lo
            elif p > hi:
                p -= 12 * -((hi - p) // 12)
            out.add(min(max(p, lo), hi))  # a range under an octave wide: clamp
        return tuple(sorted(out))

    def pitch_id(self, pitches: Iterable[int]) -> int:
        """The token of a pitch set: exact if known, else the nearest chord (see `nearest`)."""
        key = self.fold(pitches)
        token = self._ids.get(key)
        if token is None:
            self.misses += 1
            token = self.nearest(key)
        return token

    def nearest(self, pitches: PitchSet) -> int:
        """Nearest known pitch set to an unseen chord, by a documented rule:
        fewest pitches added or removed (symmetric difference), then the closest top note
        (the melody), then the closest bass, then the more frequent chord (lower id)."""
        q = sorted(set(pitches))
        # Pitches added or removed, |a ^ q| = |a| + |q| - 2 |a & q|, less the constant |q|.
        diff = self._size - 2 * self._member[q].sum(axis=0, dtype=np.int64)
        tied = np.flatnonzero(diff == diff.min())  # usually one set, or a handful
        if len(tied) == 1:
            return self.rest_id + int(tied[0])
        top, bass = (q[-1], q[0]) if q else (-100, -100)
        tops, basses = self._tops, self._basses
        return self.rest_id + min(tied.tolist(), key=lambda i: (abs(tops[i] - top), abs(basses[i] - bass), i))

    # -- sequences ---------------------------------------------------------------------------
    def encode(self, events: Iterable[Event]) -> list[int]:
        out: list[int] = []
        for pitches, dur in events:
            out.append(self.pitch_id(pitches))
            out.append(self.duration_id(dur))
        return out

    def decode(self, tokens: Iterable[int]) -> Iterator[Event]:
        """Token ids → events. Specials are skipped; a duration without a pitch before it (or a
        pitch without a duration) is dropped, so any sampled sequence decodes."""
        pending: PitchSet | None = None
        for t in tokens:
            t = int(t)
            if self.pitch_mask[t]:
                pending = self.pitches_of(t)
            elif self.duration_mask[t] and pending is not None:
                yield pending, self.duration_of(t)
                pending = None

    # -- files -------------------------------------------------------------------------------
    def fingerprint(self) -> str:
        blob = json.dumps([SCHEME, asdict(self.settings), self.tokens]).encode()
        return hashlib.sha1(blob).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {
            "scheme": SCHEME,
            "settings": asdict(self.settings),
            "fingerprint": self.fingerprint(),
            "chords": [pitchset_name(c) for c in self.pitchsets if len(c) > 1],
            "tokens": self.tokens,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Vocabulary:
        if not isinstance(data, dict) or data.get("scheme") != SCHEME:
            scheme = data.get("scheme") if isinstance(data, dict) else None
            raise VocabularyError(f"vocabulary scheme {scheme!r} is not {SCHEME!r}")
        try:
            settings = TokenizerSettings.from_dict(data["settings"])
            chords = [tuple(parse_pitch(n) for n in name.split("+")) for name in data["chords"]]
        except KeyError as err:
            raise VocabularyError(f"vocabulary file is malformed: missing {err}") from err
        except (TypeError, AttributeError) as err:
            raise VocabularyError(f"vocabulary file is malformed: {err}") from err
        vocab = cls(settings, chords)
        if "fingerprint" in data and data["fingerprint"] != vocab.fingerprint():
            raise VocabularyError("vocabulary fingerprint does not match its tokens (file edited?)")
        if "tokens" in data and data["tokens"] != vocab.tokens:
            raise VocabularyError("vocabulary token list does not match its settings and chords (file edited?)")
        return vocab

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError as err:
            raise VocabularyError(f"no vocabulary at {path}") from err
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise VocabularyError(f"{path} is not a vocabulary JSON file: {err}") from err
        return cls.from_dict(data)

    def check_compatible(self, other: Vocabulary | str, what: str = "the model") -> None:
        """Refuse a vocabulary that differs from the one `what` was made with."""
        theirs = other if isinstance(other, str) else other.fingerprint()
        if theirs != self.fingerprint():
            raise VocabularyError(
                f"vocabulary mismatch: {what} was made with vocabulary {theirs}, this data uses "
                f"{self.fingerprint()}; re-run prepare with the model's vocab.json (--vocab)"
            )


def build_vocabulary(
    pieces: Iterable[Iterable[Event]], settings: TokenizerSettings, min_count: int = 3, max_chords: int = 0
) -> tuple[Vocabulary, Counter]:
    """Keep every chord seen at least `min_count` times, the `max_chords` most frequent of them when
    that is set (single notes and the rest always). Transposition multiplies every chord by up to 12
    versions, so a cap is what keeps the output layer (and the model file) small."""
    counts: Counter = Counter()
    for events in pieces:
        counts.update(p for p, _ in events if len(p) > 1)
    kept = sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c))
    if max_chords > 0:
        kept = kept[:max_chords]
    return Vocabulary(settings, kept), counts


def events_to_notes(events: Iterable[Event], start: int = 0) -> list[tuple[int, int, int]]:
    """Events → (onset twelfths, end twelfths, pitch): each note sounds for its event's duration."""
    notes = []
    pos = start
    for pitches, dur in events:
        for p in pitches:
            notes.append((pos, pos + dur, p))
        pos += dur
    return notes


def transpose_events(events: list[Event], shift: int, settings: TokenizerSettings) -> list[Event] | None:
    """Events moved by `shift` semitones, or None if any note would leave the pitch range."""
    if shift == 0:
        return events
    lo, hi = settings.min_pitch, settings.max_pitch
    out = []
    for pitches, dur in events:
        if pitches and (pitches[0] + shift < lo or pitches[-1] + shift > hi):
            return None
        out.append((tuple(p + shift for p in pitches), dur))
    return out
