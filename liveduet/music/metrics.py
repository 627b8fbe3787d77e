"""Musical metrics of event sequences, to compare samples with real music.

Pure functions over events `(pitches, duration twelfths)` as `Vocabulary.decode` yields them. No
single number says "musical"; side by side with the same numbers for held-out data they show
what a generator gets wrong: too many pitch classes (entropy, in-scale ratio), a drifting register
(range), thin or thick texture (polyphony), rhythmic monotony (duration entropy), stuck notes
(longest run) or loops (repeated 4-grams).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

from liveduet.music.tokens import Event

MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
SCALAR_METRICS = (
    "events", "pitch_class_entropy", "in_scale_ratio", "pitch_range", "mean_polyphony",
    "duration_entropy", "longest_run", "repeated_4gram_share",
)


def entropy_bits(counts: Iterable[float]) -> float:
    """Shannon entropy in bits of a histogram (0 for an empty one)."""
    values = [c for c in counts if c > 0]
    total = sum(values)
    return -sum(c / total * math.log2(c / total) for c in values) if total else 0.0


def _notes(events: Sequence[Event]) -> list[int]:
    return [p for pitches, _ in events for p in pitches]


def pitch_class_entropy(events: Sequence[Event]) -> float:
    """Entropy (bits, 0..log2 12 ≈ 3.58) of the pitch classes of all notes, chord notes included."""
    return entropy_bits(Counter(p % 12 for p in _notes(events)).values())


def in_scale_ratio(events: Sequence[Event]) -> float:
    """Share of notes inside the best-fitting diatonic set (the major scale on any of 12 tonics).

    A relative major and minor share one set, so this measures diatonicism, not mode; a minor
    key's raised leading tone counts as outside. 1.0 for no notes (nothing is out of key).
    """
    pcs = Counter(p % 12 for p in _notes(events))
    total = sum(pcs.values())
    if not total:
        return 1.0
    best = max(sum(pcs[(tonic + step) % 12] for step in MAJOR_SCALE) for tonic in range(12))
    return best / total


def pitch_range(events: Sequence[Event]) -> int:
    """Highest minus lowest MIDI pitch, in semitones (0 for no notes)."""
    notes = _notes(events)
    return max(notes) - min(notes) if notes else 0


def mean_polyphony(events: Sequence[Event]) -> float:
    """Mean number of notes per sounding (non-rest) event; 0 if all are rests."""
    sizes = [len(pitches) for pitches, _ in events if pitches]
    return sum(sizes) / len(sizes) if sizes else 0.0


def duration_histogram(events: Sequence[Event]) -> dict[int, float]:
    """Share of events per duration (twelfths of a beat), sorted by duration."""
    counts = Counter(d for _, d in events)
    total = sum(counts.values())
    return {d: counts[d] / total for d in sorted(counts)}


def duration_entropy(events: Sequence[Event]) -> float:
    """Entropy (bits) of the durations of all events, rests included."""
    return entropy_bits(Counter(d for _, d in events).values())


def longest_run(events: Sequence[Event]) -> int:
    """Most consecutive events with one identical pitch set (a stuck note or chord)."""
    best = run = 0
    previous: object = None
    for pitches, _ in events:
        run = run + 1 if pitches == previous else 1
        previous = pitches
        best = max(best, run)
    return best


def repeated_ngram_share(events: Sequence[Event], n: int = 4) -> float:
    """Share of the event n-grams (pitch set and duration) that repeat an earlier one; 0 if none."""
    grams = [tuple(events[i : i + n]) for i in range(len(events) - n + 1)]
    return (len(grams) - len(set(grams))) / len(grams) if grams else 0.0


def sequence_metrics(events: Sequence[Event]) -> dict[str, float]:
    """Every scalar metric of one sequence."""
    events = list(events)
    return {
        "events": len(events),
        "pitch_class_entropy": pitch_class_entropy(events),
        "in_scale_ratio": in_scale_ratio(events),
        "pitch_range": pitch_range(events),
        "mean_polyphony": mean_polyphony(events),
        "duration_entropy": duration_entropy(events),
        "longest_run": longest_run(events),
        "repeated_4gram_share": repeated_ngram_share(events, 4),
    }


def summarize(sequences: Sequence[Sequence[Event]]) -> dict:
    """Scalar metrics averaged over sequences (each sequence weighs the same), plus the duration
    histogram pooled over all of them (keys are durations in twelfths, as strings for JSON)."""
    sequences = [list(s) for s in sequences]
    per = [sequence_metrics(s) for s in sequences]
    out: dict = {k: (sum(m[k] for m in per) / len(per) if per else 0.0) for k in SCALAR_METRICS}
    pooled = [e for s in sequences for e in s]
    out["duration_histogram"] = {str(d): share for d, share in duration_histogram(pooled).items()}
    out["sequences"] = len(sequences)
    return out
