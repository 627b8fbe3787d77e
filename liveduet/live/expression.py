"""How the answer is played: the call's dynamics, articulation and swing, mirrored.

Pure: built from the call's notes (beats from the call's first note), read by the engine for each
answer note. Invariant: with `mirror` off, or for a call too short to tell, the answer plays as
before (mean velocity, the configured articulation, straight time).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

from liveduet.music.listening import Note, articulation, onsets, swing_ratio

STRAIGHT_BELOW = 1.08  # a swing ratio closer to 1 than this is played straight
MAX_SWING = 2.5
SWING_SPREAD = 0.06  # off-beat positions spread wider than this (IQR, beats): a mix, not swing


@dataclass(frozen=True)
class Expression:
    contour: tuple[tuple[float, int], ...] = ()  # (position in the phrase 0..1, velocity), by position
    articulation: float = 0.92  # share of each note's duration that sounds
    swing: float = 1.0  # long/short ratio of 8th pairs; 1 = straight

    def velocity_at(self, rel: float) -> int:
        """The call's velocity at the same relative place in its phrase (linear between notes)."""
        c = self.contour
        if not c:
            return 80
        i = bisect_left(c, (rel, -1))
        if i <= 0:
            return c[0][1]
        if i >= len(c):
            return c[-1][1]
        (x0, v0), (x1, v1) = c[i - 1], c[i]
        w = (rel - x0) / (x1 - x0) if x1 > x0 else 0.0
        return round(v0 + w * (v1 - v0))

    def warp(self, beats: float) -> float:
        """Straight time → swung time: within each beat the off-beat 8th moves from 1/2 to
        r / (1 + r); everything between moves proportionally (16ths too, as swing quantise does)."""
        if self.swing == 1.0:
            return beats
        whole = beats // 1
        f = beats - whole
        mid = self.swing / (1 + self.swing)
        f = f * 2 * mid if f <= 0.5 else mid + (f - 0.5) * 2 * (1 - mid)
        return whole + f


def from_call(notes: Sequence[Note], default_articulation: float) -> Expression:
    """The expression of a call (notes in beats from its first note)."""
    if not notes:
        return Expression(articulation=default_articulation)
    ons = onsets(notes)
    span = max(ons[-1], 1e-9) if len(ons) > 1 else 1.0
    by_onset: dict[float, list[int]] = {}
    for on, _, _, vel in notes:
        key = min(ons, key=lambda o: abs(o - on))
        by_onset.setdefault(key, []).append(vel)
    contour = tuple(sorted((o / span, round(sum(v) / len(v))) for o, v in by_onset.items()))
    art = articulation(notes)
    return Expression(contour=contour, articulation=default_articulation if art is None else max(0.2, min(1.0, art)),
                      swing=_swing(notes))


def _swing(notes: Sequence[Note]) -> float:
    off = sorted(o % 1.0 for o in onsets(notes) if 0.42 <= o % 1.0 <= 0.72)
    if len(off) < 2:
        return 1.0
    q1, q3 = off[len(off) // 4], off[(3 * len(off)) // 4]
    if q3 - q1 > SWING_SPREAD:
        return 1.0
    r = swing_ratio(notes) or 1.0
    return 1.0 if r < STRAIGHT_BELOW else min(MAX_SWING, r)
