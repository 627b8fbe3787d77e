"""`liveduet prepare SOURCE... --out DIR`: MIDI files, music21's corpus and real corpora
(MAESTRO, GiantMIDI-Piano, Lakh MIDI) → a token dataset.

Three passes, so a 170k-file corpus never sits in memory: read the files on a process pool
(liveduet/music/reading.py) into shards in OUT/.partial/ (liveduet/music/shards.py; `--resume`
continues there), then stream the shards twice: once for the vocabulary's chord counts, once to
encode and write the folder (liveduet/music/dataset.py DatasetWriter).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from liveduet import __version__
from liveduet.errors import CorpusError, LiveduetError, OutputPathError
from liveduet.fsutil import check_output_folder, os_error_line
from liveduet.music.corpora import PROGRAM_SETS
from liveduet.music.corpus import Result, Task, expand_sources, read_task
from liveduet.music.dataset import NO_TIMING, NO_VELOCITY, SPLIT_CODES, DatasetWriter, is_validation
from liveduet.music.reading import Progress, run_chunks
from liveduet.music.shards import PartialStore, events_of, pack, run_key
from liveduet.music.tokens import BOS, EOS, Event, TokenizerSettings, Vocabulary, build_vocabulary, transpose_events


class Interrupted(LiveduetError):
    """Ctrl-C (or a kill the process survived): what is read stays for --resume."""

    exit_code = 130


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
        help="turn MIDI files, music21's corpus and real corpora into a token dataset",
        description="Read MIDI files/folders (.mid .midi .kar .rmi, recursive), music21 corpus collections "
        "(music21:bach, music21:essenFolksong, ...) and downloaded corpora in their own layout "
        "(maestro:PATH keeps MAESTRO's train/validation/test split, giantmidi:PATH its curated subset, "
        "lakh:PATH the Lakh MIDI dataset without drums and duplicates), tokenize them, build the "
        "vocabulary, and write a dataset folder. Broken files are skipped with a reason. An interrupted "
        "run continues with --resume.",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="MIDI file, folder, music21:NAME, maestro:PATH, giantmidi:PATH or lakh:PATH")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--force", action="store_true", help="replace an existing output folder (and start over)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out (same sources and reading settings); "
                   "the result is identical to an uninterrupted run")
    p.add_argument("--transpose", type=parse_range, default=[0], metavar="RANGE",
                   help="transposition augmentation in semitones, e.g. -5..6 (default: 0, none)")
    p.add_argument("--min-count", type=int, default=3, help="keep chords seen at least this often (default 3)")
    p.add_argument("--max-chords", type=int, default=2000,
                   help="keep at most this many chords, the most frequent (default 2000; 0: no cap)")
    p.add_argument("--val-percent", type=float, default=5.0,
                   help="pieces held out for validation, by name (default 5); maestro: keeps its official split")
    p.add_argument("--programs", choices=list(PROGRAM_SETS), default="melodic",
                   help="lakh: the instruments whose notes are kept: piano (GM 1-8), melodic (GM 1-112, "
                   "default) or all; drums never")
    p.add_argument("--max-tracks", type=int, default=32, help="lakh: skip files with more tracks (default 32)")
    p.add_argument("--vocab", type=Path, help="use this vocab.json instead of building one (e.g. a model's)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress")
    p.add_argument("--stop-after", type=int, default=0, help=argparse.SUPPRESS)  # shards; tests interrupt with it
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True, quiet=args.quiet)
    check_output_folder(args.out, "the dataset")
    partial = args.out / ".partial"
    if args.out.exists() and any(args.out.iterdir()) and not args.force:
        if partial.is_dir() and not args.resume:
            raise LiveduetError(f"{args.out} holds an interrupted prepare: add --resume to continue it "
                                f"or --force to start over")
        if not (partial.is_dir() and args.resume):
            raise LiveduetError(f"{args.out} exists and is not empty (use --force to replace it)")
    if args.max_chords < 0:
        raise LiveduetError(f"--max-chords must be 0 (no cap) or more, got {args.max_chords}")
    if args.min_count < 1:
        raise LiveduetError(f"--min-count must be at least 1, got {args.min_count}")
    if not 0 <= args.val_percent < 100:
        raise LiveduetError(f"--val-percent must be in 0..100, got {args.val_percent}")
    if args.jobs < 1:
        raise LiveduetError(f"--jobs must be at least 1, got {args.jobs}")
    if args.max_tracks < 1:
        raise LiveduetError(f"--max-tracks must be at least 1, got {args.max_tracks}")
    base_vocab = Vocabulary.load(args.vocab) if args.vocab else None
    settings = base_vocab.settings if base_vocab else TokenizerSettings()
    started = time.perf_counter()
    describe: dict[str, str] = {}
    tasks = expand_sources(args.sources, describe, programs=args.programs, max_tracks=args.max_tracks)
    if not tasks:
        raise CorpusError("the sources hold no MIDI or music files")
    tasks.sort(key=lambda t: t.path)  # the dataset's order, whatever the workers' order

    created = not args.out.exists()
    store = PartialStore(partial)
    reading = {"settings": asdict(settings), "programs": args.programs, "max_tracks": args.max_tracks}
    try:
        store.open(run_key(args.sources, reading, tasks), len(tasks), resume=args.resume and not args.force)
        _read_into(store, tasks, settings, args, console)
        read_seconds = time.perf_counter() - started
        manifest = _merge(store, tasks, args, settings, base_vocab, describe, started, read_seconds, console)
    except LiveduetError:
        if created:  # nothing of this run is worth keeping
            shutil.rmtree(args.out, ignore_errors=True)
        raise
    except OSError as err:  # the disk filled, or the folder changed while reading
        raise OutputPathError(f"cannot write the dataset {args.out}: {os_error_line(err)}") from err
    except KeyboardInterrupt:
        finished = min(len(store.done()) * store.size, len(tasks)) if store.size else 0
        raise Interrupted(f"interrupted with {finished:,} of {len(tasks):,} files read; the same command "
                          f"with --resume continues") from None
    shutil.rmtree(partial, ignore_errors=True)
    _summary(Console(quiet=args.quiet), manifest, args.out)
    return 0


# -- pass 1: read files into shards --------------------------------------------------------------


def _read_into(store: PartialStore, tasks: list[Task], settings: TokenizerSettings, args: argparse.Namespace,
               console: Console) -> None:
    chunks = store.chunks(tasks)
    todo = sum(len(c) for _, c in chunks)
    written = 0
    with Progress(console, len(tasks), len(tasks) - todo) as progress:

        def done(index: int, packed: list) -> None:
            nonlocal written
            store.write(index, packed)
            progress.advance(len(packed), sum(bool(r["skipped"]) for r in packed))
            written += 1
            if args.stop_after and written >= args.stop_after:
                raise KeyboardInterrupt  # what Ctrl-C does: the shards so far stay for --resume

        run_chunks(chunks, settings, args.jobs, _read_packed, done, lambda task: pack(_crashed(task)))


def _read_chunk(tasks: list[Task], settings: TokenizerSettings) -> list[Result]:
    return [read_task(t, settings) for t in tasks]


def _read_packed(tasks: list[Task], settings: TokenizerSettings) -> list[dict]:
    return [pack(read_task(t, settings)) for t in tasks]  # packed in the worker: less to pickle back


def _crashed(task: Task) -> Result:
    return Result(task, [], skipped="the worker process reading it crashed")


def read_all(tasks: list[Task], settings: TokenizerSettings, jobs: int, console: Console) -> list[Result]:
    """Read every task into memory (small corpora, benchmarks), sorted by path."""
    results: list[Result] = []
    size = max(1, min(32, len(tasks) // (jobs * 8)))
    chunks = [(i, tasks[i * size : (i + 1) * size]) for i in range(-(-len(tasks) // size))]
    with Progress(console, len(tasks), 0) as progress:

        def done(_: int, batch: list[Result]) -> None:
            results.extend(batch)
            progress.advance(len(batch), sum(bool(r.skipped) for r in batch))

        run_chunks(chunks, settings, jobs, _read_chunk, done, _crashed)
    results.sort(key=lambda r: r.task.path)
    return results


# -- passes 2 and 3: vocabulary, then encode and write -------------------------------------------


def _sequences(store: PartialStore, tasks: list[Task], shifts: list[int], settings: TokenizerSettings,
               skipped: list[dict] | None, progress: Progress) -> Iterator[tuple[dict, int, list[Event]]]:
    """(piece, shift, events) in dataset order. Skipped files and content duplicates (the first
    file by path is kept) go to `skipped` when given."""
    seen: dict[bytes, int] = {}  # MD5 → the index of the first file with it (~150 bytes a file)
    for i, r in enumerate(store.results()):
        progress.advance(1, 0)
        if r["skipped"]:
            if skipped is not None:
                skipped.append({"path": r["path"], "reason": r["skipped"]})
            continue
        if r["digest"]:
            first = seen.setdefault(bytes.fromhex(r["digest"]), i)
            if first != i:
                if skipped is not None:
                    skipped.append({"path": r["path"], "reason": f"duplicate of {tasks[first].path} (same MD5)"})
                continue
        for piece in r["pieces"]:
            events = events_of(piece["events"])
            for shift in shifts:
                moved = transpose_events(events, shift, settings)
                if moved is not None:
                    yield piece, shift, moved


def _split_of(piece: dict, val_percent: float) -> int:
    if piece["split"]:
        return SPLIT_CODES[piece["split"]]
    return int(is_validation(piece["name"], val_percent))


def _work_key(piece: dict) -> str | tuple[str, str]:
    """What makes two pieces the same work for the test-split check: composer and title where
    the source names them (MAESTRO: every performance of a work), else the name."""
    meta = dict(piece["meta"])
    if "composer" in meta and "title" in meta:
        return meta["composer"].lower(), meta["title"].lower()
    return piece["name"]


def _merge(store: PartialStore, tasks: list[Task], args: argparse.Namespace, settings: TokenizerSettings,
           base_vocab: Vocabulary | None, describe: dict[str, str], started: float, read_seconds: float,
           console: Console) -> dict:
    n_files = len(tasks)
    skipped: list[dict] = []
    size = Counter()
    test_works: set = set()  # only test pieces are remembered: a small set

    def counted() -> Iterator[list[Event]]:
        with Progress(console, n_files, 0, "counting chords") as progress:
            for piece, _, events in _sequences(store, tasks, args.transpose, settings, skipped, progress):
                size["sequences"] += 1
                size["tokens"] += 2 * len(events) + 2
                if piece["split"] == "test":
                    test_works.add(_work_key(piece))
                yield events

    if base_vocab is None:
        vocab, chord_counts = build_vocabulary(counted(), settings, args.min_count, args.max_chords)
    else:
        vocab, chord_counts = base_vocab, Counter()
        for _ in counted():
            pass
    if not size["sequences"]:
        raise CorpusError(f"no tokens: all {n_files} files were skipped (first reason: "
                          f"{skipped[0]['reason'] if skipped else 'none'})")

    for old in args.out.iterdir():  # an old dataset (--force), or a merge that was interrupted
        if old.name != ".partial":
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    writer = DatasetWriter(args.out, size["tokens"], size["sequences"])
    tokens_by, pieces_by = Counter(), Counter()
    leaks = 0  # train or val pieces of a work that is also in test
    last = None
    listing_path = store.folder / "listing.jsonl"
    names = {v: k for k, v in SPLIT_CODES.items()}
    with open(listing_path, "w") as listing, Progress(console, n_files, 0, "writing") as progress:
        for piece, shift, events in _sequences(store, tasks, args.transpose, settings, None, progress):
            ids = np.array([BOS, *vocab.encode(events), EOS], dtype=np.int32)
            perf = None
            if piece["perf"] is not None:
                perf = np.full((len(ids), 2), (NO_VELOCITY, NO_TIMING), dtype=np.int16)
                perf[1:-1:2] = piece["perf"]  # on each event's pitch token
            split = _split_of(piece, args.val_percent)
            writer.add(ids, split, perf)
            which = names[split]
            tokens_by[which] += len(ids)
            if piece is not last:  # a piece's transpositions follow each other
                pieces_by[which] += 1
                last = piece
                leaks += split != 2 and bool(test_works) and _work_key(piece) in test_works
            entry = {"name": piece["name"], "source": piece["source"], "transpose": shift, "split": which,
                     "tokens": len(ids), **dict(piece["meta"])}
            listing.write(json.dumps(entry) + "\n")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    manifest = {
        "liveduet_version": __version__,
        "sources": args.sources,
        "settings": {"transpose": args.transpose, "min_count": args.min_count, "max_chords": args.max_chords,
                     "val_percent": args.val_percent, "programs": args.programs, "max_tracks": args.max_tracks,
                     "vocab_from": str(args.vocab) if args.vocab else None},
        "split": {
            "sources": {src: describe.get(src, f"by name hash ({args.val_percent:g}% validation)")
                        for src in args.sources},
            "pieces": {k: pieces_by[k] for k in SPLIT_CODES},
            # Train or val pieces that are a test work (by composer and title where known, else by name).
            "test_in_train_or_val": leaks,
            "test_isolated": leaks == 0,
        },
        "counts": {
            "files": n_files, "files_read": n_files - len(skipped), "files_skipped": len(skipped),
            "duplicates": sum(s["reason"].startswith("duplicate of") for s in skipped),
            "pieces": sum(pieces_by.values()), "sequences": size["sequences"],
            "tokens": size["tokens"], "train_tokens": tokens_by["train"], "val_tokens": tokens_by["val"],
            "test_tokens": tokens_by["test"], "vocab_size": len(vocab), "chords_seen": len(chord_counts),
            "chords_mapped_to_nearest": vocab.misses, "seconds": round(time.perf_counter() - started, 2),
            "seconds_reading": round(read_seconds, 2),  # this run's; the rest is vocabulary and writing
            "peak_rss_mib": {"main": round(rss[0] / 1024, 1), "largest_worker": round(rss[1] / 1024, 1)},
        },
        "skipped": skipped,
    }
    with open(listing_path) as listing:
        writer.finish(vocab, manifest, (line.rstrip("\n") for line in listing))
    return manifest


def _summary(console: Console, manifest: dict, out: Path) -> None:
    c = manifest["counts"]
    table = Table(title=f"liveduet prepare → {out}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for label, value in [
        ("files read", c["files_read"]), ("files skipped", c["files_skipped"]),
        ("  of them duplicates", c["duplicates"]), ("pieces", c["pieces"]),
        ("sequences (with transpositions)", c["sequences"]), ("tokens", f"{c['tokens']:,}"),
        ("  train / validation / test", f"{c['train_tokens']:,} / {c['val_tokens']:,} / {c['test_tokens']:,}"),
        ("vocabulary size", c["vocab_size"]), ("chords mapped to nearest", c["chords_mapped_to_nearest"]),
        ("seconds", c["seconds"]),
    ]:
        table.add_row(label, str(value))
    console.print(table)
    for src, how in manifest["split"]["sources"].items():
        console.print(f"  split of {src}: {how}")
    reasons = Counter("duplicate (same MD5 as a file kept)" if s["reason"].startswith("duplicate of") else s["reason"]
                      for s in manifest["skipped"])
    for reason, n in reasons.most_common(8):
        console.print(f"  skipped {n}: {reason}")
