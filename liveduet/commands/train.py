"""`liveduet train --data DIR --config FILE --out RUN_DIR`: train (or resume) a model."""

from __future__ import annotations

import argparse
import shlex
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
    p.add_argument("--threads", type=int, help="torch threads per process (default: torch's choice). On a "
                   "busy machine 1 can be several times faster than 2: OpenMP threads wait on each other")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def _command_line(args: argparse.Namespace) -> str:
    """The command as a user would retype it (recorded in run.json and the model card)."""
    parts = ["liveduet", "train", "--data", str(args.data)]
    if args.config is not None:
        parts += ["--config", str(args.config)]
    parts += ["--out", str(args.out)]
    if not args.resume:
        parts += ["--seed", str(args.seed)]
    if args.resume:
        parts.append("--resume")
    if args.epochs is not None:
        parts += ["--epochs", str(args.epochs)]
    if args.max_minutes is not None:
        parts += ["--max-minutes", f"{args.max_minutes:g}"]
    if args.threads is not None:
        parts += ["--threads", str(args.threads)]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    from liveduet.errors import ConfigError
    from liveduet.model.train import TrainRequest, train

    if args.max_minutes is not None and args.max_minutes <= 0:
        raise ConfigError(f"--max-minutes must be positive, got {args.max_minutes}")
    if args.threads is not None:
        if not 1 <= args.threads <= 1024:
            raise ConfigError(f"--threads must be 1..1024, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    command = _command_line(args)
    train(TrainRequest(data=args.data, out=args.out, config=args.config, seed=args.seed, resume=args.resume,
                       epochs=args.epochs, max_minutes=args.max_minutes, quiet=args.quiet, command=command))
    return 0
