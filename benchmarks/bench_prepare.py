"""Prepare the same MIDI files with `liveduet prepare` and with the seed projects' music21 pipeline.

    python benchmarks/bench_prepare.py [--files 100] [--out result.json]

Input: Bach chorales from music21's corpus written to MIDI once (music21 writes 10,080 ticks per
quarter) and kept in benchmarks/out/chorales/ (git-ignored). Both sides read those files:

- liveduet: the real `liveduet prepare DIR --out TMP --jobs 2` (in-process, after one warm-up run
  that pays the imports), so the figure includes the worker pool, vocabulary, encoding and writing.
- music21: per file, in one process, `converter.parse(forceSource=True)` + `chordify()` + a walk of
  the flattened notes and chords, as the seed projects do.

Prints JSON (and writes it to --out): wall-clock and CPU ms per file for each side and their
ratios (target ≥ 50× wall clock). The machine may be shared: the load average at the start is
recorded with the figures, and the CPU ratio is the steadier of the two.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET = 50.0


def make_chorales(folder: Path, count: int) -> list[Path]:
    """Write the first `count` chorales of music21:bach to MIDI, once."""
    from music21 import converter

    from liveduet.music.corpus import expand_sources

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for task in expand_sources(["music21:bach"])[:count]:
        target = folder / (Path(task.path).stem + ".mid")
        if not target.exists():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                score = converter.parse(task.path)
                tmp = target.with_suffix(".tmp")
                score.write("midi", fp=str(tmp))
            os.replace(tmp, target)
            print(f"wrote {target.name}", file=sys.stderr)
        paths.append(target)
    return paths


def time_liveduet(folder: Path, jobs: int, repeats: int) -> dict:
    from liveduet.cli import main
    from liveduet.commands.prepare import read_all
    from liveduet.music.corpus import expand_sources
    from liveduet.music.tokens import TokenizerSettings

    with tempfile.TemporaryDirectory() as tmp:
        args = ["prepare", str(folder), "--out", f"{tmp}/data", "--jobs", str(jobs), "--quiet", "--force"]
        main(args)  # warm-up: imports, page cache
        runs, cpu = [], []
        for _ in range(repeats):
            before = os.times()
            started = time.perf_counter()
            if main(args) != 0:
                raise SystemExit("liveduet prepare failed")
            runs.append(time.perf_counter() - started)
            after = os.times()  # the pool's workers are joined by now: their CPU time is counted
            cpu.append(sum(after[:4]) - sum(before[:4]))
        manifest = json.loads(Path(f"{tmp}/data/manifest.json").read_text())

    from rich.console import Console

    tasks = expand_sources([str(folder)])
    quiet = Console(quiet=True)
    one = []
    for _ in range(repeats):
        started = time.perf_counter()
        read_all(tasks, TokenizerSettings(), 1, quiet)
        one.append(time.perf_counter() - started)
    n = len(tasks)
    return {
        "path": f"liveduet prepare DIR --jobs {jobs} (in-process, whole command: read, tokenize, vocab, write)",
        "ms_per_file": round(1000 * statistics.median(runs) / n, 3),
        "runs_s": [round(r, 3) for r in runs],
        "cpu_ms_per_file": round(1000 * statistics.median(cpu) / n, 3),
        "one_process_read_ms_per_file": round(1000 * statistics.median(one) / n, 3),
        "files_read": manifest["counts"]["files_read"],
        "tokens": manifest["counts"]["tokens"],
    }


def music21_one(path: Path) -> int:
    """The seed projects' way: parse, chordify, walk notes and chords. Returns the element count."""
    from music21 import chord, converter, note

    score = converter.parse(str(path), forceSource=True)
    elements = []
    for el in score.chordify().flatten().notes:
        when = (float(el.offset), float(el.duration.quarterLength))
        if isinstance(el, note.Note):
            elements.append((*when, str(el.pitch)))
        elif isinstance(el, chord.Chord):
            elements.append((*when, ".".join(str(n) for n in el.normalOrder)))
    return len(elements)


def time_music21(paths: list[Path]) -> dict:
    import music21  # noqa: F401  (import cost is not per file)

    music21_one(paths[0])  # warm-up
    per_file, cpu = [], []
    for path in paths:
        started, cpu_started = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            music21_one(path)
        per_file.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    return {
        "path": "music21 converter.parse(forceSource=True) + chordify() + flatten().notes walk, one process",
        "ms_per_file": round(1000 * statistics.mean(per_file), 1),
        "median_ms_per_file": round(1000 * statistics.median(per_file), 1),
        "cpu_ms_per_file": round(1000 * statistics.mean(cpu), 1),
        "total_s": round(sum(per_file), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=100, help="chorales to benchmark (default 100)")
    parser.add_argument("--midi-dir", type=Path, default=HERE / "out" / "chorales", help="where the MIDI files live")
    parser.add_argument("--jobs", type=int, default=2, help="liveduet worker processes (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="liveduet runs; the median is reported")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    import music21

    load = os.getloadavg()
    paths = make_chorales(args.midi_dir, args.files)
    with tempfile.TemporaryDirectory() as tmp:  # exactly these files, whatever else the folder holds
        folder = Path(tmp)
        for p in paths:
            (folder / p.name).symlink_to(p.resolve())
        liveduet = time_liveduet(folder, args.jobs, args.repeats)
    m21 = time_music21(paths)
    ratio = m21["ms_per_file"] / liveduet["ms_per_file"]
    cpu_ratio = m21["cpu_ms_per_file"] / liveduet["cpu_ms_per_file"]
    result = {
        "benchmark": "prepare chorale-sized MIDI files",
        "files": len(paths),
        "mean_file_bytes": round(statistics.mean(p.stat().st_size for p in paths)),
        "liveduet": liveduet,
        "music21": m21,
        "ratio": round(ratio, 1),  # wall clock per file: what a user waits
        "cpu_ratio": round(cpu_ratio, 1),  # CPU seconds per file: less sensitive to other jobs
        "target_ratio": TARGET,
        "meets_target": ratio >= TARGET,
        "machine": {
            "cpus": os.cpu_count(), "python": platform.python_version(), "music21": music21.__version__,
            "loadavg_at_start": [round(x, 2) for x in load],
        },
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
