"""`liveduet evaluate --model M --data DIR`: the model against unigram and Markov baselines, and the
musical metrics of its samples against real music."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from liveduet.model.evaluate import EvalOptions, evaluate_paths
from liveduet.music.metrics import SCALAR_METRICS

METRIC_LABELS = {
    "events": "events per continuation",
    "pitch_class_entropy": "pitch-class entropy (bits)",
    "in_scale_ratio": "in-scale ratio",
    "pitch_range": "pitch range (semitones)",
    "mean_polyphony": "notes per sounding event",
    "duration_entropy": "duration entropy (bits)",
    "longest_run": "longest run of one pitch set",
    "repeated_4gram_share": "repeated event 4-grams",
}


def register(sub: argparse._SubParsersAction) -> None:
    d = EvalOptions()
    p = sub.add_parser(
        "evaluate",
        help="score a model against unigram and Markov baselines; compare its samples with real music",
        description="Next-token NLL, perplexity and top-1 accuracy on the data's validation pieces, for the "
        "model, an add-k unigram and a variable-order Markov model (interpolated Kneser-Ney) fitted on the "
        "training pieces; then continuations of validation pieces by the model and the Markov model, with "
        "musical metrics next to those of the real continuations.",
    )
    p.add_argument("--model", type=Path, default=None,
                   help="exported model folder (default: $LIVEDUET_MODEL, else models/default)")
    p.add_argument("--data", type=Path, default=Path("data/default"),
                   help="prepared data folder (default data/default)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--samples", type=int, default=d.samples, help=f"continuations per generator (default {d.samples})")
    p.add_argument("--length", type=int, default=d.length, help=f"tokens per continuation (default {d.length})")
    p.add_argument("--prime", type=int, default=d.prime, help=f"prompt tokens from each piece, odd (default {d.prime})")
    p.add_argument("--max-tokens", type=int, default=d.max_tokens,
                   help=f"validation tokens scored, at most (default {d.max_tokens:,})")
    p.add_argument("--order", type=int, default=d.order, help=f"Markov context length (default {d.order})")
    p.add_argument("--markov-tokens", type=int, default=d.markov_tokens,
                   help=f"train tokens the Markov model is fitted on, at most (default {d.markov_tokens:,})")
    p.add_argument("--temperature", type=float, default=d.temperature, help="sampling temperature (default 1.0)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"sampling seed (default {d.seed})")
    p.add_argument("--threads", type=int, default=d.threads,
                   help=f"torch threads for batched scoring (default {d.threads}; more helps only on idle cores)")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    live = p.add_argument_group(
        "live evaluation (--live)",
        "Play the validation pieces' first beats as calls through the daemon's own engine in simulated time "
        "(one session, a simulated player, no ports) and compare each answer with its call, next to the "
        "composer's continuation and another piece's.")
    live.add_argument("--live", action="store_true", help="run the live evaluation instead")
    live.add_argument("--calls", type=int, default=50, help="calls to play (default 50)")
    live.add_argument("--beats", type=int, default=8, help="beats per call (default 8)")
    live.add_argument("--tempo", type=float, default=100.0, help="the player's tempo in bpm (default 100)")
    live.add_argument("--estimate-tempo", action="store_true", help="liveduet estimates the tempo (as `run` "
                      "without --tempo) instead of being told it")
    live.add_argument("--config", type=Path, help="live settings TOML, as for `run` (default: configs' defaults)")
    live.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                      help="override one live setting, e.g. --set answer.memory=session (repeatable)")
    live.add_argument("--out", type=Path, help="also write the JSON report here")
    live.add_argument("--card", action="store_true", help="put the result on the model's card (card.json/.md)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.live:
        return run_live(args)
    if args.model is not None and _family(args.model) == "crnngan":
        return run_gan(args)
    options = EvalOptions(max_tokens=args.max_tokens, samples=args.samples, length=args.length, prime=args.prime,
                          order=args.order, markov_tokens=args.markov_tokens, temperature=args.temperature,
                          seed=args.seed, threads=args.threads)
    from liveduet.model.runtime import default_model_dir

    model = args.model if args.model is not None else default_model_dir()
    err = Console(stderr=True, quiet=args.quiet)
    with err.status("evaluating") as status:
        report = evaluate_paths(model, args.data, options, log=lambda text: status.update(text))
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        render(report, Console())
    return 0


def _family(model: Path) -> str:
    """The family a model folder's card names ("lm" when unreadable: its loader names the problem)."""
    try:
        return str(json.loads((model / "card.json").read_text()).get("family") or "lm")
    except (OSError, ValueError, AttributeError):
        return "lm"


def run_gan(args: argparse.Namespace) -> int:
    """A C-RNN-GAN folder: its samples, the language model's and real music side by side
    (liveduet/model/crnngan_eval.py); --card puts the report on the GAN's card."""
    from liveduet.model.crnngan_eval import evaluate_gan, update_gan_card
    from liveduet.music.dataset import load_dataset

    err = Console(stderr=True, quiet=args.quiet)
    with err.status("evaluating the C-RNN-GAN") as status:
        report = evaluate_gan(args.model, load_dataset(args.data), samples=args.samples, seed=args.seed,
                              log=lambda text: status.update(text))
    if args.card:
        update_gan_card(args.model, report)
    print(json.dumps(report, indent=1))
    return 0


def render(report: dict, console: Console) -> None:
    """The report as two tables: prediction scores, then musical metrics."""
    val = report["val"]
    scores = Table(title=f"Next-token prediction on {val['tokens']:,} validation tokens "
                         f"({val['pieces']} of {val['pieces_total']} pieces)")
    for name, justify in [("", "left"), ("NLL/token (nats)", "right"), ("perplexity", "right"), ("top-1", "right")]:
        scores.add_column(name, justify=justify)  # type: ignore[arg-type]
    markov = report["markov"]
    for label, row in [("model", report["model"]), (f"Markov (order {markov['order']}, KN)", markov),
                       (f"unigram (add-{report['unigram']['k']})", report["unigram"])]:
        scores.add_row(label, f"{row['nll']:.3f}", f"{row['perplexity']:.1f}", f"{row['accuracy']:.1%}")
    console.print(scores)

    m = report["metrics"]
    opts = report["options"]
    table = Table(title=f"Continuations: {m['model']['sequences']} × up to {opts['length']} tokens after "
                        f"{opts['prime']} prompt tokens, T={opts['temperature']}")
    table.add_column("")
    for name in ("real", "model", "Markov"):
        table.add_column(name, justify="right")
    for key in SCALAR_METRICS:
        values = [m[col][key] for col in ("data", "model", "markov")]
        fmt = "{:.1%}" if key in ("in_scale_ratio", "repeated_4gram_share") else "{:.2f}"
        table.add_row(METRIC_LABELS[key], *(fmt.format(v) for v in values))
    console.print(table)
    secs = report["seconds"]
    console.print(f"[dim]Markov fit {secs['markov_fit']:.1f} s on {markov['train_tokens']:,} of "
                  f"{report['train_tokens']:,} train tokens; "
                  f"model scoring {secs['model_score']:.1f} s; sampling {secs['sampling']:.1f} s[/dim]")


def parse_overrides(items: list[str]) -> dict[str, dict]:
    """["answer.memory=call", "answer.temperature=0.8"] → {"answer": {"memory": "call", "temperature": 0.8}};
    values are read as TOML (numbers, true/false), else taken as strings."""
    import tomllib

    from liveduet.errors import ConfigError

    out: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. answer.memory=call")
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value
        out.setdefault(section, {})[name] = parsed
    return out


def run_live(args: argparse.Namespace) -> int:
    from liveduet.errors import LiveduetError
    from liveduet.live.evaluate import LiveEvalOptions, run_live_eval, targets_met
    from liveduet.live.settings import load_live_settings
    from liveduet.model.runtime import ModelRuntime, default_model_dir
    from liveduet.music.dataset import load_dataset

    if args.calls < 2 or args.beats < 2 or not 20 <= args.tempo <= 300:
        raise LiveduetError("--calls and --beats must be at least 2, --tempo within 20..300")
    if args.out is not None:
        from liveduet.fsutil import check_output_file

        check_output_file(args.out, "the report")  # before minutes of work, not after
    settings = load_live_settings(args.config)
    if args.set:
        settings = settings.with_overrides(**parse_overrides(args.set))
    runtime = ModelRuntime.load(args.model if args.model is not None else default_model_dir())
    data = load_dataset(args.data)
    runtime.vocab.check_compatible(data.vocab, f"the model in {runtime.path}")
    options = LiveEvalOptions(calls=args.calls, beats=args.beats, bpm=args.tempo, fixed_tempo=not args.estimate_tempo,
                              seed=args.seed)
    err = Console(stderr=True, quiet=args.quiet)
    with err.status("live evaluation") as status:
        report = run_live_eval(runtime, data, settings, options, log=lambda text: status.update(text))
    report["targets"] = targets_met(report)
    report["data"] = str(args.data)
    if args.card:
        from liveduet.model.card import update_card

        live = dict(runtime.card.get("live_evaluation") or {})
        runs = dict(live.get("runs") or {})
        runs[f"{args.data.name}, {args.beats}-beat calls"] = {k: v for k, v in report.items() if k != "calls"}
        update_card(runtime.path, live_evaluation={**live, "runs": runs})
    text = json.dumps(report, indent=1)
    if args.out:
        from liveduet.fsutil import write_atomic

        write_atomic(args.out, text.encode() + b"\n")
    if args.json:
        print(text)
    else:
        render_live(report, Console())
    return 0


LIVE_LABELS = {"pc_cosine": "pitch-class cosine", "rhythm_overlap": "rhythm overlap", "register_gap":
               "register gap (semitones)", "in_key": "in the call's key", "texture_gap": "texture gap (notes/onset)"}


def render_live(report: dict, console: Console) -> None:
    """The live evaluation as a table: answer, composer, another piece, and the answer's place."""
    o = report["options"]
    a = report["settings"]["answer"]
    table = Table(title=f"{report['calls_played']} calls of {o['beats']} beats at {o['bpm']:g} bpm, one session "
                        f"(memory {a['memory']}, T={a['temperature']}, top-p {a['top_p']})")
    for name in ("call → continuation", "liveduet", "composer", "another piece", "place"):
        table.add_column(name, justify="left" if name.startswith("call") else "right")
    for key, row in report["measures"].items():
        cells = [("-" if row[w] is None else f"{row[w]:.3f}") for w in ("answer", "composer", "another")]
        table.add_row(LIVE_LABELS[key], *cells, "-" if row["place"] is None else f"{row['place']:.2f}")
    console.print(table)
    e = report["expression"]
    console.print(f"answered {report['answered']}/{report['calls_played']}, false ends {report['false_ends']}, "
                  f"entry {report['entry_beats_median']} beats after the call's last release (median); "
                  f"velocity contour r = {e['velocity_corr_mean']}, swing within 0.05: {e['swing_within_0.05']} "
                  f"({e['swing_calls']} swung calls), articulation within 10 %: {e['articulation_within_10pct']}")
    misses = [k for k, ok in report.get("targets", {}).items() if not ok]
    console.print("targets: " + ("all met" if not misses else "missed " + "; ".join(misses)))
    console.print(f"[dim]{report['simulated_s']:.0f} s of session in {report['wall_s']:.1f} s "
                  f"({report['speed']}x real time)[/dim]")
