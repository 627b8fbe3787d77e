"""Vary and morph in the Generate tab, over the phrase VAE (any exported VAE folder among the models).

The same functions as `liveduet vary` and `liveduet morph` (commands/vary.py: phrase_events,
variations, phrase_midi; live/vary.py: morph_events), over a primer the page uploaded or a recording:

- vary: the primer (its first MAX_VARY_BEATS beats: a page is for phrases, not whole sessions), then
  its n variations at σ, one after another — the primer as the VAE hears it (part 0), the variations
  as generated (part 1);
- morph: `steps` phrases of one VAE window each, from A's first window to B's (all part 1).
A result is kept like a generated piece (web/generation.py), so its piano roll, audio, .mid and score
come from the same routes. A folder that is not a VAE (a language model) is a one-line 400.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from liveduet.commands.generate import VELOCITY
from liveduet.commands.morph import STEPS_RANGE
from liveduet.commands.vary import SIGMA_MAX, phrase_events, phrase_midi, variations
from liveduet.errors import ConfigError, MidiFileError
from liveduet.music.midifile import MidiNotes
from liveduet.music.tokens import TICKS, Event, events_to_notes
from liveduet.web.generation import Generator, check_fields, check_numbers, check_source
from liveduet.web.library import NotFoundError

MAX_VARY_BEATS = 32  # of the primer; with n ≤ 8 a request decodes at most 256 beats
VARY_LIMITS = {"sigma": (0.0, SIGMA_MAX), "n": (1, 8), "seed": (0, 2**31 - 1), "bpm": (40.0, 240.0)}
MORPH_LIMITS = {"steps": (STEPS_RANGE[0], 16), "bpm": (40.0, 240.0)}


@dataclass(frozen=True)
class Source:
    primer: str | None = None  # an uploaded primer's id
    recording: str | None = None  # or a recording's id


@dataclass(frozen=True)
class VaryRequest:
    vae: str
    source: Source
    sigma: float = 0.5
    n: int = 4
    seed: int = 0
    bpm: float | None = None  # None: the primer's tempo


@dataclass(frozen=True)
class MorphRequest:
    vae: str
    a: Source
    b: Source
    steps: int = 5
    bpm: float | None = None  # None: A's tempo


def _vae_name(data: dict) -> str:
    if not isinstance(data.get("vae"), str):
        raise ConfigError("vae: the name of a VAE folder is required")
    return data["vae"]


def _source(data: dict, prefix: str) -> Source:
    source = Source(**check_source(data, prefix))
    if source.primer is None and source.recording is None:
        raise ConfigError(f"{prefix}a primer is required (an uploaded file's id or a recording's)")
    return source


def parse_vary(data: object) -> VaryRequest:
    """{"vae", "primer" | "recording", "sigma", "n", "seed", "bpm"?}; ConfigError names the bad field."""
    data = check_fields(data, {"vae", "primer", "recording", *VARY_LIMITS}, "vary")
    return VaryRequest(_vae_name(data), _source(data, ""), **check_numbers(data, VARY_LIMITS, ("n", "seed")))


def parse_morph(data: object) -> MorphRequest:
    """{"vae", "a": {"primer" | "recording"}, "b": {...}, "steps", "bpm"?}; ConfigError names the bad field."""
    data = check_fields(data, {"vae", "a", "b", *MORPH_LIMITS}, "morph")
    ends = []
    for end in ("a", "b"):
        if not isinstance(data.get(end), dict):
            raise ConfigError(f"{end}: a primer is required, as {{\"primer\": id}} or {{\"recording\": id}}")
        ends.append(_source(check_fields(data[end], {"primer", "recording"}, "primer", f"{end}: "), f"{end}: "))
    return MorphRequest(_vae_name(data), *ends, **check_numbers(data, MORPH_LIMITS, ("steps",)))


class PhraseLab:
    """Vary and morph for the studio: VAEs loaded once, primers and results kept by the Generator."""

    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        self._vaes: dict[str, Any] = {}

    def _vae(self, name: str) -> Any:
        from liveduet.model.vae_export import load_vae

        models = self.generator.models
        if name not in models:
            raise NotFoundError(f"no model {name!r} (one of: {', '.join(models) or 'none'})")
        if name not in self._vaes:
            self._vaes[name] = load_vae(models[name])  # ModelLoadError (a 400) for a language model
        return self._vaes[name]

    def _phrase(self, source: Source, vae: Any, what: str) -> tuple[list[Event], float]:
        try:
            midi: MidiNotes | None = self.generator.source(source.primer, source.recording)
            assert midi is not None  # parse_* require a source
            return phrase_events(midi, vae), midi.first_bpm
        except MidiFileError as err:
            raise MidiFileError(f"{what} {err}") from err

    def vary(self, req: VaryRequest) -> dict:
        """The primer, then its variations; the kept result (id, notes, phrases: [start s, end s] each)."""
        from liveduet.live.vary import split_windows

        with self.generator.lock:
            vae = self._vae(req.vae)
            events, bpm = self._phrase(req.source, vae, "the primer")
            length = sum(d for _, d in events)
            if length > MAX_VARY_BEATS * TICKS:
                events = split_windows(events, MAX_VARY_BEATS * TICKS)[0]
            phrases = [events, *variations(vae, events, req.sigma, req.n, req.seed)]
        note = (f"the first {MAX_VARY_BEATS} of {length / TICKS:g} beats" if length > MAX_VARY_BEATS * TICKS
                else None)
        return self._keep(req.vae, phrases, req.bpm or bpm, f"liveduet vary sigma={req.sigma:g}", given=1,
                          note=note)

    def morph(self, req: MorphRequest) -> dict:
        from liveduet.live.vary import morph_events

        with self.generator.lock:
            vae = self._vae(req.vae)
            a, bpm = self._phrase(req.a, vae, "A")
            b, _ = self._phrase(req.b, vae, "B")
            phrases = morph_events(vae, a, b, req.steps)
        return self._keep(req.vae, phrases, req.bpm or bpm, "liveduet morph", given=0)

    def _keep(self, name: str, phrases: list[list[Event]], bpm: float, title: str, given: int,
              note: str | None = None) -> dict:
        """Phrases one after another as a kept piece; the first `given` are the user's (part 0)."""
        spb = 60.0 / bpm / TICKS  # seconds per twelfth
        notes: list[list] = []
        bounds: list[list[float]] = []
        pos = 0
        for k, phrase in enumerate(phrases):
            notes += [[round(on * spb, 4), round(off * spb, 4), pitch, VELOCITY, int(k >= given)]
                      for on, off, pitch in events_to_notes(phrase, pos)]
            end = pos + sum(d for _, d in phrase)
            bounds.append([round(pos * spb, 4), round(end * spb, 4)])
            pos = end
        buf = io.BytesIO()
        phrase_midi([e for phrase in phrases for e in phrase], bpm, title).save(file=buf)
        tokens = sum(len(phrase) for phrase in phrases) * 2  # a pitch token and a duration token per event
        return self.generator.keep({"model": name, "bpm": round(bpm, 2), "tokens": tokens, "notes": notes,
                                    "phrases": bounds, "note": note, "midi": buf.getvalue()})
