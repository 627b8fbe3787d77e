"""When the answer comes in: predicting the end of the call, as a partner trading phrases does.

Positions are beats from the call's anchor (its first note, or the session's grid). Two rules,
checked while the player is silent (all keys and pedal up):

1. Phrase bar line: the sound stopped within the last beat before a phrase bar line L (every
   `PHRASE_BARS` bars from the anchor, at least that many bars into the call), or just after it.
   Enter on L if it can still be reached (`margin` beats ahead), else on the next beat.
2. Elsewhere: after `silence` beats of silence, enter on the next reachable beat.

The entry is tentative (the engine's ENTERING state): a note before the answer's first note
cancels it silently and the call goes on. Only a note after the answer sounded is a false end.
`phrase.silence_beats` remains the hard end; `--call-bars` bypasses this module.
"""

from __future__ import annotations

import math

PHRASE_BARS = 2  # phrases are usually 2, 4 or 8 bars long
AFTER_LINE = 0.5  # a release up to this far past a phrase bar line still counts as ending there


def entry_beat(released: float, now: float, lead: float, beats_per_bar: int, silence: float) -> int | None:
    """The beat to enter on when it is time to plan it; None to keep listening.

    `released`: when the sound stopped; `now`: the present; `lead`: how far ahead of its first note
    an answer must be planned (all in beats from the anchor). A bar-line entry is planned as late as
    possible (`lead` before it), so a player who goes on is heard first."""
    reachable = math.ceil(now + lead - 1e-9)  # the first beat still far enough ahead
    period = PHRASE_BARS * beats_per_bar
    line = max(period, round(released / period) * period)
    if line - 1 <= released <= line + AFTER_LINE:
        target = max(reachable, line if released <= line else line + 1)
        return target if now + lead >= target - 1e-9 else None
    if now - released >= silence:
        return reachable
    return None
