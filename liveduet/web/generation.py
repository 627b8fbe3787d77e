"""The Generate tab: the seeds' playground over `liveduet generate`'s own core (generate_piece).

Knobs: model (an exported folder: the style), temperature, top-p, length (tokens), tempo,
complexity, seed, and a primer (an uploaded MIDI file or a recording).

Complexity is note density: `Sampler.set_complexity`, a documented bias on the duration tokens
(model/sampling.py, COMPLEXITY_SLOPE) — the same one the live SetComplexity command puts on the
answers. Neutral at 0.5; towards 1 short notes are favoured (denser), towards 0 long ones (sparser).
Pitch choice is left to the model.
"""

from __future__ import annotations

import io
import math
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liveduet.errors import ConfigError, MidiFileError
from liveduet.music.midifile import MidiNotes, parse_midi
from liveduet.web.library import NotFoundError

MAX_UPLOAD_BYTES = 256 * 1024  # a primer is a phrase or a song, not a symphony
MAX_KEPT = 32  # results and primers kept in memory (oldest dropped)
LIMITS = {"temperature": (0.1, 2.0), "top_p": (0.05, 1.0), "tokens": (8, 1024), "bpm": (40.0, 240.0),
          "complexity": (0.0, 1.0), "seed": (0, 2**31 - 1)}


@dataclass(frozen=True)
class Request:
    model: str
    temperature: float = 1.0
    top_p: float = 0.95
    tokens: int = 128
    bpm: float = 120.0
    complexity: float = 0.5
    seed: int = 0
    primer: str | None = None  # an uploaded primer's id
    recording: str | None = None  # or a recording's id


def check_numbers(data: dict, limits: dict[str, tuple[float, float]], integral: tuple[str, ...]) -> dict[str, Any]:
    """The fields of `data` named in `limits`, each checked to lie in its range; ConfigError names the bad one."""
    values: dict[str, Any] = {}
    for name, (lo, hi) in limits.items():
        if name not in data:
            continue
        value = data[name]
        whole = name in integral
        ok = isinstance(value, int if whole else int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or not lo <= value <= hi:
            kind = "an integer" if whole else "a number"
            raise ConfigError(f"{name} must be {kind} in {lo:g}..{hi:g}, got {value!r}")
        values[name] = value
    return values


def check_fields(data: object, known: set[str], what: str, prefix: str = "") -> dict:
    """`data` if it is a JSON object with no field outside `known`; ConfigError otherwise."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix}a {what} request is a JSON object")
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{prefix}unknown field(s): {', '.join(sorted(unknown))}")
    return data


def check_source(data: dict, prefix: str = "") -> dict[str, str]:
    """A primer's id ("primer") or a recording's ("recording"), as given; ConfigError if not a string."""
    out = {}
    for name in ("primer", "recording"):
        if data.get(name) is not None:
            if not isinstance(data[name], str):
                raise ConfigError(f"{prefix}{name} must be an id (a string)")
            out[name] = data[name]
    return out


def parse_request(data: object) -> Request:
    """A Generate request from JSON, each value checked against LIMITS; ConfigError names the bad one."""
    data = check_fields(data, set(Request.__dataclass_fields__), "generate")
    if not isinstance(data.get("model"), str):
        raise ConfigError("model: the name of a model is required")
    return Request(model=data["model"], **check_numbers(data, LIMITS, ("tokens", "seed")), **check_source(data))


class Generator:
    """Loads models once, keeps uploaded primers and results in memory by random ids."""

    def __init__(self, models: dict[str, Path], recordings: Path | None = None) -> None:
        self.models = models
        self.recordings = recordings
        self._runtimes: dict[str, Any] = {}
        self.lock = threading.Lock()  # one generation (or variation) at a time: the machine has few cores
        self.primers: OrderedDict[str, MidiNotes] = OrderedDict()
        self.results: OrderedDict[str, dict] = OrderedDict()

    def _keep(self, table: OrderedDict, value: Any) -> str:
        key = secrets.token_hex(8)
        table[key] = value
        while len(table) > MAX_KEPT:
            table.popitem(last=False)
        return key

    def add_primer(self, data: bytes) -> dict:
        """An uploaded MIDI file, checked by the capped reader; its id and what it holds."""
        if len(data) > MAX_UPLOAD_BYTES:
            raise MidiFileError(f"{len(data)} bytes is over the upload cap of {MAX_UPLOAD_BYTES}")
        midi = parse_midi(data)
        if not midi.notes:
            raise MidiFileError("the file has no notes")
        return {"id": self._keep(self.primers, midi), "notes": len(midi.notes), "seconds": round(midi.seconds, 1)}

    def _runtime(self, name: str) -> Any:
        from liveduet.model.runtime import ModelRuntime

        if name not in self.models:
            raise NotFoundError(f"no model {name!r} (one of: {', '.join(self.models) or 'none'})")
        if name not in self._runtimes:
            self._runtimes[name] = ModelRuntime.load(self.models[name])
        return self._runtimes[name]

    def source(self, primer: str | None, recording: str | None) -> MidiNotes | None:
        """An uploaded primer or a recording by id (the primer first), or None when neither is named."""
        if primer is not None:
            if primer not in self.primers:
                raise NotFoundError(f"no uploaded primer {primer!r} (upload it again)")
            return self.primers[primer]
        if recording is not None:
            from liveduet.music.midifile import read_midi
            from liveduet.web.library import find_recording

            if self.recordings is None:
                raise NotFoundError("no recordings folder")
            return read_midi(find_recording(self.recordings, recording).path)
        return None

    def keep(self, result: dict) -> dict:
        """A finished piece (its "midi" bytes among the fields) kept by a new id; what the page gets."""
        rid = self._keep(self.results, result)
        return {"id": rid, **{k: v for k, v in result.items() if k != "midi"}}

    def generate(self, req: Request) -> dict:
        """Sample a piece; its id, notes ([on s, off s, pitch, velocity, part]: 0 primer, 1 generated)."""
        from liveduet.commands.generate import generate_piece
        from liveduet.model.sampling import Sampler

        with self.lock:
            runtime = self._runtime(req.model)
            primer = self.source(req.primer, req.recording)
            sampler = Sampler(runtime, temperature=req.temperature, top_p=req.top_p, seed=req.seed)
            sampler.set_complexity(req.complexity)
            try:
                piece = generate_piece(runtime, sampler, req.tokens, primer, bpm=req.bpm)
            except MidiFileError as err:
                raise MidiFileError(f"the primer {err}") from err
        buf = io.BytesIO()
        piece.midi.save(file=buf)
        spb = 60.0 / piece.bpm
        first = len(piece.notes) - sum(len(p) for p, _ in piece.events)  # the primer's notes come first
        notes = [[round(on * spb, 4), round(off * spb, 4), pitch, vel, int(i >= first)]
                 for i, (on, off, pitch, vel) in enumerate(piece.notes)]
        return self.keep({"model": req.model, "bpm": piece.bpm, "tokens": len(piece.tokens), "notes": notes,
                          "midi": buf.getvalue()})

    def result(self, rid: str) -> dict:
        if not isinstance(rid, str) or rid not in self.results:
            raise NotFoundError(f"no result {rid!r} (results are kept while the studio runs)")
        return self.results[rid]
