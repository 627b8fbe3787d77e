"""When the answer comes in: predicting the end of the call, as a partner trading phrases does.

Positions are beats from the call's anchor (its first note, or the session's grid). Checked while
the player is silent (all keys and pedal up); phrase bar lines come every `PHRASE_BARS` bars from
the anchor, from the end of the first phrase on:

1. The sound stopped in the last beat before a phrase bar line L, and the silence is clearly longer
   than the player's usual gap between notes: the phrase ended. Enter on L.
2. It stopped there, but the silence is no longer than the player's gaps (legato or steady
   staccato playing: the next note could be due on L). Listen through the line: if nothing comes
   by L + HEAR, enter on the "and", L + 1/2 (still on the player's grid).
3. It stopped just after L: enter on L + 1.
4. Elsewhere: after `silence` beats of silence, enter on the next beat.

Every entry is tentative (the engine's ENTERING state): a note before the answer's first note
cancels it silently and the call goes on; only a note after the answer sounded is a false end.
`phrase.silence_beats` remains the hard end; `--call-bars` and the end gestures bypass this module.
"""

from __future__ import annotations

import math

PHRASE_BARS = 2  # phrases are usually 2, 4 or 8 bars long
GAP_FACTOR = 1.5  # a silence this many times the player's usual gap is more than articulation
HEAR = 0.1  # beats past the line: a player going on would have been heard by then
AFTER_LINE = 0.5  # a release up to this far past a line still counts as ending there


def entry_beat(released: float, now: float, margin: float, window: float, beats_per_bar: int, silence: float,
               usual_gap: float = 0.0) -> float | None:
    """The beat to enter on when it is time to plan it; None to keep listening.

    `released`: when the sound stopped; `now`: the present; `margin`: how far ahead of its first note
    an answer must be planned; `window`: how early before that a bar-line entry may be planned;
    `usual_gap`: the call's median silence between a release and the next onset (all in beats from
    the anchor). Entries are planned as late as they can be, so a player who goes on is heard first."""
    reachable = math.ceil(now + margin - 1e-9)  # the first beat still far enough ahead
    period = PHRASE_BARS * beats_per_bar
    line = max(period, math.ceil(released / period - 1e-9) * period)
    if line - 1 <= released < line:
        if line - margin - window <= now <= line - margin:  # the last moments to plan on the line
            return line if now - released >= GAP_FACTOR * usual_gap else None
        if now >= line + HEAR:
            return line + 0.5 if now + margin <= line + 0.5 else reachable
        return None
    past = line - period  # the line just before the release
    if past >= period and released <= past + AFTER_LINE and now + margin >= past + 1 - window:
        return max(reachable, past + 1)
    if now - released >= silence:
        return reachable
    return None
