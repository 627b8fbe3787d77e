"""The phrase VAE measured through the product's own paths → benchmarks/results/vae.json (and, with
--card, the evaluation on models/vary's card).

  OMP_NUM_THREADS=1 python benchmarks/bench_vae.py [--model models/vary] [--data data/vae-train]
      [--live-data data/folk-eval] [--phrases 300] [--calls 50] [--realtime-calls 16] [--card]

Everything goes through the exported folder (model/vae_export.py's load_vae and TorchScript module)
and live/vary.py, the code `liveduet vary`, `liveduet morph` and vary mode run:

- reconstruction on validation phrases (8-beat windows of validation pieces, untransposed, which
  training never saw): teacher-forced token accuracy and the ELBO bound (one z sample, fixed seed)
  stepping the exported decoder; greedy-decoded accuracy from μ through the streaming decoder; KL per
  phrase; active units; the language model's NLL on the same phrase tokens (after <bos>).
- the variation curve: for σ in {0, 0.25, 0.5, 1, 2}, each phrase's variation against the phrase:
  token accuracy, edit similarity, pitch-class cosine, rhythm overlap, share of notes in the phrase's key.
- morph: pairs of phrases, 5 steps: distance (1 − edit similarity) to A rises, to B falls; in-key share;
  also the decoder alone at the path's nominal points (`morph_nominal`).
  Both with the keep-key rule (live/vary.py, the product's default; the targets) and without it
  (the model alone: `variation_curve_model_alone`, `morph_model_alone`, `targets_model_alone`).
- live: held-out calls played through the daemon's Session in vary mode (live/evaluate.py, simulated
  time): the answers against their calls; then `--realtime-calls` calls in real time on a monotonic clock
  (threads as in `liveduet run`): encode + first beat compute per answer inside the engine (its
  lateness there is the in-process scheduler's to a fake port, kept for reference). The lateness
  targets come from `--frames`: bench_studio.py --modes call,vary, `liveduet run` on JACK, what the
  synth port receives from the sender process in call and vary mode side by side.
  `--realtime-calls 0` skips it and keeps the live sections already in --out, marked as not re-measured;
  `--calls 0` does the same for the simulated player (no --live-data needed).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from liveduet.clock import MonotonicClock
from liveduet.io.fake import FakeOutput
from liveduet.live.evaluate import LiveEvalOptions, Performance, excerpts, run_live_eval
from liveduet.live.phrase import State
from liveduet.live.session import Session
from liveduet.live.settings import LiveSettings
from liveduet.live.vary import morph_events, vary_events
from liveduet.model.phrases import cut_phrases
from liveduet.model.runtime import ModelRuntime
from liveduet.model.vae_export import load_vae, update_vae_card
from liveduet.music import listening
from liveduet.music.dataset import load_dataset
from liveduet.music.listening import edit_similarity
from liveduet.music.tokens import BOS, EOS, TICKS, events_to_notes

SIGMAS = (0.0, 0.25, 0.5, 1.0, 2.0)


def val_phrases(data, vae, limit: int) -> list[np.ndarray]:
    listing = data.manifest.get("pieces") or []
    out: list[np.ndarray] = []
    for k, (a, b, s) in enumerate(zip(data.offsets[:-1], data.offsets[1:], data.split)):
        if s == 1 and (k >= len(listing) or listing[k].get("transpose", 0) == 0):
            out += cut_phrases(data.tokens[a:b], vae.vocab, vae.cfg)
    if len(out) > limit:
        out = [out[i] for i in np.linspace(0, len(out) - 1, limit).round().astype(int)]
    return out


def notes_of(events) -> list:
    return [(on / TICKS, off / TICKS, p, 80) for on, off, p in events_to_notes(events)]


def token_accuracy(ref: list[int], got: list[int]) -> float:
    return sum(x == y for x, y in zip(ref, got)) / max(len(ref), len(got), 1)


@torch.no_grad()
def reconstruction(vae, phrases: list[np.ndarray], lm) -> dict:
    """Through the exported module: teacher-forced accuracy and ELBO, greedy accuracy, KL, active units."""
    gen = torch.Generator().manual_seed(0)
    right = greedy_right = greedy_n = ntok = 0
    nll = kl = lm_nll = 0.0
    lm_n = 0
    mus = []
    for p in phrases:
        mu, logvar = vae.encode(p)
        mus.append(mu[0])
        kl += float(0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum())
        z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen)
        targets = [*p.tolist(), EOS]
        inputs = [BOS, *p.tolist()]
        h_mu, h_z = vae.script.start(mu), vae.script.start(z)
        pos = 0
        for tok, tgt in zip(inputs, targets):
            pos += int(vae.durations[tok])
            logits_mu, h_mu = vae.script(torch.tensor([tok]), mu, h_mu, torch.tensor([pos]))
            logits_z, h_z = vae.script(torch.tensor([tok]), z, h_z, torch.tensor([pos]))
            right += int(int(logits_mu[0].argmax()) == tgt)
            nll -= float(torch.log_softmax(logits_z[0], -1)[tgt])
            ntok += 1
        events = list(vae.vocab.decode(p))
        greedy = vae.vocab.encode(vary_events(vae, events, 0.0, seed=0, keep_key=False))  # the model alone
        greedy_right += sum(x == y for x, y in zip(p.tolist(), greedy))
        greedy_n += max(len(p), len(greedy))
        if lm is not None:
            logits, _ = lm.forward(torch.tensor([[BOS, *p.tolist()]]))  # [1, T + 1, V]
            logp = torch.log_softmax(logits[0, :-1].float(), -1)
            lm_nll -= float(logp[torch.arange(len(p)), torch.as_tensor(p)].sum())
            lm_n += len(p)
    var = torch.stack(mus).var(dim=0)
    return {"phrases": len(phrases), "tokens": ntok, "tf_acc": right / ntok, "greedy_acc": greedy_right / greedy_n,
            "elbo_nats_per_token": (nll + kl) / ntok, "kl_per_phrase": kl / len(phrases),
            "active_units": int((var > vae.cfg.active_threshold).sum()), "z_dim": vae.cfg.z_dim,
            "lm_nll_nats_per_token": lm_nll / lm_n if lm_n else None,
            "note": "ELBO counts each phrase's tokens and <eos>; the LM's NLL the phrase's tokens after <bos>"}


def similarity(vae, p: np.ndarray, varied: list) -> dict:
    events = list(vae.vocab.decode(p))
    ref, got = p.tolist(), vae.vocab.encode(varied)
    call, ans = notes_of(events), notes_of(varied)
    key = listening.key_scale(*listening.find_key(call))
    return {"token_acc": token_accuracy(ref, got), "edit_similarity": edit_similarity(ref, got),
            "pc_cosine": listening.pitch_class_cosine(call, ans), "rhythm_overlap": listening.rhythm_overlap(call, ans),
            "in_key": listening.in_key_share(ans, key) if ans else 1.0}


def variation_curve(vae, phrases: list[np.ndarray], keep_key: bool = True) -> list[dict]:
    rows = []
    for sigma in SIGMAS:
        sims = [similarity(vae, p, vary_events(vae, list(vae.vocab.decode(p)), sigma, seed=i, keep_key=keep_key))
                for i, p in enumerate(phrases)]
        rows.append({"sigma": sigma, **{k: round(statistics.fmean(s[k] for s in sims), 4) for k in sims[0]},
                     "in_key_0.9_share": round(statistics.fmean(s["in_key"] >= 0.9 for s in sims), 4)})
    return rows


def morph(vae, phrases: list[np.ndarray], pairs: int, steps: int = 5, keep_key: bool = True,
          nominal: bool = False) -> dict:
    half = len(phrases) // 2
    mono_a = mono_b = 0
    in_key: list[float] = []
    inner_in_key: list[float] = []
    ends_in_key: list[float] = []
    curve_a: list[list[float]] = []
    curve_b: list[list[float]] = []
    for i in range(min(pairs, half)):
        a, b = phrases[i], phrases[i + half]
        ea, eb = list(vae.vocab.decode(a)), list(vae.vocab.decode(b))
        seq = morph_events(vae, ea, eb, steps, keep_key=keep_key, nominal=nominal)
        da = [1 - edit_similarity(a.tolist(), vae.vocab.encode(s)) for s in seq]
        db = [1 - edit_similarity(b.tolist(), vae.vocab.encode(s)) for s in seq]
        curve_a.append(da)
        curve_b.append(db)
        mono_a += all(x <= y + 1e-9 for x, y in zip(da, da[1:]))
        mono_b += all(x >= y - 1e-9 for x, y in zip(db, db[1:]))
        keys = [listening.key_scale(*listening.find_key(notes_of(e))) for e in (ea, eb)]
        # A or B itself may have under 90 % of its notes in its own key (modal tunes, accidentals): a
        # step that plays it back cannot do better.
        ends_in_key += [listening.in_key_share(notes_of(e), kk) for e, kk in zip((ea, eb), keys)]
        for k, s in enumerate(seq):
            ans = notes_of(s)
            t = k / (steps - 1)
            key = keys[0] if t < 0.5 else keys[1]  # the nearer end's key
            in_key.append(max(listening.in_key_share(ans, kk) for kk in (key, *keys)) if ans else 1.0)
            if 0 < k < steps - 1:
                inner_in_key.append(in_key[-1])
    n = min(pairs, half)
    return {"pairs": n, "steps": steps, "monotone_a": mono_a / n, "monotone_b": mono_b / n,
            "in_key_mean": statistics.fmean(in_key), "in_key_min": min(in_key),
            "steps_in_key_0.9_share": statistics.fmean(x >= 0.9 for x in in_key),
            "inner_steps_in_key_min": min(inner_in_key, default=1.0),
            "a_b_themselves_in_key_min": min(ends_in_key),
            "mean_distance_to_a": [round(statistics.fmean(c[k] for c in curve_a), 4) for k in range(steps)],
            "mean_distance_to_b": [round(statistics.fmean(c[k] for c in curve_b), 4) for k in range(steps)],
            "note": "distance = 1 - token edit similarity; monotone allows ties; a step is in key when its notes "
                    "lie in A's or B's key"}


def live_simulated(lm, data, vae_dir: Path, sigma: float, calls: int) -> dict:
    base = LiveSettings().with_overrides(practice={"mode": "vary"},
                                         answer={"variation": sigma, "vary_model": str(vae_dir)})
    report = run_live_eval(lm, data, base, LiveEvalOptions(calls=calls, beats=8, bpm=100.0))
    rows = [r for r in report["calls"] if r["answered"]]
    return {"sigma": sigma, "calls": report["calls_played"], "answered": report["answered"],
            "false_ends": report["false_ends"],
            "answer_vs_call": {k: round(statistics.fmean(r["answer"][k] for r in rows), 4)
                               for k in listening.MEASURES} if rows else None}


def live_realtime(lm, data, vae_dir: Path, sigma: float, calls: int, bpm: float = 120.0, mode: str = "vary") -> dict:
    """Calls played in real time into a threaded Session (as `liveduet run`), answers to a fake port."""
    settings = LiveSettings().with_overrides(practice={"mode": mode}, tempo={"bpm": bpm},
                                             answer={"variation": sigma, "vary_model": str(vae_dir)})
    clock = MonotonicClock()
    out = FakeOutput(clock, name="bench synth")
    from liveduet.live.session import answer_sampler

    session = Session(settings, lm.vocab, answer_sampler(lm, settings.answer, seed=0), clock, seed=0)
    session.set_output(out)
    session.start(threads=True)
    rng = random.Random(0)
    period = 60.0 / bpm
    plan_ms: list[float] = []
    encode_ms: list[float] = []
    try:
        for i, ex in enumerate(excerpts(data, 8, calls)):
            perf = Performance.draw(rng)
            t0 = clock.now() + 1.0
            for beat, msg in perf.messages(ex.call, rng):
                delay = t0 + beat * period - clock.now()
                if delay > 0:
                    time.sleep(delay)
                session.listener.callback(msg)
            deadline = clock.now() + 30 * period
            while clock.now() < deadline and not (session.engine.answers >= i + 1 and session.engine.state is
                                                   State.LISTENING and not session.scheduler.pending()):
                time.sleep(0.02)
            v = session.engine.varier.current
            if v is not None and v.first_beat_ms is not None:
                plan_ms.append(v.first_beat_ms)
                encode_ms.append(v.encode_ms)
        summary = session.summary()
    finally:
        session.stop()
    plan_ms.sort()

    def pct(xs: list[float], q: float) -> float | None:
        return round(xs[min(len(xs) - 1, math.ceil(q / 100 * len(xs)) - 1)], 3) if xs else None

    return {"mode": mode, "calls": summary["answers"], "bpm": bpm, "plan_ms_p50": pct(plan_ms, 50),
            "plan_ms_p99": pct(plan_ms, 99),
            "plan_ms_max": pct(plan_ms, 100), "encode_ms_p50": pct(sorted(encode_ms), 50),
            "late_ms_p99": summary["answer_late_ms_p99"], "late_ms_max": summary["answer_late_ms_max"],
            "model_step_ms_p50": summary["model_step_ms_p50"], "model_step_ms_p99": summary["model_step_ms_p99"],
            "answers": summary["answers"]}


def targets(result: dict, suffix: str) -> dict[str, bool]:
    """The issue's targets on the curve and morph measured with (suffix "") or without the keep-key rule."""
    curve = result["variation_curve" + suffix]
    m = result["morph" + suffix]
    frames = result.get("lateness_on_jack") or {}
    to_a, to_b = m["mean_distance_to_a"], m["mean_distance_to_b"]
    return {
        "sigma 0 token accuracy >= 0.9": curve[0]["token_acc"] >= 0.9,
        "similarity falls with sigma (edit, pc, rhythm)": all(
            all(a[k] >= b[k] - 0.005 for a, b in zip(curve, curve[1:]))
            for k in ("edit_similarity", "pc_cosine", "rhythm_overlap")),
        "sigma 2 in key >= 0.9": curve[-1]["in_key"] >= 0.9,
        "morph: mean distance to A rises, to B falls, step by step": (
            all(x <= y for x, y in zip(to_a, to_a[1:])) and all(x >= y for x, y in zip(to_b, to_b[1:]))),
        "morph monotone in every pair": m["monotone_a"] == 1.0 and m["monotone_b"] == 1.0,
        "morph: no step out of key (>= 90 % of notes in A's or B's key)": m["in_key_min"] >= 0.9,
        "live encode + first beat p99 <= 20 ms": (result.get("live", {}).get("plan_ms_p99") or 99) <= 20,
        "live lateness p99 <= 1 ms": (frames.get("vary") or {}).get("p99_ms", 99) <= 1.0,
        "live lateness p99 no worse than call mode's + 0.2 ms": (frames.get("vary") or {}).get("p99_ms", 99)
        <= (frames.get("call") or {}).get("p99_ms", 0) + 0.2,
        "active units > 0": result["reconstruction"]["active_units"] > 0,
    }


def jack_lateness(path: Path) -> dict | None:
    """Answer lateness through `liveduet run` on JACK (bench_studio.py --modes call,vary): what a synth
    receives, pooled over every answer message of the sender process, call and vary mode side by side."""
    if not path.exists():
        return None
    views = json.loads(path.read_text())["views"]
    out = {mode: views[key]["pooled"] for mode in ("call", "vary") if (key := f"none/process/{mode}") in views}
    return {**out, "source": str(path)} if out else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("models/vary"))
    ap.add_argument("--lm", type=Path, default=Path("models/default"))
    ap.add_argument("--data", type=Path, default=Path("data/vae-train"), help="the VAE's data (its validation split)")
    ap.add_argument("--live-data", type=Path, default=Path("data/folk-eval"), help="held-out calls for the daemon")
    ap.add_argument("--phrases", type=int, default=300)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--realtime-calls", type=int, default=16)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/vae.json"))
    ap.add_argument("--frames", type=Path, default=Path("benchmarks/results/vary-frames.json"),
                    help="bench_studio.py --modes call,vary output: the lateness targets come from it")
    ap.add_argument("--card", action="store_true", help="also write the figures into the model's card")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False  # batch-1 steps, as the daemon runs them
    started = time.perf_counter()
    vae = load_vae(args.model)
    lm = ModelRuntime.load(args.lm)
    phrases = val_phrases(load_dataset(args.data), vae, args.phrases)
    print(f"{len(phrases)} validation phrases", file=sys.stderr)
    result: dict = {"model": str(args.model), "data": str(args.data), "live_data": str(args.live_data)}
    result["reconstruction"] = reconstruction(vae, phrases, lm)
    print(json.dumps(result["reconstruction"]), file=sys.stderr)
    for suffix, keep_key in (("", True), ("_model_alone", False)):
        result["variation_curve" + suffix] = variation_curve(vae, phrases[: min(200, len(phrases))], keep_key)
        print(json.dumps(result["variation_curve" + suffix]), file=sys.stderr)
        result["morph" + suffix] = morph(vae, phrases, pairs=50, keep_key=keep_key)
        print(json.dumps(result["morph" + suffix]), file=sys.stderr)
    # The decoder alone at the nominal points of the path (no choice among nearby points): what the
    # monotone-path choice adds.
    result["morph_nominal"] = morph(vae, phrases, pairs=50, nominal=True)
    print(json.dumps(result["morph_nominal"]), file=sys.stderr)
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    live_data = load_dataset(args.live_data) if args.calls or args.realtime_calls else None
    if args.calls:
        result["live_simulated"] = live_simulated(lm, live_data, args.model, 0.5, args.calls)
        print(json.dumps(result["live_simulated"]), file=sys.stderr)
    elif previous.get("live_simulated"):  # `--calls 0`: the daemon's simulated player is not run here
        result["live_simulated"] = {**previous["live_simulated"], "note": previous["live_simulated"].get("note") or (
            f"kept from the previous {args.out} (model {previous.get('model')}): not re-measured with this model")}
    if args.realtime_calls:
        result["live"] = live_realtime(lm, live_data, args.model, 0.5, args.realtime_calls)
        print(json.dumps(result["live"]), file=sys.stderr)
        # The same calls answered by the language model, same harness and machine: the reference.
        result["live_call_mode"] = live_realtime(lm, live_data, args.model, 0.5, args.realtime_calls, mode="call")
        print(json.dumps(result["live_call_mode"]), file=sys.stderr)
    else:
        for key in ("live", "live_call_mode"):
            if previous.get(key):
                result[key] = previous[key]
        if "live" in result:
            result["live_note"] = previous.get("live_note") or (
                f"live sections kept from the previous {args.out} (model {previous.get('model')}, "
                f"torch {previous.get('torch')}): not re-measured with this model")
    result["lateness_on_jack"] = jack_lateness(args.frames)
    result["targets"] = targets(result, "")
    result["targets_model_alone"] = targets(result, "_model_alone")
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["torch"] = torch.__version__
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.card:
        rec = result["reconstruction"]
        update_vae_card(args.model, evaluation={
            "lm_same_phrases": {"nll": rec["lm_nll_nats_per_token"], "vae_elbo": rec["elbo_nats_per_token"]},
            "reconstruction_exported": rec, "variation_curve": result["variation_curve"], "morph": result["morph"],
            "variation_curve_model_alone": result["variation_curve_model_alone"],
            "morph_model_alone": result["morph_model_alone"], "morph_nominal": result["morph_nominal"],
            "live": result.get("live"),
            "live_note": result.get("live_note"), "live_simulated": result.get("live_simulated"),
            "lateness_on_jack": result["lateness_on_jack"],
            "targets": result["targets"], "targets_model_alone": result["targets_model_alone"]})
    print(json.dumps(result["targets"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
