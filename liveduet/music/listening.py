"""How much an answer takes up its call: pure measures over notes, for the live evaluation.

A *note* here is `(onset beats, end beats, pitch, velocity)`, the same for the player's call, the
composer's continuation and liveduet's answer as played out of the daemon. Each measure compares a
continuation with its call; `place` then puts the answer between two references:

    place = (answer - another piece) / (composer - another piece)

so 0 means "relates to the call no better than another tune's continuation" and 1 means "as well
as the composer's own continuation" (for gaps, where lower is better, the sign flips by itself).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

Note = tuple[float, float, int, int]  # (onset beats, end beats, pitch, velocity)

# Krumhansl & Kessler (1982) key profiles, tonic first.
KK_MAJOR = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
KK_MINOR = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)
MAJOR_STEPS = (0, 2, 4, 5, 7, 9, 11)
MINOR_STEPS = (0, 2, 3, 5, 7, 8, 10, 11)  # natural minor plus the raised leading tone (harmonic)
TICKS = 12


def pc_histogram(notes: Sequence[Note]) -> list[float]:
    """Duration-weighted pitch-class histogram (12 bins)."""
    h = [0.0] * 12
    for on, end, p, _ in notes:
        h[p % 12] += max(end - on, 1 / TICKS)
    return h


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(x * x for x in b))
    return sum(x * y for x, y in zip(a, b)) / (na * nb) if na and nb else 0.0


def pitch_class_cosine(a: Sequence[Note], b: Sequence[Note]) -> float:
    return cosine(pc_histogram(a), pc_histogram(b))


def onsets(notes: Sequence[Note]) -> list[float]:
    """Distinct onsets (beats), chord notes struck within 1/24 beat counted once."""
    out: list[float] = []
    for on in sorted(n[0] for n in notes):
        if not out or on - out[-1] > 1 / 24:
            out.append(on)
    return out


def ioi_histogram(notes: Sequence[Note]) -> Counter:
    """Inter-onset intervals in twelfths of a beat (capped at 4 beats), as shares."""
    ons = onsets(notes)
    counts = Counter(min(48, max(1, round((b - a) * TICKS))) for a, b in zip(ons, ons[1:]))
    total = sum(counts.values())
    return Counter({k: v / total for k, v in counts.items()}) if total else Counter()


def rhythm_overlap(a: Sequence[Note], b: Sequence[Note]) -> float:
    """Overlap (0..1) of the two inter-onset-interval histograms: sum of the bin-wise minimum."""
    ha, hb = ioi_histogram(a), ioi_histogram(b)
    return sum(min(ha[k], hb[k]) for k in ha.keys() & hb.keys())


def mean_pitch(notes: Sequence[Note]) -> float:
    return sum(n[2] for n in notes) / len(notes) if notes else 0.0


def register_gap(a: Sequence[Note], b: Sequence[Note]) -> float:
    """Semitones between the mean pitches."""
    return abs(mean_pitch(a) - mean_pitch(b)) if a and b else 24.0


def texture(notes: Sequence[Note]) -> float:
    """Notes per onset (1 = a single line, 3 = three-note chords)."""
    ons = onsets(notes)
    return len(notes) / len(ons) if ons else 0.0


def texture_gap(a: Sequence[Note], b: Sequence[Note]) -> float:
    return abs(texture(a) - texture(b))


def edit_similarity(a: Sequence[int], b: Sequence[int]) -> float:
    """1 − Levenshtein distance / the longer length, over token sequences (1: the same phrase)."""
    if not a and not b:
        return 1.0
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return 1.0 - prev[-1] / max(len(a), len(b))


def find_key(notes: Sequence[Note]) -> tuple[int, str]:
    """Krumhansl–Schmuckler: (tonic pitch class, "major" | "minor") whose profile correlates best
    with the duration-weighted pitch-class histogram."""
    h = pc_histogram(notes)
    best = (-2.0, 0, "major")
    for mode, profile in (("major", KK_MAJOR), ("minor", KK_MINOR)):
        for tonic in range(12):
            rotated = [profile[(pc - tonic) % 12] for pc in range(12)]
            r = _pearson(h, rotated)
            if r > best[0]:
                best = (r, tonic, mode)
    return best[1], best[2]


def key_scale(tonic: int, mode: str) -> frozenset[int]:
    steps = MAJOR_STEPS if mode == "major" else MINOR_STEPS
    return frozenset((tonic + s) % 12 for s in steps)


def in_key_share(notes: Sequence[Note], scale: frozenset[int]) -> float:
    """Share of notes (counted, not weighted) whose pitch class is in `scale`; 1.0 for no notes."""
    return sum(n[2] % 12 in scale for n in notes) / len(notes) if notes else 1.0


def _pearson(x: Sequence[float], y: Sequence[float]) -> float:
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sx = math.sqrt(sum((a - mx) ** 2 for a in x))
    sy = math.sqrt(sum((b - my) ** 2 for b in y))
    return sum((a - mx) * (b - my) for a, b in zip(x, y)) / (sx * sy) if sx and sy else 0.0


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Correlation, or None when either side is constant or shorter than 3."""
    if len(x) < 3 or len(x) != len(y):
        return None
    if max(x) == min(x) or max(y) == min(y):
        return None
    return _pearson(x, y)


# ---- expression measures ----------------------------------------------------------------------

def articulation(notes: Sequence[Note]) -> float | None:
    """Mean share of each inter-onset interval that the note sounds (1 legato, ~0.5 staccato);
    None with fewer than 2 onsets. The last onset (no next one) does not count."""
    ons = onsets(notes)
    if len(ons) < 2:
        return None
    shares = []
    nxt = dict(zip(ons, ons[1:]))
    for on, end, _, _ in notes:
        key = min(ons, key=lambda o: abs(o - on))
        if key in nxt:
            shares.append(min(1.0, (end - on) / (nxt[key] - key)))
    return sum(shares) / len(shares) if shares else None


def swing_ratio(notes: Sequence[Note]) -> float | None:
    """Long/short ratio of 8th-note pairs from where off-beat 8ths fall (0.5 → 1.0 straight,
    2/3 → 2.0 triplet swing); None without off-beat 8ths. Onsets within 0.42..0.72 of a beat
    count as off-beat 8ths (16ths and on-beat notes do not)."""
    pos = [o % 1.0 for o in onsets(notes)]
    off = [p for p in pos if 0.42 <= p <= 0.72]
    if not off:
        return None
    p = sorted(off)[len(off) // 2]
    return p / (1 - p)


def compare(call: Sequence[Note], cont: Sequence[Note]) -> dict[str, float]:
    """Every call↔continuation measure for one pair."""
    tonic, mode = find_key(call)
    return {
        "pc_cosine": pitch_class_cosine(cont, call),
        "rhythm_overlap": rhythm_overlap(cont, call),
        "register_gap": register_gap(cont, call),
        "in_key": in_key_share(cont, key_scale(tonic, mode)),
        "texture_gap": texture_gap(cont, call),
    }


MEASURES = ("pc_cosine", "rhythm_overlap", "register_gap", "in_key", "texture_gap")
LOWER_IS_BETTER = frozenset({"register_gap", "texture_gap"})


def place(answer: float, another: float, composer: float) -> float | None:
    """Where the answer sits between another piece (0) and the composer (1); None when the two
    references are equal (nothing to place between)."""
    span = composer - another
    return (answer - another) / span if abs(span) > 1e-9 else None
