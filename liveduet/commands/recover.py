"""`liveduet recover`: rebuild a session's MIDI file from the journal a crash left behind."""

from __future__ import annotations

import argparse

from liveduet.live.recorder import recover


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "recover",
        help="rebuild a recording from its journal after a crash",
        description="Rebuild the MIDI file of a session that ended without saving (crash, kill, power "
        "loss) from its PATH.journal. A damaged last line is skipped. The journal is kept.",
    )
    p.add_argument("journal", metavar="JOURNAL", help="the .journal file next to the lost recording")
    p.add_argument("--out", metavar="PATH", help="MIDI file to write (default: JOURNAL without .journal)")
    p.add_argument("--force", action="store_true", help="overwrite PATH if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = recover(args.journal, args.out, force=args.force)
    note = f", skipped {result.skipped_lines} damaged line(s)" if result.skipped_lines else ""
    note += f"; {result.note}" if result.note else ""
    print(
        f"recovered {result.events} events ({result.seconds:.1f} s at {result.tempo_bpm:g} bpm) to {result.path}{note}"
    )
    return 0
