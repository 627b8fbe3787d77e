"""When the answer comes in: predicting the end of the call, as a partner trading phrases does.

Positions are beats from the call's anchor (its first note, or the session's grid), checked while
the player is silent (all keys and pedal up). A player holds notes for a share of their length (the
call's *articulation*: ~1 legato, ~0.5 staccato), so the last note's release says when the next note
would come if the call went on: `expected = onset + held / articulation`. Phrase bar lines come
every `PHRASE_BARS` bars from the anchor, from the end of the first phrase on.

1. The last sound ended within two beats before a phrase bar line L: listen through the line (a
   player going on, or starting the next phrase after a rest, plays on it), and when nothing has
   come by L + HEAR (and the implied note is overdue), enter on the "and", L + 1/2.
2. It ended just after L: enter on L + 1 once the implied note has not come.
3. Elsewhere (a rest inside a phrase is as likely as an end): once the implied note has not come
   and the silence lasts `silence` beats, listen through the next beat (players restart on a beat)
   and enter on its "and".
The implied note is never expected later than `longest` beats after the release (the hard end,
`phrase.silence_beats`), so a call always ends.

Measured (`liveduet evaluate --live`, 300 held-out Essen calls): entering *on* the line after a
clear stop made 2 of 3 false ends of 16-beat calls (a new phrase starts on the downbeat after a
rest); listening through it costs half a beat.

Every entry is tentative (the engine's ENTERING state): a note before the answer's first note
cancels it silently and the call goes on; only a note after the answer sounded is a false end.
`phrase.silence_beats` remains the hard end; `--call-bars` and the end gestures bypass this module.
"""

from __future__ import annotations

import math

PHRASE_BARS = 2  # phrases are usually 2, 4 or 8 bars long
HEAR = 0.1  # beats after an expected onset: a player going on would have been heard by then
BEFORE_LINE = 2.0  # beats: a release this close before a line ends the phrase there
AFTER_LINE = 0.5  # a release up to this far past a line still counts as ending there


def expected_onset(onset: float, released: float, articulation: float, longest: float = 1e9) -> float:
    """Where the next note would come if the player went on in their style (beats)."""
    return min(onset + (released - onset) / max(0.25, min(1.0, articulation)), released + longest)


def entry_beat(onset: float, released: float, now: float, margin: float, window: float, beats_per_bar: int,
               silence: float, articulation: float = 1.0, longest: float = 1.5) -> float | None:
    """The beat to enter on when it is time to plan it; None to keep listening.

    `onset`/`released`: the last note's start and when the sound stopped; `now`: the present;
    `margin`: how far ahead of its first note an answer must be planned; `window`: how early before
    that an entry on a beat may be planned; `articulation`: the call's held share; `longest`: the
    longest silence that can still be articulation (all positions in beats from the anchor)."""
    expected = expected_onset(onset, released, articulation, longest)
    reachable = math.ceil(now + margin - 1e-9)  # the first beat still far enough ahead
    period = PHRASE_BARS * beats_per_bar
    line = max(period, math.ceil(released / period - 1e-9) * period)
    if line - BEFORE_LINE <= released < line:
        heard = max(line, expected) + HEAR
        if now >= heard:
            return line + 0.5 if now + margin <= line + 0.5 else reachable
        return None
    past = line - period  # the line just before the release
    if past >= period and released <= past + AFTER_LINE:
        if now >= expected + HEAR and now + margin >= past + 1 - window:
            return max(reachable, past + 1)
        return None
    likely = max(released + silence, expected + HEAR)
    beat = math.ceil(likely - 1e-9)
    if now >= beat + HEAR:
        return beat + 0.5 if now + margin <= beat + 0.5 else reachable
    return None
