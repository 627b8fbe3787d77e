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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
