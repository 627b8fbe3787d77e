"""Builds examples/call-and-response.mid: phrases of a Bach chorale's soprano and bass, with room
for liveduet to answer after each. Run from the repository root: python examples/make_example.py"""

from __future__ import annotations

import sys
from pathlib import Path

from music21 import corpus

from liveduet.music.midifile import notes_to_midi, save_atomic

BPM = 96
PHRASE_BEATS = 4
GAP_BEATS = 8  # 1.5 beats of silence end the call, then a 4-beat answer, then room to breathe
PHRASES = 3


def main() -> None:
    score = corpus.parse("bach/bwv66.6").stripTies()
    parts = [score.parts[0], score.parts[-1]]  # soprano and bass: a two-hand call
    notes = []
    for i in range(PHRASES):
        start = i * PHRASE_BEATS
        offset = i * (PHRASE_BEATS + GAP_BEATS) - start + 1
        for part in parts:
            for n in part.flatten().notes:
                if start <= n.offset < start + PHRASE_BEATS:
                    end = min(float(n.offset + n.quarterLength), start + PHRASE_BEATS)
                    vel = 84 if part is parts[0] else 70
                    notes.append((float(n.offset) + offset, end + offset - 0.05, n.pitch.midi, vel))
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "examples/call-and-response.mid")
    save_atomic(notes_to_midi(notes, bpm=BPM, track_name="Player"), out, force=True)
    print(f"wrote {out}: {len(notes)} notes, {PHRASES} phrases at {BPM} bpm")


if __name__ == "__main__":
    main()
