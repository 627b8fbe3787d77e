"""What a training run shows and leaves behind besides checkpoints: the progress bar (or plain lines
in a log), history.json and loss.png, and Ctrl-C handled between steps."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Progress:
    """What the loop reports: a rich bar on a terminal; otherwise (a log file, CI) a plain line
    every `every` seconds, since a bar redrawn in a file shows nothing until the end."""

    total: int
    quiet: bool
    every: float = 60.0
    _bar: object = None
    _task: object = None
    _last: float = 0.0

    def __enter__(self) -> Progress:
        if not self.quiet:
            from rich.console import Console

            console = Console(stderr=True)
            if console.is_terminal:
                from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
                from rich.progress import Progress as RichProgress

                self._bar = RichProgress(
                    TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]}  val {task.fields[val]}  {task.fields[tps]} tok/s"),
                    TimeElapsedColumn(), console=console,
                )
                self._bar.__enter__()
                self._task = self._bar.add_task("train", total=self.total, epoch="-", loss="-", val="-", tps="-")
        self._last = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def update(self, done: int, **fields: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, **fields)
        elif not self.quiet and "loss" in fields and time.perf_counter() - self._last >= self.every:
            self._last = time.perf_counter()
            print(f"step {done}/{self.total}  epoch {fields.get('epoch', '-')}  loss {fields['loss']}  "
                  f"{fields.get('tps', '-')} tok/s", file=sys.stderr, flush=True)

    def log(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text)
        elif not self.quiet:
            print(text, file=sys.stderr, flush=True)


class InterruptAtStepBoundary:
    """The first Ctrl-C (or SIGTERM, which torchrun sends its workers) only sets a flag, checked
    between steps, so the checkpoint never holds weights updated by a step it does not count.
    A second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> InterruptAtStepBoundary:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)  # type: ignore[arg-type]


LABELS = {"train_loss": "train loss", "val_nll": "validation NLL"}


def write_history(out: Path, history: list[dict], keys: tuple[str, ...] = ("train_loss", "val_nll")) -> None:
    """history.json, and loss.png with the family's curves on one figure (when matplotlib is there)."""
    (out / "history.json").write_text(json.dumps(history, indent=1) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    x = [h["epoch"] for h in history]
    for key in keys:
        ax.plot(x, [h.get(key, float("nan")) for h in history], marker="o", label=LABELS.get(key, key))
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats / token" if "val_nll" in keys else "loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss.png")
    plt.close(fig)
