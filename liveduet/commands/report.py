"""`liveduet report SESSION.mid --out report.png`: a piano-roll picture of a recorded session."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="draw a recorded session as a piano-roll picture (PNG)",
        description="Draw a session recorded with `liveduet run --record` as a piano roll: the player's "
        "notes and liveduet's in two colours, each call and answer shaded and labelled where it begins, "
        "time in seconds, counts in the title.",
    )
    p.add_argument("midi", type=Path, metavar="SESSION.mid", help="the recorded session")
    p.add_argument("--out", type=Path, required=True, metavar="report.png", help="the PNG file to write")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from liveduet.ui.report import draw_report, find_phrases, read_notes, title_for

    out = draw_report(args.midi, args.out, force=args.force)
    notes = read_notes(args.midi)
    print(f"wrote {out}: {title_for(args.midi.name, notes, find_phrases(notes))}")
    return 0
