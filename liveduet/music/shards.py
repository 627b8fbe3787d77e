"""`liveduet prepare`'s resumable store: what the workers read, kept on disk in `OUT/.partial/`.

A corpus of 170k files cannot be held as Python events, so prepare reads its (path-sorted) task
list in fixed chunks and keeps each chunk's results as one shard file, `shard-000123.pkl`, written
under a temporary name and renamed: a shard file exists exactly when its chunk is finished, so the
shard files are the journal. Shards are scratch, so they skip write_atomic's two fsyncs (a quarter
of a small run's time): after a power cut a shard may exist but be damaged, and a resumed run
reads every shard once and reads the files of a damaged one again. `state.json` records what the
run reads (a key over the sources, the reading settings and every task) and the chunk size;
`--resume` continues only a run with the same key, so resumed shards equal the ones an
uninterrupted run writes. The merge pass then streams the shards in order, twice (vocabulary
counts, then encoding), holding one shard at a time.

Shards are our own private files (pickle of plain lists, numpy arrays and strings), never input.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from liveduet.errors import LiveduetError
from liveduet.fsutil import write_atomic
from liveduet.music.corpus import Result, Task
from liveduet.music.tokens import Event

STORE_VERSION = 1


def chunk_size(n_tasks: int) -> int:
    """Files per shard: small for small corpora (the chunks are also the unit of parallel work),
    64 for big ones (2,700 shards for 170k files)."""
    return max(1, min(64, n_tasks // 16))


def run_key(sources: list[str], reading: dict, tasks: Iterable[Task]) -> str:
    """What decides the shards' content: the sources, reading settings and every task."""
    h = hashlib.sha1(json.dumps([STORE_VERSION, sources, reading], sort_keys=True, default=str).encode())
    for t in tasks:
        programs = sorted(t.programs) if t.programs is not None else None
        h.update(repr((t.kind, t.path, t.name, t.split, t.meta, programs, t.max_tracks, t.check_tempo,
                       t.dedupe, t.reason)).encode())
    return h.hexdigest()


def pack(result: Result) -> dict:
    """A worker's result → compact plain data (events as one int16 array per piece)."""
    pieces = []
    for p in result.pieces:
        flat: list[int] = []
        for pitches, dur in p.events:
            flat += (len(pitches), dur, *pitches)
        pieces.append({
            "name": p.name, "source": p.source, "meta": p.meta, "split": p.split, "n_events": len(p.events),
            "events": np.array(flat, dtype=np.int16),
            "perf": None if p.perf is None else np.array(p.perf, dtype=np.int16).reshape(-1, 2),
        })
    return {"path": result.task.path, "skipped": result.skipped, "digest": result.digest, "pieces": pieces}


def events_of(flat: np.ndarray) -> list[Event]:
    values = flat.tolist()
    out: list[Event] = []
    i = 0
    while i < len(values):
        n, dur = values[i], values[i + 1]
        out.append((tuple(values[i + 2 : i + 2 + n]), dur))
        i += 2 + n
    return out


class PartialStore:
    """The shard folder of one prepare run."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.size = 0
        self.shards = 0
        self.resumed = False

    def open(self, key: str, n_tasks: int, resume: bool) -> None:
        """Start a store, or continue one with the same key. Another key → LiveduetError."""
        state_file = self.folder / "state.json"
        if resume and state_file.exists():
            try:
                state = json.loads(state_file.read_text())
                same = state["key"] == key and state["tasks"] == n_tasks
            except (OSError, ValueError, KeyError, TypeError):
                same = False
            if not same:
                raise LiveduetError(f"{self.folder} was made from other sources or reading settings; "
                                    f"run with the same ones, or use --force to start over")
            self.size = int(state["chunk"])
            self.resumed = True
        else:
            if self.folder.exists():
                for old in self.folder.iterdir():
                    old.unlink()
            self.folder.mkdir(parents=True, exist_ok=True)
            self.size = chunk_size(n_tasks)
            state = {"version": STORE_VERSION, "key": key, "tasks": n_tasks, "chunk": self.size}
            write_atomic(state_file, json.dumps(state).encode())
        self.shards = -(-n_tasks // self.size)

    def chunks(self, tasks: list[Task]) -> list[tuple[int, list[Task]]]:
        """The chunks not yet finished, in order."""
        done = self.done()
        return [(i, tasks[i * self.size : (i + 1) * self.size]) for i in range(self.shards) if i not in done]

    def done(self) -> set[int]:
        done = {int(p.stem.split("-")[1]) for p in self.folder.glob("shard-*.pkl")}
        if self.resumed:  # what a crash or power cut may have left half written is read again
            for i in sorted(done):
                try:
                    self._load(i)
                except Exception:  # any damage: unpickling raises many kinds
                    (self.folder / f"shard-{i:06d}.pkl").unlink()
                    done.discard(i)
        return done

    def write(self, index: int, packed: list[dict]) -> None:
        path = self.folder / f"shard-{index:06d}.pkl"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(pickle.dumps(packed, protocol=pickle.HIGHEST_PROTOCOL))
        os.replace(tmp, path)  # scratch: atomic, not durable (see the module docstring)

    def _load(self, index: int) -> list[dict]:
        with open(self.folder / f"shard-{index:06d}.pkl", "rb") as fh:
            return pickle.load(fh)  # our own file, never input (see the module docstring)

    def results(self) -> Iterator[dict]:
        """Every packed result in task order, one shard in memory at a time."""
        for i in range(self.shards):
            yield from self._load(i)

