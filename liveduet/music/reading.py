"""Reading a corpus on a process pool, in chunks, with progress: the machinery of `liveduet prepare`.

Workers only parse and tokenize (forked: they start fastest and share the task list); the parent
decides what becomes of each chunk. A worker that dies never hangs a run, and no more than three
chunks per worker are in flight, so results never pile up in memory.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as Bar

from liveduet.music.corpus import Task
from liveduet.music.tokens import TokenizerSettings


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent, which stops the pool


def run_chunks(chunks: list[tuple[int, list[Task]]], settings: TokenizerSettings, jobs: int,
               work: Callable[[list[Task], TokenizerSettings], list],
               done: Callable[[int, list], None], crashed: Callable[[Task], object]) -> None:
    """`done(index, work(chunk))` for every chunk, on `jobs` worker processes, at most 3 chunks per
    worker in flight (memory stays bounded). A worker that dies (a parser crashing the interpreter,
    the OOM killer) never hangs the run: a fresh pool takes the rest, the chunks in flight are
    retried one process per file, and the file that kills its process again gets `crashed(task)`.
    `work` must be a module-level function (it is sent to the workers)."""
    if jobs == 1 or sum(len(c) for _, c in chunks) < 4:
        for index, chunk in chunks:
            done(index, work(chunk, settings))
        return
    ctx = mp.get_context("fork")  # workers only parse and tokenize; fork starts them fastest
    queue = deque(chunks)
    suspects: list[tuple[int, list[Task]]] = []
    while queue:
        pool = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_ignore_sigint)
        try:
            pending: dict = {}
            broken = False
            while queue or pending:
                while queue and not broken and len(pending) < 3 * jobs:
                    item = queue.popleft()
                    pending[pool.submit(work, item[1], settings)] = item
                if not pending:
                    break
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(finished, key=lambda f: pending[f][0]):
                    item = pending.pop(future)
                    try:
                        out = future.result()
                    except BrokenProcessPool:
                        broken = True
                        suspects.append(item)
                        continue
                    done(item[0], out)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    for index, chunk in sorted(suspects):  # careful mode: one process per file, so a crash names it
        out = []
        for task in chunk:
            with ProcessPoolExecutor(1, mp_context=ctx, initializer=_ignore_sigint) as pool:
                try:
                    out += pool.submit(work, [task], settings).result()
                except BrokenProcessPool:
                    out.append(crashed(task))
        done(index, out)



class Progress:
    """Files read, rate and ETA: a rich bar on a terminal, a plain line every 10 s otherwise."""

    def __init__(self, console: Console, total: int, done: int, label: str = "reading") -> None:
        self.total, self.done, self.first, self.skipped, self.label = total, done, done, 0, label
        self.started = self.last = time.perf_counter()
        self.lines = 0
        self.plain = not console.quiet and not console.is_terminal
        self.bar = None
        if not console.quiet and console.is_terminal:
            skips = [TextColumn("{task.fields[skipped]} skipped")] if label == "reading" else []
            self.bar = Bar(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                TextColumn("ETA"), TimeRemainingColumn(), *skips,
                                console=console, transient=True)

    def __enter__(self) -> Progress:
        if self.bar is not None:
            self.bar.start()
            self.task = self.bar.add_task("read", total=self.total, completed=self.done, skipped=0)
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
        elif self.plain and self.lines and exc[0] is None:
            self._line()  # a long run ends with its total; a short one prints nothing

    def advance(self, n: int, skipped: int) -> None:
        self.done += n
        self.skipped += skipped
        if self.bar is not None:
            self.bar.update(self.task, advance=n, skipped=self.skipped)
        elif self.plain and time.perf_counter() - self.last >= 10:
            self._line()

    def _line(self) -> None:
        self.lines += 1
        self.last = now = time.perf_counter()
        rate = (self.done - self.first) / max(now - self.started, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        print(f"{self.label}: {self.done:,}/{self.total:,} files ({100 * self.done / max(self.total, 1):.0f}%), "
              f"{rate:,.0f} files/s, ETA {int(eta) // 60}m{int(eta) % 60:02d}s, {self.skipped:,} skipped",
              file=sys.stderr, flush=True)
