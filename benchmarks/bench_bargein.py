"""Does a barge-in stop the answer at once? `liveduet run` on JACK, answering; the player comes in
again while the answer plays, a few milliseconds before one of the answer's grid points (where its
next note may be due, and already handed over to the frame-timed output 20 ms early). A
sample-accurate capture on the daemon's output (tests/jack_util.FrameSynth, what a synth renders)
counts the answer notes that start after the player's barge-in note reached the synth (notes the
player did not ask for; with their length) and times how long after it the answer's last sounding
note ends.

`--labels retract,no-retract`: the sender process as shipped, and without its retract of handed-over
note-ons (LIVEDUET_JACK_RETRACT=0), side by side in one run. Writes JSON.

Usage: python benchmarks/bench_bargein.py [--rounds 30] [--out benchmarks/results/bargein.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import mido

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_live import JACK, ROOT, corpus_phrase, jack_util, play, port_ending  # noqa: E402
from bench_studio import Daemon  # noqa: E402

LABELS = {"retract": {}, "no-retract": {"LIVEDUET_JACK_RETRACT": "0"}}
ANSWER_CHANNEL = 1  # [answer] channel's default; the player's keyboard sends on channel 0
GRID_S = 0.25  # an eighth at the daemon's 120 bpm
BEFORE_S = 0.008  # the barge-in comes this long before a grid point


def answer_note_ons(received: list, start: int) -> list[float]:
    return [t for t, m in received[start:] if m.type == "note_on" and m.velocity > 0 and m.channel == ANSWER_CHANNEL]


def sounded(received: list, after: float, before: float) -> list[tuple[float, float]]:
    """The answer's notes that sounded past `after` and ended before `before`: (on, off) times. A
    note-off for a note that never sounded (a retracted one's) is not a note."""
    on_at: dict[int, float] = {}
    out = []
    for t, m in received:
        if m.type not in ("note_on", "note_off") or m.channel != ANSWER_CHANNEL:
            continue
        if m.type == "note_on" and m.velocity > 0:
            on_at[m.note] = t
        elif m.note in on_at:
            on = on_at.pop(m.note)
            if after <= t < before:
                out.append((on, t))
    return out


def run_label(label: str, args: argparse.Namespace, tmp: Path) -> list[dict]:
    os.environ.pop("LIVEDUET_JACK_RETRACT", None)
    os.environ.update(LABELS[label])
    stats = tmp / f"stats-{label}.jsonl"
    daemon = Daemon("none", args.model, tmp, stats, sender="process")
    synth = jack_util.FrameSynth(f"bargein-synth-{label}")
    rows: list[dict] = []
    rng = random.Random(0)
    try:
        jack_util.jack_connect(port_ending(":liveduet-out"), synth.name)
        keyboard = mido.Backend(JACK).open_output(f"bargein-kb-{label}", virtual=True)
        jack_util.jack_connect(port_ending(f":bargein-kb-{label}"), port_ending(":liveduet-in"))
        call = corpus_phrase()
        play(keyboard, call)
        for _ in range(args.rounds):
            mark = len(synth.received)
            first = None
            deadline = time.perf_counter() + 15
            while first is None and time.perf_counter() < deadline:
                time.sleep(0.005)
                with synth.lock:
                    ons = answer_note_ons(synth.received, mark)
                first = ons[0] if ons else None
            if first is None:
                rows.append({"answered": False})
                play(keyboard, call)
                continue
            barge_at = first + GRID_S * rng.randint(2, 16) - BEFORE_S  # the answer lasts 12 beats (24 eighths)
            time.sleep(max(0.0, barge_at - time.perf_counter()))
            mark = len(synth.received)
            play(keyboard, call)  # its first note is the barge-in
            time.sleep(0.3)  # what the barge-in cut, and anything it let through, has reached the synth
            with synth.lock:
                got = list(synth.received[mark:])
            thru = next((t for t, m in got if m.type == "note_on" and m.channel == 0 and m.velocity > 0), None)
            if thru is None:
                rows.append({"answered": True, "thru_seen": False})
                continue
            window = thru + 1.0  # the next answer starts after this call (2 s) and a gap
            with synth.lock:
                heard = sounded(list(synth.received), thru, window)
            blips = [(on, off) for on, off in heard if on > thru]
            rows.append({"answered": True, "thru_seen": True, "late_barge_ms": round((thru - barge_at) * 1e3, 3),
                         "notes_after_barge_in": len(blips),
                         "blips_start_and_length_ms": [(round((on - thru) * 1e3, 3), round((off - on) * 1e3, 3))
                                                       for on, off in blips],
                         "last_answer_off_ms": round((max(off for _, off in heard) - thru) * 1e3, 3)
                         if heard else None})
        keyboard.close()
    finally:
        synth.close()
        daemon.stop()
        os.environ.pop("LIVEDUET_JACK_RETRACT", None)
    return rows


def summary(rows: list[dict]) -> dict:
    seen = [r for r in rows if r.get("thru_seen")]
    offs = sorted(r["last_answer_off_ms"] for r in seen if r["last_answer_off_ms"] is not None)
    return {
        "barge_ins": len(seen), "unanswered_rounds": sum(not r.get("answered") for r in rows),
        "rounds_with_a_note_after_barge_in": sum(r["notes_after_barge_in"] > 0 for r in seen),
        "notes_after_barge_in": sum(r["notes_after_barge_in"] for r in seen),
        "last_answer_off_ms_median": round(statistics.median(offs), 3) if offs else None,
        "last_answer_off_ms_max": offs[-1] if offs else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "default"))
    ap.add_argument("--labels", default=",".join(LABELS), help=f"comma-separated, of {', '.join(LABELS)}")
    ap.add_argument("--rounds", type=int, default=30, help="barge-ins per label and repeat")
    ap.add_argument("--repeats", type=int, default=1, help="times the whole order of labels runs")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    labels = [x for x in args.labels.split(",") if x]
    for x in labels:
        if x not in LABELS:
            sys.exit(f"unknown label {x!r}: one of {', '.join(LABELS)}")
    if not jack_util.have_jackd():
        sys.exit("jackd not installed: apt-get install --no-install-recommends jackd2")
    server = None if jack_util.jack_running() else jack_util.start_jackd()
    tmp = Path(tempfile.mkdtemp(prefix="bench-bargein-"))
    runs: dict[str, list[dict]] = {x: [] for x in labels}
    try:
        for _ in range(args.repeats):
            for label in labels:
                runs[label] += run_label(label, args, tmp)
    finally:
        if server is not None:
            jack_util.stop_jackd(server)
    result = {"what": "answer notes started after the player's barge-in note reached the synth, and when the "
                      "answer's last note ended (ms after that note), by label",
              "labels": {x: summary(r) for x, r in runs.items()}, "rounds": args.rounds, "repeats": args.repeats,
              "barge_in_before_grid_point_ms": BEFORE_S * 1e3, "load_average": os.getloadavg(), "runs": runs}
    print(json.dumps(result["labels"], indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
