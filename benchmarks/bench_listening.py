"""Listening through the daemon, side by side in one run: the live evaluation for several settings.

    python benchmarks/bench_listening.py [--model models/default] [--data data/folk-eval]
                                         [--calls 50] [--out benchmarks/results/listening.json]

Every row is `liveduet evaluate --live` (the daemon's Session in simulated time, one session of
--calls held-out calls of 8 beats at 100 bpm) with one setting changed from the defaults:

- wave 1's behaviour (one model state through the session, no pitch-class bias, no mirroring, no
  early entry, the old 1.5-beat silence end) as the baseline;
- the context policy: session / call / auto;
- the sampling defaults: temperature, top-p, the repetition guard and the call-pitch bias (follow).

Each row gives the answer's place between another piece (0) and the composer (1) on pitch-class
cosine, rhythm overlap and register gap, in-key share, entry gap, false ends and expression
figures; the JSON keeps every report. The defaults in configs/live.toml are chosen from this.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from liveduet.live.evaluate import LiveEvalOptions, run_live_eval, targets_met
from liveduet.live.settings import LiveSettings
from liveduet.model.runtime import ModelRuntime
from liveduet.music.dataset import load_dataset

REPO = Path(__file__).resolve().parents[1]

WAVE1 = {"answer": {"memory": "session", "follow": 0.0, "follow_rhythm": 0.0, "follow_register": 0.0,
                    "mirror": False, "velocity_spread": 6, "start_margin_s": 0.05}, "phrase": {"early_entry": False}}
SWEEP: list[tuple[str, dict]] = [
    ("wave 1 (session, no bias, no mirroring, silence end)", WAVE1),
    ("defaults", {}),
    ("early entry off (1.5 beats of silence)", {"phrase": {"early_entry": False}}),
    ("memory = session", {"answer": {"memory": "session"}}),
    ("memory = call", {"answer": {"memory": "call"}}),
    ("no follow biases (the model alone)", {"answer": {"follow": 0.0, "follow_rhythm": 0.0,
                                                       "follow_register": 0.0}}),
    ("follow_register = 0", {"answer": {"follow_register": 0.0}}),
    ("follow_register = 2", {"answer": {"follow_register": 2.0}}),
    ("follow_rhythm = 0", {"answer": {"follow_rhythm": 0.0}}),
    ("follow_rhythm = 2", {"answer": {"follow_rhythm": 2.0}}),
    ("follow_rhythm = 3", {"answer": {"follow_rhythm": 3.0}}),
    ("follow = 0.5", {"answer": {"follow": 0.5}}),
    ("follow = 2", {"answer": {"follow": 2.0}}),
    ("temperature 0.5", {"answer": {"temperature": 0.5}}),
    ("temperature 0.7", {"answer": {"temperature": 0.7}}),
    ("temperature 0.85", {"answer": {"temperature": 0.85}}),
    ("temperature 1.2", {"answer": {"temperature": 1.2}}),
    ("top-p 0.8", {"answer": {"top_p": 0.8}}),
    ("top-p 1.0", {"answer": {"top_p": 1.0}}),
    ("repetition guard off", {"answer": {"max_repeat": 0, "max_loop": 0}}),
    ("repetition guard 2/2", {"answer": {"max_repeat": 2, "max_loop": 2}}),
]


def row(name: str, report: dict) -> dict:
    m = report["measures"]
    return {
        "setting": name,
        "place_pc_cosine": m["pc_cosine"]["place"], "place_rhythm": m["rhythm_overlap"]["place"],
        "place_register": m["register_gap"]["place"], "pc_cosine": m["pc_cosine"]["answer"],
        "rhythm_overlap": m["rhythm_overlap"]["answer"], "register_gap": m["register_gap"]["answer"],
        "in_key": m["in_key"]["answer"], "texture_gap": m["texture_gap"]["answer"],
        "answered": report["answered_share"], "false_ends": report["false_end_share"],
        "entry_beats_median": report["entry_beats_median"],
        "velocity_corr": report["expression"]["velocity_corr_mean"],
        "swing_ok": report["expression"]["swing_within_0.05"],
        "articulation_ok": report["expression"]["articulation_within_10pct"],
        "speed_x_realtime": report["speed"],
        "targets_missed": [k for k, ok in targets_met(report).items() if not ok],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=REPO / "models" / "default")
    ap.add_argument("--data", type=Path, default=REPO / "data" / "folk-eval")
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--beats", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=1, help="sessions per setting (different players and draws)")
    ap.add_argument("--only", nargs="*", help="run only settings whose name contains one of these")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "listening.json")
    args = ap.parse_args(argv)

    runtime = ModelRuntime.load(args.model)
    data = load_dataset(args.data)
    rows, reports = [], {}
    started = time.time()
    for name, over in SWEEP:
        if args.only and not any(o in name for o in args.only):
            continue
        settings = LiveSettings().with_overrides(**over)
        for seed in range(args.seeds):
            options = LiveEvalOptions(calls=args.calls, beats=args.beats, seed=seed)
            report = run_live_eval(runtime, data, settings, options)
            r = row(name, report)
            r["seed"] = seed
            rows.append(r)
            reports[f"{name} / seed {seed}"] = {k: v for k, v in report.items() if k != "calls"}
            print(json.dumps(r), file=sys.stderr)
    result = {
        "benchmark": "listening", "when": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": platform.machine(),
        "load_avg": os.getloadavg(), "model": str(args.model), "data": str(args.data),
        "calls": args.calls, "beats": args.beats, "seconds": round(time.time() - started, 1),
        "rows": rows, "reports": reports,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'setting':52} {'pc':>5} {'rhy':>5} {'reg':>5} {'key':>5} {'entry':>5} {'false':>5}")
    for r in rows:
        print(f"{r['setting'][:52]:52} {r['place_pc_cosine']:5.2f} {r['place_rhythm']:5.2f} "
              f"{r['place_register']:5.2f} {r['in_key']:5.3f} {r['entry_beats_median']:5.2f} {r['false_ends']:5.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
