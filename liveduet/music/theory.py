"""Small music theory for the live path: the key of a call, scales as pitch-class sets."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

MAJOR = (0, 2, 4, 5, 7, 9, 11)
NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def major_scale(tonic: int) -> frozenset[int]:
    return frozenset((tonic + step) % 12 for step in MAJOR)


def best_major(pitches: Iterable[int]) -> int | None:
    """Tonic of the major scale (the diatonic set) holding most of the notes; None for no notes.
    Ties go to the scale whose tonic is heard most, then to the lower pitch class."""
    pcs = Counter(p % 12 for p in pitches)
    if not pcs:
        return None
    return max(range(12), key=lambda t: (sum(pcs[pc] for pc in major_scale(t)), pcs[t], -t))


def scale_name(tonic: int) -> str:
    return f"{NAMES[tonic]} major / {NAMES[(tonic + 9) % 12]} minor"
