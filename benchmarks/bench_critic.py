"""Best of K, measured through the product's own paths; writes benchmarks/results/critic.json.

- `sweep`: the live evaluation (`evaluate --live`: held-out calls through the daemon's Session on a
  manual clock) with `[answer] candidates` = 1, 2, 4, 8 on data/folk-eval and data/essen-eval: does
  the critic's pick move the answers' place between "another piece" and "the composer"?
- `cost`: what one answer costs the daemon's engine thread per K: `sample_event` of the sampler
  `liveduet run` builds (answer_sampler), timed per event, 16-event answers after real calls.
- `live`: bench_live's JACK scenario (thru latency by jack_midi_latency_test while answering, the
  scheduler's lateness from --stats) for the daemon with candidates = 1 and = 4, side by side.

Usage: python benchmarks/bench_critic.py {sweep,cost,live} [--calls N] [--out benchmarks/results/critic.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "critic.json"


def merge_result(out: Path, key: str, value: object) -> None:
    from liveduet.fsutil import write_atomic

    data = json.loads(out.read_text()) if out.exists() else {}
    if key == "sweep" and isinstance(data.get(key), dict):  # one data set at a time: keep the others
        value = {**data[key], **value}  # type: ignore[dict-item]
    data[key] = value
    critic_card = ROOT / "models" / "default" / "critic.json"
    if critic_card.exists():
        c = json.loads(critic_card.read_text())
        data["critic"] = {k: c.get(k) for k in ("held_out_auc", "best_epoch", "train_examples", "held_out_examples",
                                                "examples_per_class", "seconds", "params", "data", "config")}
    write_atomic(out, (json.dumps(data, indent=1) + "\n").encode())


def sweep(args: argparse.Namespace) -> dict:
    from liveduet.live.evaluate import LiveEvalOptions, run_live_eval
    from liveduet.live.settings import LiveSettings
    from liveduet.model.runtime import ModelRuntime
    from liveduet.music.dataset import load_dataset

    runtime = ModelRuntime.load(args.model, threads=1)
    result: dict = {}
    for folder in args.data:
        data = load_dataset(folder)
        rows = {}
        for k in args.ks:
            base = LiveSettings().with_overrides(answer={"candidates": k})
            started = time.perf_counter()
            report = run_live_eval(runtime, data, base, LiveEvalOptions(calls=args.calls, seed=args.seed))
            m = report["measures"]
            rows[f"K={k}"] = {
                "place": {key: m[key]["place"] for key in ("pc_cosine", "rhythm_overlap", "register_gap")},
                "answer": {key: m[key]["answer"] for key in m},
                "composer": {key: m[key]["composer"] for key in m},
                "another": {key: m[key]["another"] for key in m},
                "answered": report["answered"], "calls": report["calls_played"],
                "wall_s": round(time.perf_counter() - started, 1),
            }
            print(Path(folder).name, f"K={k}", json.dumps(rows[f"K={k}"]["place"]), rows[f"K={k}"]["answer"]["in_key"],
                  flush=True)
        result[Path(folder).name] = rows
    result["options"] = {"calls": args.calls, "beats": 8, "bpm": 100, "seed": args.seed, "model": str(args.model)}
    return result


def cost(args: argparse.Namespace) -> dict:
    import torch

    from liveduet.live.session import answer_sampler
    from liveduet.live.settings import LiveSettings
    from liveduet.model.runtime import ModelRuntime
    from liveduet.music.dataset import load_dataset

    runtime = ModelRuntime.load(args.model, threads=1)
    torch.set_num_threads(1)
    data = load_dataset(args.data[0])
    calls = [p[1:33] for p in data.pieces("val") if len(p) > 40][: args.calls]
    out: dict = {}
    for k in args.ks:
        settings = LiveSettings().with_overrides(answer={"candidates": k})
        sampler = answer_sampler(runtime, settings.answer, seed=args.seed)
        per_event, per_answer = [], []
        for call in calls:
            sampler.reset()
            for t in call:
                sampler.feed(int(t))
            total = 0.0
            for _ in range(16):
                t0 = time.perf_counter()
                sampler.sample_event()
                dt = (time.perf_counter() - t0) * 1e3
                per_event.append(dt)
                total += dt
            per_answer.append(total)
        per_event.sort()
        out[f"K={k}"] = {"event_ms_p50": round(per_event[len(per_event) // 2], 3),
                         "event_ms_p90": round(per_event[int(0.9 * len(per_event))], 3),
                         "event_ms_p99": round(per_event[int(0.99 * len(per_event))], 3),
                         "event_ms_max": round(per_event[-1], 3),
                         "answer_ms_median": round(statistics.median(per_answer), 2), "events": len(per_event)}
        print(f"K={k}", json.dumps(out[f"K={k}"]), flush=True)
    import os

    out["load_average"] = os.getloadavg()
    out["note"] = "16-event answers after 16-event calls from the data's validation pieces; one thread"
    return out


def live(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.path.insert(0, str(ROOT / "tests"))
    import jack_util
    import mido
    from bench_live import (
        JACK,
        PERIOD_MS,
        floor,
        latency_run,
        merge,
        play,
        pooled,
        port_ending,
        sender_choice,
        start,
        stop,
    )
    from jack_util import corpus_phrase

    if not jack_util.have_jackd():
        sys.exit("jackd not installed: apt-get install --no-install-recommends jackd2")
    server = None if jack_util.jack_running() else jack_util.start_jackd()
    tmp = Path(tempfile.mkdtemp(prefix="bench-critic-"))
    result: dict = {"jack_period_ms": round(PERIOD_MS, 3)}
    try:
        result["machine_floor"] = floor(20.0)
        ref = start([sys.executable, "-c", __import__("bench_live").THRU])
        result["reference_python_thru"] = merge([latency_run(port_ending(":ref-in"), port_ending(":ref-out"),
                                                             args.probes) for _ in range(args.rounds)])
        stop(ref)
        for k, sender in [(k, s) for k in args.ks for s in args.senders]:
            name = f"K={k}/{sender}"
            cfg = tmp / f"k{k}.toml"
            cfg.write_text(f"[answer]\nmin_beats = 12.0\nmax_beats = 12.0\ncandidates = {k}\n")
            stats = tmp / f"stats{k}-{sender}.jsonl"
            sender_args, sender_env = sender_choice(sender)
            daemon = start([sys.executable, "-m", "liveduet", "run", "--backend", "jack", "--virtual", "--in",
                            f"critic{k}-in", "--out", f"critic{k}-out", "--model", str(args.model), "--no-dashboard",
                            "--tempo", "120", "--config", str(cfg), "--stats", str(stats), "--seed", "1",
                            *sender_args], env=sender_env)
            into, back = port_ending(f":critic{k}-in"), port_ending(f":critic{k}-out")
            time.sleep(3)
            keyboard = mido.Backend(JACK).open_output(f"critic{k}-keyboard", virtual=True)
            jack_util.jack_connect(port_ending(f":critic{k}-keyboard"), into)
            runs = []
            for _ in range(args.rounds):
                play(keyboard, corpus_phrase())
                time.sleep(1.2)
                runs.append(latency_run(into, back, args.probes))
                time.sleep(5.8)
            for _ in range(2):
                play(keyboard, corpus_phrase())
                time.sleep(8.0)
            keyboard.close()
            stop(daemon)
            answers = [json.loads(line) for line in stats.read_text().splitlines() if line.strip()]
            row = {"thru_while_answering": merge(runs),
                   "answers": [{key: a.get(key) for key in ("first_late_ms", "late_ms_p50", "late_ms_p99",
                                                            "late_ms_max", "step_ms_p50", "step_ms_p99", "messages",
                                                            "late_ms")}
                               for a in answers]}
            p99s = [a["late_ms_p99"] or 0.0 for a in answers]
            row["scheduler_late_ms_p99_max"] = max(p99s) if p99s else None
            row["pooled"] = pooled(answers)
            ref_hi = result["reference_python_thru"].get("highest_ms")
            hi = row["thru_while_answering"].get("highest_ms")
            if hi is not None and ref_hi is not None:
                row["thru_highest_above_reference_ms"] = round(hi - ref_hi, 3)
            result[name] = row
            print(name, json.dumps({x: row.get(x) for x in ("pooled", "scheduler_late_ms_p99_max",
                                                                  "thru_highest_above_reference_ms")}), flush=True)
        import os

        result["load_average"] = os.getloadavg()
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("sweep", "cost", "live"))
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    ap.add_argument("--data", type=Path, nargs="+", default=[ROOT / "data" / "folk-eval", ROOT / "data" / "essen-eval"])
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--calls", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--probes", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--senders", nargs="+", default=["process", "process-rtmidi", "thread"],
                    help="live: sender labels side by side (bench_live.SENDERS)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if args.what == "live" and args.ks == [1, 2, 4, 8]:
        args.ks = [1, 4]
    result = {"sweep": sweep, "cost": cost, "live": live}[args.what](args)
    merge_result(args.out, args.what, result)


if __name__ == "__main__":
    main()
