"""What the model remembers between calls: the context policy ([answer] memory).

    call     every call is heard from a fresh state (<bos>): the answer hears this call only
    session  one state through the session: continuity, but the last call's key and register
             leak into the next answer (measured: answers relate to their call no better than
             another tune's continuation would)
    auto     keep the session's state while the player stays in key and register; start fresh
             when they move (a new diatonic set, or the mean pitch moves more than REGISTER_MOVE)

Pure: the engine asks `keep_context` at the end of each call and re-primes when told not to.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from liveduet.music.theory import best_major

REGISTER_MOVE = 5.0  # semitones of mean pitch


@dataclass(frozen=True)
class CallProfile:
    scale: int  # tonic of the best-fitting major scale (its diatonic set)
    mean_pitch: float


def profile(pitches: Iterable[int]) -> CallProfile | None:
    ps = list(pitches)
    scale = best_major(ps)
    return None if scale is None else CallProfile(scale, sum(ps) / len(ps))


def keep_context(policy: str, previous: CallProfile | None, current: CallProfile | None) -> bool:
    """Whether the answer to `current` may hear what came before it."""
    if policy == "session":
        return True
    if policy == "call" or previous is None or current is None:
        return False
    return previous.scale == current.scale and abs(previous.mean_pitch - current.mean_pitch) <= REGISTER_MOVE
