"""The `liveduet` command line: one subcommand module per job, each with `register(subparsers)`.

A subcommand module lives in `liveduet/commands/` and exposes::

    def register(sub: argparse._SubParsersAction) -> None   # adds its parser, sets func=run
    def run(args: argparse.Namespace) -> int                # returns the exit code

User mistakes raise `LiveduetError` subclasses; they become one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from liveduet import __version__
from liveduet.errors import LiveduetError

# In the order `--help` lists them.
COMMANDS = [
    "run",
    "ports",
    "prepare",
    "train",
    "export",
    "generate",
    "vary",
    "morph",
    "evaluate",
    "recover",
    "render",
    "report",
    "studio",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="liveduet",
        description="A real-time MIDI co-performer: play a phrase on your keyboard, "
        "liveduet answers it in your tempo and key.",
    )
    parser.add_argument("--version", action="version", version=f"liveduet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"liveduet.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"liveduet.commands.{name}":
                raise
            continue  # not built yet
        module.register(sub)
    return parser


# Options whose values may start with "-" (argparse would take "-5..6" for an option).
NEGATIVE_VALUE_OPTIONS = ("--transpose",)


def _join_negative_values(argv: list[str]) -> list[str]:
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in NEGATIVE_VALUE_OPTIONS and arg.startswith("-"):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    # torch.jit warns on every call in torch 2.13; users cannot act on it.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
    parser = build_parser()
    args = parser.parse_args(_join_negative_values(sys.argv[1:] if argv is None else argv))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except LiveduetError as err:
        print(f"liveduet {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"liveduet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
