"""`liveduet prepare` on corpus layouts at scale: files/s and peak RSS on a generated Lakh-style
folder, and MAESTRO's official split honoured on a generated MAESTRO folder.

    python benchmarks/bench_corpora.py [--files 20000] [--jobs 2] [--out benchmarks/results/corpora.json]

Generation (no downloads): small multi-track SMF files written as bytes (2-4 instruments, drums
in half of them, 40-160 notes each, timing jittered off the grid), named `<md5>.mid` in
`lmd_full/<first hex digit>/`; 4 % are byte-identical copies under another name, 0.5 % have a
5 bpm tempo and 0.5 % 40 tracks. The folder is split in two sources (a quarter, the rest) so
the same command runs on 1/4 of the files and then on all of them: a bounded peak RSS is one
that barely grows with the file count.

Figures come through the product: the installed command in a subprocess (`python -m liveduet
prepare lakh:A [lakh:B] --out TMP --jobs N --quiet`), peak RSS from `/usr/bin/time -v` (the
largest process of the run) and from the run's own manifest (main process, largest worker).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def vlq(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def track(events: list[tuple[int, bytes]]) -> bytes:
    body, now = bytearray(), 0
    for tick, data in sorted(events, key=lambda e: e[0]):
        body += vlq(tick - now) + data
        now = tick
    body += b"\x00\xff\x2f\x00"
    return b"MTrk" + len(body).to_bytes(4, "big") + bytes(body)


def smf(tracks: list[bytes], tpb: int = 480) -> bytes:
    return b"MThd" + (6).to_bytes(4, "big") + (1).to_bytes(2, "big") + len(tracks).to_bytes(2, "big") + \
        tpb.to_bytes(2, "big") + b"".join(tracks)


def tempo_event(tick: int, bpm: float) -> tuple[int, bytes]:
    return tick, b"\xff\x51\x03" + round(60_000_000 / bpm).to_bytes(3, "big")


def random_song(rng: random.Random, n_tracks: int | None = None, bpm: float | None = None,
                drums: bool = True) -> bytes:
    tempo = [tempo_event(0, bpm or rng.uniform(60, 180))]
    if rng.random() < 0.3:
        tempo.append(tempo_event(480 * rng.randrange(8, 32), rng.uniform(60, 180)))
    tracks = [track(tempo)]
    count = n_tracks or rng.randrange(2, 5)
    for t in range(count):
        drum = drums and t == count - 1 and rng.random() < 0.5
        channel = 9 if drum else t % 9
        events: list[tuple[int, bytes]] = [] if drum else [(0, bytes([0xC0 | channel, rng.randrange(0, 112)]))]
        tick = 0
        for _ in range(rng.randrange(40, 160) // count):
            dur = 120 * rng.choice((1, 2, 2, 4, 4, 8))
            pitch = rng.randrange(35, 50) if drum else rng.randrange(36, 96)
            jitter = rng.randrange(-12, 13)
            on = max(0, tick + jitter)
            events.append((on, bytes([0x90 | channel, pitch, rng.randrange(30, 127)])))
            events.append((on + dur - 10, bytes([0x80 | channel, pitch, 0])))
            tick += dur
        tracks.append(track(events))
    return smf(tracks)


def make_lakh(roots: list[Path], files: int, seed: int = 1) -> dict:
    """`files` Lakh-style files spread over `roots` (the first gets a quarter)."""
    rng = random.Random(seed)
    made = {"files": 0, "duplicates": 0, "absurd_tempo": 0, "too_many_tracks": 0}
    recent: list[bytes] = []
    for i in range(files):
        root = roots[0] if i < files // 4 else roots[-1]
        roll = rng.random()
        if roll < 0.04 and recent:
            data, name = rng.choice(recent), f"{rng.getrandbits(128):032x}"
            made["duplicates"] += 1
        else:
            if roll < 0.045:
                data = random_song(rng, bpm=5.0)
                made["absurd_tempo"] += 1
            elif roll < 0.05:
                data = random_song(rng, n_tracks=40)
                made["too_many_tracks"] += 1
            else:
                data = random_song(rng)
            name = hashlib.md5(data).hexdigest()
            recent = (recent + [data])[-50:]
        folder = root / "lmd_full" / name[0]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.mid").write_bytes(data)
        made["files"] += 1
    return made


def run_prepare(sources: list[str], out: Path, jobs: int, extra: list[str] = ()) -> dict:
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "liveduet", "prepare", *sources, "--out", str(out),
           "--jobs", str(jobs), "--quiet", "--force", *extra]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"prepare failed ({proc.returncode}): {proc.stderr[-2000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    manifest = json.loads((out / "manifest.json").read_text())
    c = manifest["counts"]
    return {
        "files": c["files"], "files_read": c["files_read"], "files_skipped": c["files_skipped"],
        "duplicates_removed": c["duplicates"], "sequences": c["sequences"], "tokens": c["tokens"],
        "wall_s": round(wall, 2), "files_per_s": round(c["files"] / wall, 1),
        "seconds_reading": c.get("seconds_reading"), "seconds_total_in_manifest": c["seconds"],
        "peak_rss_mib_largest_process": round(rss_kb / 1024, 1),
        "peak_rss_mib_manifest": c["peak_rss_mib"],
        "skip_reasons": sorted({re.sub(r"duplicate of .*", "duplicate of …", s["reason"])
                                for s in manifest["skipped"]}),
    }


def maestro_split_check(root: Path, out: Path, jobs: int, pieces: int = 300) -> dict:
    """A generated MAESTRO folder (train/validation/test ≈ 80/10/10, titles per split): is the
    official split honoured, and does no test piece reach train or validation?"""
    rng = random.Random(5)
    rows = []
    for i in range(pieces):
        split = rng.choices(["train", "validation", "test"], [8, 1, 1])[0]
        name = f"{2004 + i % 15}/perf-{i:04d}.midi"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(random_song(rng, n_tracks=1, drums=False))
        rows.append({"canonical_composer": f"Composer {i % 23}", "canonical_title": f"{split} work {i // 2}",
                     "split": split, "year": str(2004 + i % 15), "midi_filename": name,
                     "audio_filename": name[:-5] + ".wav", "duration": "100.0"})
    with open(root / "maestro-v3.0.0.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    subprocess.run([sys.executable, "-m", "liveduet", "prepare", f"maestro:{root}", "--out", str(out), "--jobs",
                    str(jobs), "--quiet", "--force", "--transpose", "-2..2"], check=True)
    manifest = json.loads((out / "manifest.json").read_text())
    split = np.load(out / "split.npy")
    want = {r["midi_filename"]: {"train": 0, "validation": 1, "test": 2}[r["split"]] for r in rows}
    wrong = sum(want[p["name"]] != s for p, s in zip(manifest["pieces"], split))
    test_names = {p["name"] for p, s in zip(manifest["pieces"], split) if s == 2}
    leaked = sum(p["name"] in test_names for p, s in zip(manifest["pieces"], split) if s != 2)
    return {
        "pieces": pieces, "sequences": len(split), "csv_split_counts": {k: sum(r["split"] == k for r in rows)
                                                                        for k in ("train", "validation", "test")},
        "manifest_split": manifest["split"], "sequences_in_wrong_split": int(wrong),
        "test_sequences_in_train_or_val": int(leaked), "honoured": wrong == 0 and leaked == 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        a, b = tmp_path / "lakh_a", tmp_path / "lakh_b"
        started = time.perf_counter()
        made = make_lakh([a, b], args.files)
        generated_s = time.perf_counter() - started
        quarter = run_prepare([f"lakh:{a}"], tmp_path / "out_quarter", args.jobs)
        full = run_prepare([f"lakh:{a}", f"lakh:{b}"], tmp_path / "out_full", args.jobs)
        (tmp_path / "maestro").mkdir()
        split = maestro_split_check(tmp_path / "maestro", tmp_path / "out_maestro", args.jobs)
    result = {
        "benchmark": "liveduet prepare on generated corpus layouts",
        "generated": {**made, "seconds": round(generated_s, 1)},
        "lakh_quarter": quarter,
        "lakh_full": full,
        "rss_growth_mib_per_1k_files": round(
            (full["peak_rss_mib_largest_process"] - quarter["peak_rss_mib_largest_process"])
            / max((full["files"] - quarter["files"]) / 1000, 1e-9), 2),
        "maestro_split": split,
        "machine": {"cpus": os.cpu_count(), "jobs": args.jobs, "python": platform.python_version(),
                    "loadavg_at_start": [round(x, 2) for x in load]},
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
