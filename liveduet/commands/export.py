"""`liveduet export RUN_DIR --out models/NAME`: a trained run → a self-describing model folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a trained run as a TorchScript model folder with its vocabulary and card",
        description="Script the best checkpoint of RUN_DIR for real-time stepping, check it against the "
        "trained model, and write model.ts, vocab.json, config.json, card.json and card.md to --out.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="folder written by `liveduet train`")
    p.add_argument("--out", required=True, type=Path, help="model folder to write, e.g. models/mine")
    p.add_argument("--force", action="store_true", help="replace an existing model folder")
    p.add_argument("--name", help="model name in the card (default: the folder's name)")
    p.add_argument("--evaluation", type=Path, metavar="JSON",
                   help="put this `liveduet evaluate --json` output in the card")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from liveduet.errors import LiveduetError
    from liveduet.model.export import export_run

    evaluation = None
    if args.evaluation is not None:
        try:
            evaluation = json.loads(args.evaluation.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise LiveduetError(f"cannot read evaluation {args.evaluation}: {err}") from err
    card = export_run(args.run_dir, args.out, force=args.force, name=args.name, evaluation=evaluation)
    if "val_nll" not in card:  # another family (a VAE, a C-RNN-GAN): its card has its own figures
        print(f"exported a {card.get('family', 'model')} model to {args.out}")
        return 0
    nll = card["val_nll"]
    print(f"exported {card['arch']} ({card['params']:,} parameters, {card['size_bytes'] / 1e6:.1f} MB, "
          f"val NLL {'—' if nll is None else f'{nll:.4f}'}) to {args.out}")
    return 0
