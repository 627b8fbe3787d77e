"""Variations of a phrase with the phrase VAE: the live answer in vary mode, `liveduet vary`, `morph`.

A teacher's "play my phrase back to me, varied": the phrase is encoded to its posterior mean μ,
moved to z' = μ + σ·ε (ε ~ N(0, I); σ = 0 decodes the phrase itself as the VAE hears it), and
decoded greedily under the token grammar. The variety comes from z', not from sampling tokens.

Pauses. A rest of a bar or more (and any rest before the first note) is the player's pause, not part
of a phrase: it is kept as played, and the stretches between pauses are varied each by itself
(`sounding_runs`). The VAE learnt phrases that start on a note and seldom rest a whole bar; a window
that is mostly silence decodes to notes it never heard (a file of call, pause, response, pause).

Windows. The VAE was trained on `window_beats`-beat phrases (model/vae.py). A longer phrase is
varied window by window: it is cut every `window_beats` beats from its first onset, a note held
across a cut is struck again at the start of the next window, and a last piece shorter than a bar
joins the window before it (with a z of one slice per beat, VAEConfig.latent "beats", it stays a
window of its own: there is no slice for a ninth beat). A phrase (or last window) shorter than
the window is padded by repeating it until it fills the window (cut at the window's end): phrases
repeat, so the encoder hears something like its training data rather than a truncated one. Each
window is decoded to exactly its own length: <eos> is never chosen, and the last note is cut where
the window ends.

Keeping the key (`keep_key`, on by default; `--no-keep-key` on `vary` and `morph`). The model alone
drifts out of the call's key as σ grows (at σ = 2 about a quarter of its notes, models/vary/card.md).
A teacher varying a phrase stays in its key, so decoding may choose only pitch sets whose pitch classes
lie in the call's key scale (Krumhansl–Schmuckler, as music/listening.py measures it) or among the
pitch classes the call itself plays (its own accidentals stay available: σ = 0 still plays them back).
Morph steps keep the nearer end's key. The rule changes which tokens the greedy decoder may pick,
never z: the card reports the model alone next to the model with the rule.

Morph (`morph_events`). A morph starts with A's own window and ends with B's (a player morphing
their phrase into another wants to hear both as played, not as the VAE hears them); the inner steps
are decoded from the spherical path between the two μ. A greedy decode is a step function of z, so
the decode at t = 0.5 can land nearer A than the one at 0.25; each inner step is therefore decoded
at its own t and at a few nearby points, and the steps are chosen as a path whose distance to A only
grows and to B only shrinks (`monotone_path`). The card reports the nominal decodes too.

Invariant: a variation lasts exactly as long as its phrase, in twelfths of a beat.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from liveduet.errors import ModelLoadError
from liveduet.music.listening import edit_similarity, find_key, in_key_share, key_scale
from liveduet.music.tokens import BOS, TICKS, Event, Vocabulary, events_to_notes

if TYPE_CHECKING:  # the VAE is imported when vary mode is used, not by every `liveduet run`
    from liveduet.live.answer import Answer
    from liveduet.live.settings import AnswerSettings
    from liveduet.model.vae_export import VAEModel


def split_windows(events: list[Event], width: int, min_tail: int = 0) -> list[list[Event]]:
    """Events → windows of `width` twelfths (the last may be shorter); a note crossing a cut is cut
    there and struck again in the next window. A last window shorter than `min_tail` joins the one
    before it (a call that overruns its two bars by a beat is one window, not two)."""
    windows: list[list[Event]] = [[]]
    carried: set[int] = set()  # windows that begin with the rest of a note cut at their start
    room = width
    for pitches, dur in events:
        started = False
        while dur > 0:
            if room == 0:
                windows.append([])
                room = width
                if started:
                    carried.add(len(windows) - 1)
            started = True
            take = min(dur, room)
            windows[-1].append((pitches, take))
            dur -= take
            room -= take
    if len(windows) > 1 and sum(d for _, d in windows[-1]) < min_tail:
        tail = windows.pop()
        if len(windows) in carried:  # the note cut at the boundary is whole again
            windows[-1][-1] = (tail[0][0], windows[-1][-1][1] + tail[0][1])
            tail = tail[1:]
        windows[-1] += tail
    return [w for w in windows if w]


def sounding_runs(events: list[Event], min_rest: int) -> list[tuple[list[Event], bool]]:
    """Events → stretches in order, (events, True) that sound and (rests, False): a rest is its own
    stretch when it lasts `min_rest` twelfths or more, or comes before the first note; shorter ones
    stay inside the stretch they interrupt (or end)."""
    runs: list[tuple[list[Event], bool]] = []
    sounding: list[Event] = []
    rest: list[Event] = []

    def close_rest() -> None:
        nonlocal sounding, rest
        if rest and (not sounding or sum(d for _, d in rest) >= min_rest):
            if sounding:
                runs.append((sounding, True))
            runs.append((rest, False))
            sounding = []
        else:
            sounding += rest
        rest = []

    for event in events:
        if event[0]:
            close_rest()
            sounding.append(event)
        else:
            rest.append(event)
    close_rest()
    if sounding:
        runs.append((sounding, True))
    return runs


def fill_window(events: list[Event], width: int) -> list[Event]:
    """The padding rule: a phrase shorter than `width` twelfths, repeated until it fills it, cut there."""
    length = sum(d for _, d in events)
    if length <= 0 or length >= width:
        return list(events)
    out: list[Event] = []
    room = width
    while room > 0:
        for pitches, dur in events:
            take = min(dur, room)
            out.append((pitches, take))
            room -= take
            if room == 0:
                break
    return out


def slerp(a: Tensor, b: Tensor, t: float) -> Tensor:
    """Spherical interpolation between latent vectors (MusicVAE's), linear when they are parallel."""
    an, bn = a / a.norm().clamp_min(1e-12), b / b.norm().clamp_min(1e-12)
    omega = torch.arccos(torch.clamp((an * bn).sum(), -1.0, 1.0))
    if float(omega) < 1e-4:
        return (1 - t) * a + t * b
    so = torch.sin(omega)
    return torch.sin((1 - t) * omega) / so * a + torch.sin(t * omega) / so * b


def beat_notes(events: list[Event]) -> list[tuple[float, float, int, int]]:
    """Events as music/listening.py's notes (onset and end in beats, pitch, velocity)."""
    return [(on / TICKS, off / TICKS, p, 80) for on, off, p in events_to_notes(events)]


def key_pitch_classes(events: list[Event]) -> frozenset[int] | None:
    """The keep-key rule's pitch classes: the phrase's key scale and the classes it plays (None: no notes)."""
    notes = beat_notes(events)
    if not notes:
        return None
    return key_scale(*find_key(notes)) | {n[2] % 12 for n in notes}


class PhraseDecoder:
    """Streams one window's events from a latent z: greedy under the grammar, exactly `length` twelfths;
    with `pitch_classes`, only pitch sets within them (the keep-key rule)."""

    def __init__(self, vae: VAEModel, z: Tensor, length: int, pitch_classes: frozenset[int] | None = None) -> None:
        self.vae, self.z, self.remaining = vae, z, length
        vocab = vae.vocab
        # <eos> is never allowed: we stop at the length
        self.pitch_ok = (vae.pitch_tokens_within(pitch_classes) if pitch_classes is not None
                         else torch.from_numpy(vocab.pitch_mask.copy()))
        self.dur_ok = torch.from_numpy(vocab.duration_mask.copy())
        self.dur_base = vocab.dur_base
        with torch.no_grad():
            self.h = vae.script.start(z)
        self.token = BOS
        self.pos = 0  # twelfths decoded, as the model counts them (its last chosen duration uncut)

    @torch.no_grad()
    def _step(self, allowed: Tensor) -> int:
        self.pos += int(self.vae.durations[self.token])
        logits, self.h = self.vae.script(torch.tensor([self.token]), self.z, self.h, torch.tensor([self.pos]))
        self.token = int(logits[0].masked_fill(~allowed, -math.inf).argmax())  # logits [1, V]
        return self.token

    def next_event(self) -> Event | None:
        """The next event, or None once the window is full."""
        if self.remaining <= 0:
            return None
        pitch = self._step(self.pitch_ok)
        dur = min(self._step(self.dur_ok) - self.dur_base + 1, self.remaining)
        self.remaining -= dur
        return self.vae.vocab.pitches_of(pitch), dur


class Pause:
    """A pause of the call, played back as it is (the same interface as PhraseDecoder)."""

    def __init__(self, rests: list[Event]) -> None:
        self.rests = list(rests)

    def next_event(self) -> Event | None:
        return self.rests.pop(0) if self.rests else None


class Variation:
    """One varied phrase, streamed event by event (an answer's event source in vary mode).

    Every window is encoded when it is made (`encode_ms`), before any of the answer is scheduled: an
    encode is ~4 ms of the engine thread, which in the middle of the answer would make sends late.
    Each event then costs two decoder steps."""

    def __init__(self, vae: VAEModel, events: list[Event], sigma: float, seed: int, keep_key: bool = True) -> None:
        if sigma < 0:
            raise ValueError(f"σ must be >= 0, got {sigma}")
        started = time.perf_counter()
        self.vae, self.sigma = vae, sigma
        self.pitch_classes = key_pitch_classes(events) if keep_key else None
        self.width = vae.cfg.window_beats * TICKS
        self.gen = torch.Generator().manual_seed(seed)
        bar = vae.cfg.bar_beats * TICKS
        # A z of one slice per beat has none for a ninth beat: a tail past the window is its own window.
        tail = 0 if vae.cfg.latent == "beats" else bar
        self.plans: list[tuple[Tensor, int] | list[Event]] = []  # a window's (z', length), or a pause as played
        for run, sounding in sounding_runs(events, bar):
            self.plans += [self._plan(w) for w in split_windows(run, self.width, tail)] if sounding else [run]
        self.decoder: PhraseDecoder | Pause | None = self._start_window()
        self.encode_ms = (time.perf_counter() - started) * 1e3
        self.first_beat_ms: float | None = None  # compute: encoding + decoding the first beat
        self.decoded = 0  # twelfths
        self._busy_ms = self.encode_ms

    def _plan(self, window: list[Event]) -> tuple[Tensor, int]:
        """A window's z' = μ + σ·ε and its length."""
        mu, _ = self.vae.encode(self.vae.vocab.encode(fill_window(window, self.width)))
        return mu + self.sigma * torch.randn(mu.shape, generator=self.gen), sum(d for _, d in window)

    def _start_window(self) -> PhraseDecoder | Pause | None:
        """Start decoding the next window (None when none is left)."""
        if not self.plans:
            return None
        plan = self.plans.pop(0)
        if isinstance(plan, list):
            return Pause(plan)
        return PhraseDecoder(self.vae, plan[0], plan[1], self.pitch_classes)

    def sample_event(self) -> Event | None:
        """The next event of the variation, or None when it has its phrase's length."""
        started = time.perf_counter()
        event = self._next()
        if self.first_beat_ms is None:
            self._busy_ms += (time.perf_counter() - started) * 1e3
            if self.decoded >= TICKS or event is None:
                self.first_beat_ms = self._busy_ms
        return event

    def _next(self) -> Event | None:
        while self.decoder is not None:
            event = self.decoder.next_event()
            if event is not None:
                self.decoded += event[1]
                return event
            self.decoder = self._start_window()
        return None

    def events(self) -> list[Event]:
        """Everything that is left, at once (files: `liveduet vary`)."""
        out: list[Event] = []
        while (event := self.sample_event()) is not None:
            out.append(event)
        return out


def vary_events(vae: VAEModel, events: list[Event], sigma: float, seed: int, keep_key: bool = True) -> list[Event]:
    """A variation of `events` at σ (same length)."""
    return Variation(vae, events, sigma, seed, keep_key).events()


MORPH_NEARBY = (0.0, -0.06, 0.06, -0.12, 0.12, -0.18, 0.18)  # where on the path each inner step may be decoded


def morph_events(vae: VAEModel, a: list[Event], b: list[Event], steps: int, keep_key: bool = True,
                 nominal: bool = False) -> list[list[Event]]:
    """`steps` phrases from A to B (each `window_beats` beats): the first step is A's own window and
    the last B's; the first windows of each are encoded to μ and the inner steps decoded greedily
    from the spherical path between them, each from its own point t or a nearby one (`MORPH_NEARBY`),
    chosen so that the distance to A only grows and the distance to B only shrinks step by step
    (`monotone_path`). With keep_key, a step plays in the nearer end's key (t < 0.5: A's).
    `nominal`: the decoder alone at the nominal points, A's and B's reconstructions at the ends
    (what the card reports as the model alone)."""
    width = vae.cfg.window_beats * TICKS
    wa, wb = (fill_window(split_windows(x, width)[0], width) for x in (a, b))
    za, _ = vae.encode(vae.vocab.encode(wa))
    zb, _ = vae.encode(vae.vocab.encode(wb))
    keys = (key_pitch_classes(wa), key_pitch_classes(wb)) if keep_key else (None, None)
    ts = [k / (steps - 1) if steps > 1 else 0.0 for k in range(steps)]

    def decode(t: float, nominal_t: float) -> list[Event]:
        decoder = PhraseDecoder(vae, slerp(za[0], zb[0], t)[None], width, keys[0] if nominal_t < 0.5 else keys[1])
        return list(iter(decoder.next_event, None))

    if nominal or steps < 2:
        return [decode(t, t) for t in ts]
    # A step stays as much in key as the nearer end itself (or 90 %): the nominal decode always counts.
    scales = [key_scale(*find_key(notes)) if (notes := beat_notes(w)) else None for w in (wa, wb)]
    floors = [min(0.9, in_key(w, scale)) for w, scale in zip((wa, wb), scales, strict=True)]
    options: list[list[list[Event]]] = []
    for t in ts[1:-1]:
        found: list[list[Event]] = []
        for dt in MORPH_NEARBY:
            if 0.0 < t + dt < 1.0 and (events := decode(t + dt, t)) not in found:
                found.append(events)
        end = 0 if t < 0.5 else 1
        options.append([e for k, e in enumerate(found) if k == 0 or in_key(e, scales[end]) >= floors[end]])
    ta, tb = vae.vocab.encode(wa), vae.vocab.encode(wb)
    dist = [[(1 - edit_similarity(ta, vae.vocab.encode(e)), 1 - edit_similarity(tb, vae.vocab.encode(e)))
             for e in found] for found in options]
    end = 1 - edit_similarity(ta, tb)
    choice = monotone_path([[(0.0, end)], *dist, [(end, 0.0)]], ts)
    return [wa, *(options[k][c] for k, c in enumerate(choice[1:-1])), wb]


def in_key(events: list[Event], scale: frozenset[int] | None) -> float:
    """The share of `events`' notes in `scale` (1 when they have no notes or there is no scale)."""
    notes = beat_notes(events)
    if not notes or scale is None:
        return 1.0
    return in_key_share(notes, scale)


def monotone_path(dist: list[list[tuple[float, float]]], ts: list[float]) -> list[int]:
    """One option per step (`dist[k]`: each option's distances to A and to B) such that, step by
    step, the distance to A never falls and the distance to B never rises; the fewest such breaks
    when no path has none, then the options nearest their step's share of the way (t). The first
    option of each step is its nominal one: ties keep it."""
    # best[k][i] = (breaks, deviation, previous option) of the best path ending in option i of step k
    best: list[list[tuple[int, float, int]]] = [[(0, 0.0, -1) for _ in dist[0]]]
    span = max(dist[-1][0][0], 1e-9)
    for k in range(1, len(dist)):
        row = []
        for i, (da, db) in enumerate(dist[k]):
            dev = abs(da / span - ts[k]) + 1e-6 * i
            row.append(min((best[k - 1][j][0] + (da < pa) + (db > pb), best[k - 1][j][1] + dev, j)
                           for j, (pa, pb) in enumerate(dist[k - 1])))
        best.append(row)
    i = min(range(len(best[-1])), key=lambda x: best[-1][x][:2])
    path = [i]
    for k in range(len(dist) - 1, 0, -1):
        i = best[k][i][2]
        path.append(i)
    return path[::-1]


class Varier:
    """Vary mode's side of the engine: σ (the mod wheel in vary mode), the VAE, and each answer's
    Variation. The VAE is loaded once, when vary mode is first needed (at start when it is the mode)."""

    def __init__(self, a: AnswerSettings, vocab: Vocabulary, load: bool, warn: Callable[[str], None]) -> None:
        self.sigma = a.variation
        self.model = a.vary_model  # "" = the default folder (models/vary)
        self.vocab = vocab
        self.warn = warn
        self.vae: VAEModel | None = None
        self.current: Variation | None = None
        self.plan_ms: deque[float] = deque(maxlen=2000)  # encode + first beat decoded, per answer
        if load:
            self.load()  # at start: a missing or foreign folder is one line and exit 2, not a silent fallback

    def load(self) -> VAEModel:
        """The VAE (ModelLoadError, one line, for a missing or foreign folder or another vocabulary)."""
        if self.vae is None:
            from liveduet.model.vae_export import load_vae

            vae = load_vae(self.model or None)
            if vae.vocab.fingerprint() != self.vocab.fingerprint():
                raise ModelLoadError(f"{vae.path} was trained on vocabulary {vae.vocab.fingerprint()}, the "
                                     f"language model uses {self.vocab.fingerprint()}: they cannot share a call")
            self.vae = vae
        return self.vae

    def plan(self, a: Answer, call_tokens: list[int], seed: int) -> None:
        """The answer becomes a variation of the call: as long as the call, streamed from the VAE."""
        self.note_timing()
        events = list(self.vocab.decode(call_tokens))
        if not any(p for p, _ in events):
            return  # nothing to vary: the model answers
        try:
            vae = self.load()
        except ModelLoadError as err:  # switched to vary mode mid-session without a VAE: the model answers
            self.warn(f"vary mode: {err}")
            return
        self.current = Variation(vae, events, self.sigma, seed)
        a.source = self.current
        a.target = a.pos + sum(d for _, d in events)

    def margin_s(self) -> float:
        """How much earlier a varied answer must be planned: its encoding and first beat come before its
        first note (1.5 x the recent worst, 30 ms before any was measured, at most 0.2 s)."""
        self.note_timing()
        recent = list(self.plan_ms)[-50:]
        return min(0.2, 1.5e-3 * max(recent)) if recent else 0.03

    def note_timing(self) -> None:
        """Keep the last variation's encode + first-beat time (once its first beat was decoded)."""
        v = self.current
        if v is not None and v.first_beat_ms is not None:
            self.plan_ms.append(v.first_beat_ms)
            self.current = None
