"""`liveduet prepare SOURCE... --out DIR`: MIDI files and music21's corpus → a token dataset."""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from liveduet import __version__
from liveduet.errors import CorpusError, LiveduetError, OutputPathError
from liveduet.fsutil import check_output_folder, os_error_line
from liveduet.music.corpus import Piece, Result, Task, expand_sources, read_task
from liveduet.music.dataset import is_validation, write_dataset
from liveduet.music.tokens import BOS, EOS, TokenizerSettings, Vocabulary, build_vocabulary, transpose_events


def parse_range(text: str) -> list[int]:
    """'-5..6' → [-5, ..., 6]; '0' → [0]; '-2,0,2' → [-2, 0, 2]."""
    try:
        if ".." in text:
            lo, hi = (int(x) for x in text.split(".."))
            if lo > hi:
                raise ValueError
            values = list(range(lo, hi + 1))
        else:
            values = sorted({int(x) for x in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad transposition range {text!r} (use e.g. -5..6 or -2,0,2)") from None
    if any(abs(v) > 12 for v in values):
        raise argparse.ArgumentTypeError(f"transpositions must lie in -12..12, got {text!r}")
    return values


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="turn MIDI files and music21's corpus into a token dataset",
        description="Read MIDI files/folders (.mid .midi .kar .rmi, recursive) and music21 corpus collections "
        "(music21:bach, music21:essenFolksong, music21:joplin, ...), tokenize them, build the vocabulary, "
        "and write a dataset folder. Broken files are skipped with a reason.",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="MIDI file, folder, or music21:NAME")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--transpose", type=parse_range, default=[0], metavar="RANGE",
                   help="transposition augmentation in semitones, e.g. -5..6 (default: 0, none)")
    p.add_argument("--min-count", type=int, default=3, help="keep chords seen at least this often (default 3)")
    p.add_argument("--max-chords", type=int, default=2000,
                   help="keep at most this many chords, the most frequent (default 2000; 0: no cap)")
    p.add_argument("--val-percent", type=float, default=5.0, help="pieces held out for validation (default 5)")
    p.add_argument("--vocab", type=Path, help="use this vocab.json instead of building one (e.g. a model's)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True, quiet=args.quiet)
    check_output_folder(args.out, "the dataset")
    if args.out.exists() and any(args.out.iterdir()) and not args.force:
        raise LiveduetError(f"{args.out} exists and is not empty (use --force to replace it)")
    if args.max_chords < 0:
        raise LiveduetError(f"--max-chords must be 0 (no cap) or more, got {args.max_chords}")
    if args.min_count < 1:
        raise LiveduetError(f"--min-count must be at least 1, got {args.min_count}")
    if not 0 <= args.val_percent < 100:
        raise LiveduetError(f"--val-percent must be in 0..100, got {args.val_percent}")
    if args.jobs < 1:
        raise LiveduetError(f"--jobs must be at least 1, got {args.jobs}")
    base_vocab = Vocabulary.load(args.vocab) if args.vocab else None
    settings = base_vocab.settings if base_vocab else TokenizerSettings()
    started = time.perf_counter()
    tasks = expand_sources(args.sources)
    if not tasks:
        raise CorpusError("the sources hold no MIDI or music files")

    results = read_all(tasks, settings, args.jobs, console)
    pieces: list[Piece] = [p for r in results for p in r.pieces]
    skipped = [{"path": r.task.path, "reason": r.skipped} for r in results if r.skipped]
    if not pieces:
        raise CorpusError(f"no tokens: all {len(tasks)} files were skipped (first reason: "
                          f"{skipped[0]['reason'] if skipped else 'none'})")

    # Augment, then build the vocabulary from everything it will encode.
    variants: list[tuple[Piece, int, list]] = []
    for piece in pieces:
        for shift in args.transpose:
            events = transpose_events(piece.events, shift, settings)
            if events is not None:
                variants.append((piece, shift, events))
    if base_vocab is None:
        vocab, chord_counts = build_vocabulary((v[2] for v in variants), settings, args.min_count, args.max_chords)
    else:
        vocab, chord_counts = base_vocab, Counter()
    arrays, split, listing = [], [], []
    for piece, shift, events in variants:
        ids = np.array([BOS, *vocab.encode(events), EOS], dtype=np.int32)
        val = is_validation(piece.name, args.val_percent)
        arrays.append(ids)
        split.append(int(val))
        listing.append({"name": piece.name, "source": piece.source, "transpose": shift,
                        "split": "val" if val else "train", "tokens": len(ids)})
    n_tokens = int(sum(len(a) for a in arrays))
    seconds = time.perf_counter() - started
    manifest = {
        "liveduet_version": __version__,
        "sources": args.sources,
        "settings": {"transpose": args.transpose, "min_count": args.min_count, "max_chords": args.max_chords,
                     "val_percent": args.val_percent,
                     "vocab_from": str(args.vocab) if args.vocab else None},
        "counts": {
            "files": len(tasks), "files_read": len(tasks) - len(skipped), "files_skipped": len(skipped),
            "pieces": len(pieces), "sequences": len(arrays), "tokens": n_tokens,
            "train_tokens": int(sum(len(a) for a, s in zip(arrays, split) if not s)),
            "val_tokens": int(sum(len(a) for a, s in zip(arrays, split) if s)),
            "vocab_size": len(vocab), "chords_seen": len(chord_counts),
            "chords_mapped_to_nearest": vocab.misses, "seconds": round(seconds, 2),
        },
        "skipped": skipped,
        "pieces": listing,
    }
    try:
        if args.out.exists():
            shutil.rmtree(args.out)
        write_dataset(args.out, arrays, split, vocab, manifest)
    except OSError as err:  # the disk filled, or the folder changed while reading
        raise OutputPathError(f"cannot write the dataset {args.out}: {os_error_line(err)}") from err
    _summary(Console(quiet=args.quiet), manifest, args.out)
    return 0


def _read_chunk(tasks: list[Task], settings: TokenizerSettings) -> list[Result]:
    return [read_task(t, settings) for t in tasks]


def read_all(tasks: list[Task], settings: TokenizerSettings, jobs: int, console: Console) -> list[Result]:
    """Read every task on `jobs` worker processes. A worker that dies (a parser crashing the
    interpreter, the OOM killer) never hangs the run: its tasks are retried one per process, and
    the one that kills its process again is skipped with a reason."""
    results: list[Result] = []
    progress = Progress(TextColumn("[bold]reading"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[skipped]} skipped"), console=console, transient=True)
    with progress:
        bar = progress.add_task("read", total=len(tasks), skipped=0)

        def done(batch: list[Result]) -> None:
            results.extend(batch)
            skipped = sum(bool(r.skipped) for r in results)
            progress.update(bar, advance=len(batch), skipped=skipped)

        if jobs == 1 or len(tasks) < 4:
            for task in tasks:
                done([read_task(task, settings)])
        else:
            size = max(1, min(32, len(tasks) // (jobs * 8)))
            chunks = [tasks[i : i + size] for i in range(0, len(tasks), size)]
            retry: list[Task] = []
            ctx = mp.get_context("fork")  # workers only parse and tokenize; fork starts them fastest
            with ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
                futures = {pool.submit(_read_chunk, chunk, settings): chunk for chunk in chunks}
                for future in as_completed(futures):
                    try:
                        done(future.result())
                    except BrokenProcessPool:
                        retry.extend(futures[future])
            for task in retry:  # careful mode: one process per task, so a crash names its file
                with ProcessPoolExecutor(1, mp_context=ctx) as pool:
                    try:
                        done(pool.submit(_read_chunk, [task], settings).result())
                    except BrokenProcessPool:
                        done([Result(task, [], skipped="the worker process reading it crashed")])
    # Worker order varies; the dataset must not.
    results.sort(key=lambda r: r.task.path)
    return results


def _summary(console: Console, manifest: dict, out: Path) -> None:
    c = manifest["counts"]
    table = Table(title=f"liveduet prepare → {out}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for label, value in [
        ("files read", c["files_read"]), ("files skipped", c["files_skipped"]), ("pieces", c["pieces"]),
        ("sequences (with transpositions)", c["sequences"]), ("tokens", f"{c['tokens']:,}"),
        ("  train / validation", f"{c['train_tokens']:,} / {c['val_tokens']:,}"),
        ("vocabulary size", c["vocab_size"]), ("chords mapped to nearest", c["chords_mapped_to_nearest"]),
        ("seconds", c["seconds"]),
    ]:
        table.add_row(label, str(value))
    console.print(table)
    reasons = Counter(s["reason"] for s in manifest["skipped"])
    for reason, n in reasons.most_common(8):
        console.print(f"  skipped {n}: {reason}")
