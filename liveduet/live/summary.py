"""What a session says on the terminal besides the dashboard: stamped log lines and the summary table."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SUMMARY_LABELS = {
    "duration_s": "duration (s)", "calls": "calls", "answers": "answers", "notes_heard": "notes heard",
    "notes_played": "notes played", "model_step_ms_p50": "model step p50 (ms)",
    "model_step_ms_p99": "model step p99 (ms)", "answer_late_ms_p99": "answer lateness p99 (ms)",
    "answer_late_ms_max": "answer lateness max (ms)", "events_dropped": "input events dropped",
    "events_skipped": "events skipped by engine",
}


def print_summary(summary: dict, record: Path | None, plain: bool, console: Any = None) -> None:
    """The figures a player wants at the end, as a table: on stderr under the dashboard, else stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="liveduet session", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, label in SUMMARY_LABELS.items():
        table.add_row(label, "-" if summary.get(key) is None else str(summary[key]))
    if record:
        table.add_row("recording", str(record))
    (console or Console(stderr=not plain, highlight=False)).print(table)


def logger(plain: bool) -> Callable[[str], None]:
    """Log lines stamped with the seconds since start: stdout without the dashboard, else stderr
    (which the dashboard shows in its log panel)."""
    start = time.monotonic()

    def say(line: str) -> None:
        print(f"[{time.monotonic() - start:7.2f}] {line}", file=sys.stderr if not plain else sys.stdout, flush=True)

    return say
