"""Tempo from a call's onsets: the beat period that puts the onsets nearest a 16th/triplet grid.

Pure functions (seconds in, bpm out), tested without ports. Grid fit alone cannot tell 90 from 180
bpm (both fit eighth notes), so candidates come from the median inter-onset interval times
musical ratios, and ties go to the tempo closest to the one the player used before.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import Counter

# (position in the beat, cost): simple positions are likelier than 16ths and triplets, which is
# what makes 90 bpm quarters beat 135 bpm dotted-eighth readings of the same onsets.
GRID = ((0.0, 0.0), (0.25, 0.004), (1 / 3, 0.005), (0.5, 0.0015), (2 / 3, 0.005), (0.75, 0.004), (1.0, 0.0))
RATIOS = (0.25, 1 / 3, 0.5, 2 / 3, 1.0, 1.5, 2.0, 3.0, 4.0)  # median IOI as a share of a beat
PRIOR_WEIGHT = 0.004  # grid error (beats²) worth one octave away from the prior


def grid_error(onsets: list[float], period: float) -> float:
    """Mean over onsets of squared distance (beats) to a grid point plus that point's cost."""
    t0 = onsets[0]
    total = 0.0
    for t in onsets[1:]:
        b = (t - t0) / period
        frac = b - math.floor(b)
        total += min((frac - g) ** 2 + cost for g, cost in GRID)
    return total / max(1, len(onsets) - 1)


def estimate_bpm(onsets: list[float], prior_bpm: float, min_bpm: float = 50.0, max_bpm: float = 200.0) -> float:
    """The call's tempo; `prior_bpm` when there are too few onsets to tell (fewer than 4)."""
    onsets = sorted(onsets)
    iois = [b - a for a, b in zip(onsets, onsets[1:]) if b - a > 0.06]
    if len(iois) < 3:
        return prior_bpm
    # Candidate beat lengths: the typical inter-onset intervals (actual IOIs, never an average of
    # two, which need not be a musical value) times musical ratios.
    typical = {statistics.median_low(iois), statistics.median_high(iois),
               Counter(round(x, 2) for x in iois).most_common(1)[0][0]}
    best = (math.inf, prior_bpm)
    for ratio, ioi in itertools.product(RATIOS, sorted(typical)):
        base = 60.0 / (ioi / ratio)
        for step in range(-12, 13):  # ±6 % around the candidate, in 0.5 % steps
            bpm = base * (1 + step * 0.005)
            if not min_bpm <= bpm <= max_bpm:
                continue
            cost = grid_error(onsets, 60.0 / bpm) + PRIOR_WEIGHT * abs(math.log2(bpm / prior_bpm))
            if cost < best[0]:
                best = (cost, bpm)
    return round(best[1], 1)
