"""`liveduet train --data DIR --config FILE --out RUN_DIR`: train (or resume) a model."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on a prepared dataset",
        description="Train the model a config describes on a `liveduet prepare` folder. Checkpoints go to "
        "RUN_DIR each epoch and on Ctrl-C; --resume continues exactly where it stopped. Runs under "
        "`torchrun --nproc_per_node N` with DistributedDataParallel (gloo on CPU).",
    )
    p.add_argument("--data", required=True, type=Path, help="prepared data folder")
    p.add_argument("--config", type=Path, help="training config, e.g. configs/default.toml (new runs)")
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, history, loss curve)")
    p.add_argument("--seed", type=int, default=0, help="seed for initial weights, data order, dropout (default 0)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--epochs", type=int, help="override the config's number of epochs")
    p.add_argument("--max-minutes", type=float, help="stop (evaluate, checkpoint) after this many minutes")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from liveduet.errors import ConfigError
    from liveduet.model.train import TrainRequest, train

    if args.max_minutes is not None and args.max_minutes <= 0:
        raise ConfigError(f"--max-minutes must be positive, got {args.max_minutes}")
    command = "liveduet " + shlex.join(sys.argv[1:]) if sys.argv and "liveduet" in sys.argv[0] else ""
    train(TrainRequest(data=args.data, out=args.out, config=args.config, seed=args.seed, resume=args.resume,
                       epochs=args.epochs, max_minutes=args.max_minutes, quiet=args.quiet, command=command))
    return 0
