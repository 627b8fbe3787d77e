"""The answer: what a call leaves behind for it, and how it is played out.

`Call` and `Answer` are the engine's records of one phrase each. `listen` turns a finished call
into what the answer takes up (sampler biases toward its pitch classes, rhythm and register; its
dynamics, articulation and swing). `AnswerPlayer.generate` samples the answer a lookahead ahead of
the playhead and schedules its notes on the player's grid. Invariant: every note-on it schedules
has its note-off scheduled in the same step (the scheduler then guarantees it is sent).
"""

from __future__ import annotations

import bisect
import random
import statistics
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Protocol

import mido

from liveduet.clock import Clock
from liveduet.live import expression
from liveduet.live.scheduler import Scheduler, percentile
from liveduet.live.settings import AnswerSettings, LiveSettings
from liveduet.music import listening
from liveduet.music.stream import StreamTokenizer
from liveduet.music.tokens import TICKS, Event, TokenizerSettings, Vocabulary

SUSTAIN = 64
SEND_GUARD_S = 0.004  # no sampling this close before a scheduled send (see send_imminent)
REGISTER_SPREAD = 1.5  # the answer's register prior is this much wider than the call's spread


class LiveSampler(Protocol):
    """What the engine needs of the model's sampler (liveduet.model.sampling.Sampler)."""

    temperature: float

    def feed(self, token: int) -> None: ...
    def reset(self) -> None: ...
    def sample_event(self) -> Event: ...
    def checkpoint(self) -> object: ...
    def restore(self, checkpoint: object) -> None: ...
    def set_pitch_classes(self, allowed: set[int] | frozenset[int] | None) -> None: ...
    def follow_pitch_classes(self, weights: list[float] | None, strength: float) -> None: ...
    def follow_durations(self, counts: dict[int, float] | None, strength: float) -> None: ...
    def follow_register(self, mean: float | None, spread: float, strength: float) -> None: ...
    def set_complexity(self, value: float) -> None: ...


class EventSource(Protocol):
    """Where an answer's events come from instead of the model's sampler (vary mode: live/vary.py)."""

    def sample_event(self) -> Event | None: ...


@dataclass
class Call:
    t0: float  # first note, seconds
    bpm: float  # tempo its tokens were made with
    messages: list[tuple[float, mido.Message]] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    velocities: list[int] = field(default_factory=list)
    onsets: list[float] = field(default_factory=list)
    checkpoint: object = None  # the sampler before the call: to re-prime at another tempo
    resume: tuple | None = None  # everything END_CALL changed, to undo it if the call goes on (ENTERING)
    release: tuple[float, ...] | None = None  # (silence start, tempo, usual gap s, margin s): entry planning


@dataclass
class Answer:
    number: int
    tag: str
    start: float  # seconds: a beat of the player's grid
    period: float  # seconds per beat
    target: int  # length, twelfths of a beat
    velocity: int
    phrase_end: float
    pos: int = 0  # twelfths generated so far
    first_pos: int = 0  # where the first note may sound: 6 when entering on the "and" of the beat
    tokens: list[int] = field(default_factory=list)
    first_due: float | None = None
    first_sent: float | None = None
    lateness: list[float] = field(default_factory=list)
    step_ms: list[float] = field(default_factory=list)
    echo: list[Event] | None = None  # echo mode: the call's events, played back instead of sampled
    source: EventSource | None = None  # vary mode: the call's variation, streamed instead of the model's
    expr: expression.Expression = field(default_factory=expression.Expression)

    def beat_time(self, twelfths: float) -> float:
        """When a position of the answer sounds: on the grid, swung as the call was."""
        return self.start + self.expr.warp(twelfths / TICKS) * self.period

    @property
    def end(self) -> float:
        return self.start + self.pos / TICKS * self.period

    def time_of(self, twelfths: float) -> float:
        return self.start + twelfths / TICKS * self.period


def call_notes(call: Call, end: float, bpm: float) -> list[listening.Note]:
    """The call as notes, in beats from its first note (still-held notes end at `end`)."""
    to_beats = bpm / 60.0
    open_: dict[int, tuple[float, int]] = {}
    notes = []
    for t, m in call.messages:
        if m.type == "note_on":
            open_[m.note] = (t, m.velocity)
        elif m.type == "note_off" and m.note in open_:
            on, vel = open_.pop(m.note)
            notes.append(((on - call.t0) * to_beats, (t - call.t0) * to_beats, m.note, vel))
    notes += [((on - call.t0) * to_beats, (end - call.t0) * to_beats, p, v) for p, (on, v) in open_.items()]
    return sorted(notes)


def listen(sampler: LiveSampler, a: AnswerSettings, vocab: Vocabulary, call: Call,
           notes: list[listening.Note]) -> expression.Expression:
    """What the answer takes from the call: its pitch classes, note lengths and register (biases on
    the sampler, of the configured strengths) and its dynamics, articulation and swing."""
    sampler.follow_pitch_classes(listening.pc_histogram(notes) if notes else None, a.follow)
    durations = Counter(d for p, d in vocab.decode(call.tokens) if p)
    sampler.follow_durations(dict(durations), a.follow_rhythm)
    pitches = [n[2] for n in notes]
    mean = statistics.fmean(pitches) if pitches else None
    spread = statistics.pstdev(pitches) if len(pitches) > 1 else 0.0
    sampler.follow_register(mean, spread * REGISTER_SPREAD, a.follow_register)
    if not a.mirror:
        return expression.Expression(articulation=a.articulation)
    return expression.from_call(notes, a.articulation)


class AnswerPlayer:
    """Samples answers ahead of the playhead and schedules their notes."""

    def __init__(self, settings: LiveSettings, vocab: Vocabulary, sampler: LiveSampler, scheduler: Scheduler,
                 rng: random.Random, clock: Clock | None) -> None:
        self.s = settings
        self.vocab = vocab
        self.sampler = sampler
        self.scheduler = scheduler
        self.rng = rng
        self.clock = clock
        self.step_ms: deque[float] = deque(maxlen=2000)  # every model step of the session, bounded
        self.notes = 0  # answer notes scheduled

    def generate(self, a: Answer, now: float) -> None:
        """Sample events until the answer reaches `lookahead_s` past now, or its length."""
        horizon = now + self.s.answer.lookahead_s
        ch = self.s.answer.channel
        while a.pos < a.target and a.time_of(a.pos) < horizon:
            if a.echo is None and self.send_imminent(a):
                break  # the next tick samples; this one leaves the GIL to the scheduler's send
            if a.echo is not None:
                if not a.echo:
                    break
                pitches, dur = a.echo.pop(0)
            else:
                started = time.perf_counter()
                event = (a.source or self.sampler).sample_event()
                if event is None:  # the model ended the piece: the answer ends here
                    a.target = a.pos
                    break
                pitches, dur = event
                elapsed = (time.perf_counter() - started) * 1e3 / 2  # two model steps per event
                self.step_ms.extend((elapsed, elapsed))
                a.step_ms.extend((elapsed, elapsed))
            a.tokens.extend(self.vocab.encode([(pitches, dur)]))
            if not pitches and a.pos == a.first_pos:
                continue  # an answer starts with a note, not with silence
            dur = min(dur, a.target - a.pos)
            on = a.beat_time(a.pos)
            off = a.beat_time(a.pos + dur * a.expr.articulation)
            rel = (a.pos - a.first_pos) / max(1, a.target - a.first_pos)
            level = a.expr.velocity_at(rel) if a.expr.contour else a.velocity
            for p in pitches:
                vel = self.rng.randint(-self.s.answer.velocity_spread, self.s.answer.velocity_spread)
                vel = min(127, max(1, level + vel))
                self.scheduler.schedule(on, mido.Message("note_on", channel=ch, note=p, velocity=vel), a.tag)
                self.scheduler.schedule(off, mido.Message("note_off", channel=ch, note=p), a.tag)
                self.notes += 1
                if a.first_due is None:
                    a.first_due = on
            a.pos += dur
            if len(a.tokens) > 4 * a.target:  # rests of length 0 cannot occur; this is a guard
                break

    def send_imminent(self, a: Answer) -> bool:
        """True when a scheduled message is due within SEND_GUARD_S and the answer has slack:
        sampling then (Python holding the GIL ~0.3 ms per step) would make that send late."""
        if self.clock is None:
            return False
        now = self.clock.now()
        due = self.scheduler.next_due()
        return due is not None and 0 <= due - now < SEND_GUARD_S and a.time_of(a.pos) - now > 4 * SEND_GUARD_S


def retokenize(call: Call, bpm: float, end: float, settings: TokenizerSettings, window_beats: float) -> list[Event]:
    """The call's events again, at the tempo heard over the whole call (the engine re-primes with them)."""
    tok = StreamTokenizer(settings, window_beats, performed=True)
    events: list[Event] = []
    scale = bpm / 60.0
    for t, msg in call.messages:
        events += tokenize_message(tok, (t - call.t0) * scale, msg)
    return events + tok.flush((end - call.t0) * scale)


def answer_stats(a: Answer, stopped: bool, bpm: float, call_tokens: int) -> dict:
    """One answer's timing figures (`run --stats`, one JSON line each)."""
    late = sorted(a.lateness)
    steps = sorted(a.step_ms)
    return {
        "answer": a.number,
        "stopped": stopped,
        "bpm": round(bpm, 2),
        "phrase_end": a.phrase_end,
        "scheduled_first": a.first_due,
        "actual_first": a.first_sent,
        "first_late_ms": None if a.first_sent is None or a.first_due is None
        else round((a.first_sent - a.first_due) * 1e3, 3),
        "start_after_phrase_end_ms": round((a.start - a.phrase_end) * 1e3, 1),
        "tokens": len(a.tokens),
        "call_tokens": call_tokens,
        "step_ms_p50": summary_pct(steps, 50),
        "step_ms_p99": summary_pct(steps, 99),
        "late_ms_p50": summary_pct(late, 50, 1e3),
        "late_ms_p99": summary_pct(late, 99, 1e3),
        "late_ms_max": round(late[-1] * 1e3, 3) if late else None,
        "late_ms": [round(x * 1e3, 3) for x in a.lateness],  # every message, in order: pool answers for a p99
        "messages": len(late),
    }


def tokenize_message(tok: StreamTokenizer, beat: float, msg: mido.Message) -> list[Event]:
    """One player message into the streaming tokenizer; the events it completes."""
    if msg.type == "note_on":
        return tok.note_on(beat, msg.note)
    if msg.type == "note_off":
        return tok.note_off(beat, msg.note)
    if msg.type == "control_change" and msg.control == SUSTAIN:
        return tok.pedal(beat, msg.value >= 64)
    return []


def articulation_of(messages: list[tuple[float, mido.Message]], chord_window: float) -> float:
    """The median share of the time to the next onset that the player holds a note (1: legato);
    1.0 until two onsets are known."""
    onsets: list[float] = []
    held: dict[int, float] = {}
    notes: list[tuple[float, float]] = []  # (onset, release)
    for t, m in messages:
        if m.type == "note_on":
            if not onsets or t - onsets[-1] > chord_window:
                onsets.append(t)
            held[m.note] = t
        elif m.type == "note_off" and m.note in held:
            notes.append((held.pop(m.note), t))
    shares = []
    for on, off in notes:
        i = bisect.bisect_right(onsets, on + chord_window)
        if i < len(onsets):
            shares.append(min(1.0, (off - on) / (onsets[i] - on)))
    return statistics.median(shares) if shares else 1.0


def summary_pct(sorted_xs: list[float], q: float, scale: float = 1.0) -> float | None:
    """A rounded percentile of an ascending list (the scheduler's `percentile`), None when empty."""
    if not sorted_xs:
        return None
    return round(percentile(sorted_xs, q) * scale, 4)
