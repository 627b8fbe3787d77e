"""The engine: the player's events in, the answer's notes scheduled out.

It owns the state machine (phrase.py), the streaming tokenizer (the one training used), the
sampler with its cached model state, and the answer plan. It is driven by two calls from one
thread — `handle(t, msg)` for each input message and `tick(now)` between them — and never sleeps,
so tests drive it with a manual clock and a fake port, microsecond by microsecond.

Timing: the call's tokens are stepped through the model as they are played, so when the call
ends only the answer is left to compute; the answer is generated `lookahead_s` ahead of the
playhead, never all at once, on the player's beat grid (anchored at the call's first note).
"""

from __future__ import annotations

import bisect
import copy
import math
import random
import statistics
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import mido

from liveduet.live import entry, expression, memory
from liveduet.live.clock import Clock
from liveduet.live.listener import CLOCK_TYPES
from liveduet.live.midiclock import MidiClockFollower
from liveduet.live.phrase import Action, Input, State, transition
from liveduet.live.scheduler import Scheduler, percentile
from liveduet.live.settings import LiveSettings
from liveduet.live.tempo import estimate_bpm
from liveduet.music import listening
from liveduet.music.theory import best_major, major_scale, scale_name
from liveduet.music.tokens import TICKS, Event, StreamTokenizer, Vocabulary

SUSTAIN = 64
RETEMPO = 0.08  # re-tokenize the call when its estimated tempo differs by more than this share
SEND_GUARD_S = 0.004  # no sampling this close before a scheduled send (see _send_imminent)
REGISTER_SPREAD = 1.5  # the answer's register prior is this much wider than the call's spread
ENTRY_WINDOW_S = 0.015  # a bar-line entry is planned within this long before its margin runs out
IDLE_BEATS = 8  # no input at all for this long ends a call even with keys down (lost note-offs)


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
    expr: expression.Expression = field(default_factory=expression.Expression)

    def beat_time(self, twelfths: float) -> float:
        """When a position of the answer sounds: on the grid, swung as the call was."""
        return self.start + self.expr.warp(twelfths / TICKS) * self.period

    @property
    def end(self) -> float:
        return self.start + self.pos / TICKS * self.period

    def time_of(self, twelfths: float) -> float:
        return self.start + twelfths / TICKS * self.period


@dataclass(frozen=True)
class EngineSnapshot:
    """An immutable view for the dashboard and logs."""

    state: str
    bpm: float
    beat: float  # beats since the call's first note (or the answer's start)
    temperature: float
    length_ratio: float
    call_tokens: tuple[str, ...]
    answer_tokens: tuple[str, ...]
    calls: int
    answers: int
    player_notes: int
    answer_notes: int
    step_p50_ms: float
    step_p99_ms: float
    warnings: tuple[str, ...]
    mode: str = "call"
    lock: str | None = None  # the scale answers keep to, when locked
    clock_source: str = "estimated"  # "fixed" | "estimated" | "metronome" | "midi clock"


class Engine:
    def __init__(
        self,
        settings: LiveSettings,
        vocab: Vocabulary,
        sampler: LiveSampler,
        scheduler: Scheduler,
        log: Callable[[str], None] = lambda line: None,
        on_answer: Callable[[dict], None] | None = None,
        seed: int | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.s = settings
        self.clock = clock
        self.vocab = vocab
        self.sampler = sampler
        self.scheduler = scheduler
        self.log = log
        self.on_answer = on_answer
        self.rng = random.Random(seed)
        self.state = State.LISTENING
        self.bpm = settings.tempo.bpm or settings.tempo.initial_bpm
        self.temperature = settings.answer.temperature
        self.length_ratio = settings.answer.length_ratio
        sampler.temperature = self.temperature
        self.keys: set[tuple[int, int]] = set()
        self.pedal = False
        self.silent_since: float | None = None
        self.last_input = 0.0
        self.call: Call | None = None
        self.tokenizer = StreamTokenizer(vocab.settings)
        self.answer: Answer | None = None
        self.last_answer_tokens: list[int] = []
        self.last_profile: memory.CallProfile | None = None  # the previous call's key and register
        self.entry_target: int | None = None  # the beat a likely end was planned on
        self.calls = self.answers = self.player_notes = self.answer_notes = 0
        self.step_ms: deque[float] = deque(maxlen=2000)
        self.warnings: deque[str] = deque(maxlen=5)
        self.mode = settings.practice.mode
        self.lock: str | None = None
        self.midi_clock = MidiClockFollower() if settings.tempo.follow_clock else None
        # A global beat grid (metronome, count-in, MIDI clock): calls and answers sit on it.
        self.grid_t0: float | None = None
        self.next_click = 0
        self.clicks_until: int | None = None  # last click index to play (count-in only), None: forever

    def start(self, now: float) -> None:
        """The session starts: a count-in and/or the metronome put a beat grid in place."""
        r = self.s.practice
        if r.count_in_bars or r.metronome:
            self.grid_t0 = now + 0.3
            self.next_click = 0
            self.clicks_until = None if r.metronome else r.count_in_bars * r.beats_per_bar - 1
            self.log(f"{'count-in' if r.count_in_bars else 'metronome'} at {self.bpm:.0f} bpm")

    @property
    def grid_fixed(self) -> bool:
        """Tempo set from outside (fixed, metronome, MIDI clock): never estimated from calls."""
        return bool(self.s.tempo.bpm) or self.grid_t0 is not None
    # ---- input ------------------------------------------------------------------------------------

    def handle(self, t: float, msg: mido.Message) -> None:
        """One message from the player (already stamped, hygiene already filtered)."""
        if msg.type in CLOCK_TYPES:
            self._follow_clock(t, msg)
            return
        self.last_input = t
        c = self.s.controls
        if msg.type == "control_change":
            if msg.control == c.lock_cc:
                self._lock(self._call_key() if msg.value >= 64 else None)
                return
            if msg.control == c.temperature_cc:
                self.set_temperature(0.1 + 1.9 * msg.value / 127)
                return
            if msg.control == c.length_cc:
                self.length_ratio = round(0.25 + 1.75 * msg.value / 127, 2)
                return
            if msg.control == c.panic_cc:
                self._apply(Input.PANIC, t, msg)
                return
            if self.s.phrase.end_gesture == "cc" and msg.control == self.s.phrase.end_cc:
                if msg.value >= 64 and self.state is State.CALLING:
                    self._apply(Input.END_GESTURE, t, msg)
                return
            if msg.control == SUSTAIN:
                down = msg.value >= 64
                released = self.pedal and not down
                self.pedal = down
                self._apply(Input.NOTE_OFF, t, msg)
                if released and self.s.phrase.end_gesture == "pedal" and self.state is State.CALLING:
                    self._apply(Input.END_GESTURE, t, msg)
            return
        if msg.type in ("note_on", "note_off") and not self._in_range(msg.note):
            # Beyond a piano's 88 keys: keyswitches (and test probes), passed thru, never a call.
            if msg.type == "note_on" and c.keyswitches and msg.note < self.vocab.settings.min_pitch:
                self._lock(msg.note if msg.note < 12 else None)
            return
        if msg.type == "note_on":
            self.keys.add((msg.channel, msg.note))
            self.silent_since = None
            self.player_notes += 1
            self._check_started(t)
            self._apply(Input.NOTE_ON, t, msg)
        elif msg.type == "note_off":
            self.keys.discard((msg.channel, msg.note))
            self._update_silence(t)
            self._apply(Input.NOTE_OFF, t, msg)

    def set_temperature(self, value: float) -> None:
        self.temperature = round(min(2.0, max(0.1, value)), 2)
        self.sampler.temperature = self.temperature

    def panic(self, t: float) -> None:
        self._apply(Input.PANIC, t, None)

    def tick(self, now: float) -> None:
        """Time passes: close chords, detect the end of the call, generate ahead, finish answers."""
        if self.grid_t0 is not None:
            self._click(now)
        if self.state is State.CALLING and self.call is not None:
            self._feed(self.tokenizer.advance(self._beat(now)))
            beat = 60.0 / self.bpm
            bars = self.s.practice.call_bars
            if bars and now >= self.call.t0 + bars * self.s.practice.beats_per_bar * beat:
                self._apply(Input.END_GESTURE, now, None)
                return
            a = self.answer
            if a is not None:  # accompanying: one more beat whenever the playhead nears the end
                while a.time_of(a.target) < now + self.s.answer.lookahead_s + beat:
                    a.target += TICKS
                self._generate(now)
            silence = self.s.phrase.silence_beats * beat
            if self.silent_since is not None and now - self.silent_since >= silence:
                self._apply(Input.SILENCE, now, None)
            elif self.silent_since is not None and self._likely_end(now):
                self._apply(Input.LIKELY_END, now, None)
            elif now - self.last_input >= max(2 * silence, IDLE_BEATS * beat):
                # Keys "held" with nothing else happening: a note-off was lost (an unplugged
                # cable, a dropped event). The call must still end, and those keys are forgotten.
                self.warnings.append(f"keys without note-off: {sorted(n for _, n in self.keys)}")
                self.keys.clear()
                self.silent_since = self.last_input
                self._apply(Input.SILENCE, now, None)
        if self.state is State.ENTERING:
            self._check_started(now)
        if self.state in (State.ANSWERING, State.ENTERING) and self.answer is not None:
            self._generate(now)
            a = self.answer
            if a.pos >= a.target and now >= a.end:
                self._finish_answer(now, stopped=False)
                self._apply(Input.ANSWER_DONE, now, None)

    def wait_hint(self) -> float:
        """How long the engine thread may wait for input before the next `tick` matters."""
        return 0.1 if self.state is State.LISTENING else 0.005

    # ---- the state machine's actions ------------------------------------------------------------

    def _apply(self, event: Input, t: float, msg: mido.Message | None) -> None:
        before = self.state
        step = transition(self.state, event, self.s.phrase.barge_in, accompany=self.mode == "accompany")
        self.state = step.state
        for action in step.actions:
            if action is Action.START_CALL:
                self._start_call(t)
            elif action is Action.FEED and msg is not None:
                self._feed_message(t, msg)
            elif action is Action.END_CALL:
                self._end_call(t)
            elif action is Action.STOP_ANSWER:
                self._finish_answer(t, stopped=True)
            elif action is Action.RESUME_CALL:
                self._resume_call(t)
            elif action is Action.START_ACCOMPANIMENT:
                self._start_accompaniment(t)
            elif action is Action.END_ACCOMPANIMENT:
                self._end_accompaniment(t)
            elif action is Action.PANIC:
                self._panic(t)
        if self.state is not before:
            self.log(f"{before.value} → {self.state.value} ({event.value})")

    def _start_call(self, t: float) -> None:
        self.calls += 1
        if self.s.answer.memory == "call":
            self.sampler.reset()  # this call is heard from a fresh state
        checkpoint = self.sampler.checkpoint()
        if self.grid_t0 is not None:  # the call's beats are the grid's beats, not its first note's
            period = 60.0 / self.bpm
            t = self.grid_t0 + math.floor((t - self.grid_t0) / period + 0.1) * period
        self.call = Call(t0=t, bpm=self.bpm, checkpoint=checkpoint)
        self.tokenizer = StreamTokenizer(self.vocab.settings, self._window_beats(self.bpm), performed=True)

    def _feed_message(self, t: float, msg: mido.Message) -> None:
        call = self.call
        if call is None:
            return
        call.messages.append((t, msg))
        beat = self._beat(t)
        self._feed(self.tokenizer.advance(beat))
        if msg.type == "note_on":
            call.velocities.append(msg.velocity)
            if not call.onsets or t - call.onsets[-1] > self.vocab.settings.chord_window:
                call.onsets.append(t)
        self._feed(tokenize_message(self.tokenizer, beat, msg))

    def _feed(self, events: list[Event]) -> None:
        if events and self.call is not None:
            self._feed_tokens(self.vocab.encode(events))

    def _feed_tokens(self, tokens: list[int]) -> None:
        assert self.call is not None
        for token in tokens:
            started = time.perf_counter()
            self.sampler.feed(token)
            self.step_ms.append((time.perf_counter() - started) * 1e3)
            self.call.tokens.append(token)

    def _end_call(self, now: float) -> None:
        call = self.call
        assert call is not None
        end = self.silent_since if self.silent_since is not None else now
        call.resume = (self.sampler.checkpoint(), copy.deepcopy(self.tokenizer), len(call.tokens), call.bpm,
                       self.bpm, self.last_profile)
        self._feed(self.tokenizer.flush(self._beat(end)))
        if not self.grid_fixed:
            bpm = estimate_bpm(call.onsets, call.bpm, self.s.tempo.min_bpm, self.s.tempo.max_bpm)
            if abs(bpm / call.bpm - 1) > RETEMPO:
                self._retokenize(call, bpm, end)
            self.bpm = bpm
        self._choose_context(call)
        period = 60.0 / self.bpm
        call_beats = (end - call.t0) / period
        beats = min(self.s.answer.max_beats, max(self.s.answer.min_beats, call_beats * self.length_ratio))
        beats = max(1, math.ceil(beats - 0.25))  # whole beats: the answer ends on the grid
        margin = self._start_margin()
        now = self.clock.now() if self.clock is not None else now  # the estimate took time too
        anchor = self.grid_t0 if self.grid_t0 is not None else call.t0
        entry_at: float = math.ceil((now + margin - anchor) / period)  # beats from the anchor
        target, self.entry_target = self.entry_target, None
        if target is not None and anchor + target * period >= now + margin:
            entry_at = target  # a predicted end (live/entry.py): the bar line, or its "and"
        k = math.floor(entry_at)
        first = round((entry_at - k) * TICKS)
        if self.mode != "echo":
            self._feed_gap(call, anchor + k * period, first)
        velocity = round(statistics.fmean(call.velocities)) if call.velocities else 80
        self.answers += 1
        self.answer = Answer(
            number=self.answers, tag=f"answer-{self.answers}", start=anchor + k * period, period=period,
            target=beats * TICKS + first, velocity=velocity, phrase_end=now, pos=first, first_pos=first,
            expr=self._listen(call, end),
        )
        if self.mode == "echo":
            self.answer.echo = list(self.vocab.decode(call.tokens))
            self.answer.target = sum(d for _, d in self.answer.echo)
        self.log(
            f"call {self.calls}: {len(call.tokens)} tokens, {call_beats:.1f} beats at {self.bpm:.0f} bpm; "
            f"answering {beats} beats"
        )
        self._generate(now)

    def _start_margin(self) -> float:
        """How far ahead of its first note an answer is planned, so that sampling the first event
        cannot make it late even on a loaded machine: the margin + a few recent worst-case steps."""
        recent = sorted(list(self.step_ms)[-200:])
        return self.s.answer.start_margin_s + min(0.5, 4e-3 * (summary_pct(recent, 99) or 0.0))

    def _feed_gap(self, call: Call, start: float, first: int) -> None:
        """The model hears the silence between the call's last event and the answer as a rest, so
        the answer's first event sits where the model thinks it does in the bar."""
        heard = sum(d for _, d in self.vocab.decode(call.tokens))  # twelfths from the call's first note
        gap = round((start - call.t0) / (60.0 / self.bpm) * TICKS) + first - heard
        if gap > 0:
            self._feed([((), min(gap, self.vocab.settings.max_duration))])

    def _likely_end(self, now: float) -> bool:
        """Whether the silent call seems to end on a coming beat (live/entry.py); remembers the beat."""
        call = self.call
        if (call is None or self.silent_since is None or not self.s.phrase.early_entry or self.s.practice.call_bars
                or self.s.phrase.end_gesture != "silence" or self.mode == "accompany"):
            return False
        if call.release is None or call.release[0] != self.silent_since:
            bpm = self.bpm if self.grid_fixed else estimate_bpm(call.onsets, call.bpm, self.s.tempo.min_bpm,
                                                                 self.s.tempo.max_bpm)
            call.release = (self.silent_since, bpm, _articulation(call.messages, self.vocab.settings.chord_window),
                            self._start_margin())
        _, bpm, articulation, margin_s = call.release
        anchor = self.grid_t0 if self.grid_t0 is not None else call.t0
        to_beats = bpm / 60.0
        target = entry.entry_beat((call.onsets[-1] - anchor) * to_beats, (self.silent_since - anchor) * to_beats,
                                  (now - anchor) * to_beats, margin_s * to_beats, ENTRY_WINDOW_S * to_beats,
                                  self.s.practice.beats_per_bar, self.s.phrase.entry_silence_beats, articulation)
        self.entry_target = target
        return target is not None

    def _check_started(self, now: float) -> None:
        a = self.answer
        if self.state is State.ENTERING and a is not None and a.first_due is not None and now >= a.first_due:
            self._apply(Input.ANSWER_STARTED, now, None)

    def _resume_call(self, t: float) -> None:
        """The call went on before the planned answer sounded: undo END_CALL, silently."""
        a, self.answer = self.answer, None
        call = self.call
        if a is not None:
            self.scheduler.cancel(a.tag)
            self.answers -= 1
            self.answer_notes -= sum(len(p) for p, _ in self.vocab.decode(a.tokens)) if a.echo is None else 0
        if call is None or call.resume is None:
            return
        checkpoint, tokenizer, n_tokens, call.bpm, self.bpm, self.last_profile = call.resume
        self.sampler.restore(checkpoint)
        self.tokenizer = tokenizer
        del call.tokens[n_tokens:]
        call.resume = None
        self.log("the call goes on")

    def _choose_context(self, call: Call) -> None:
        """[answer] memory: keep what came before this call, or hear it from a fresh state."""
        policy = self.s.answer.memory
        current = memory.profile(m.note for _, m in call.messages if m.type == "note_on")
        keep = memory.keep_context(policy, self.last_profile, current)
        self.last_profile = current
        if policy == "auto" and not keep:
            self.sampler.reset()
            tokens, call.tokens = call.tokens, []
            self._feed_tokens(tokens)

    def _call_notes(self, call: Call, end: float) -> list[listening.Note]:
        """The call as notes, in beats from its first note (still-held notes end at `end`)."""
        to_beats = self.bpm / 60.0
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

    def _listen(self, call: Call, end: float) -> expression.Expression:
        """What the answer takes from the call: its pitch classes (a bias on the sampler) and its
        dynamics, articulation and swing (or the configured plain ones)."""
        a = self.s.answer
        notes = self._call_notes(call, end)
        self.sampler.follow_pitch_classes(listening.pc_histogram(notes) if notes else None, a.follow)
        durations = Counter(d for p, d in self.vocab.decode(call.tokens) if p)
        self.sampler.follow_durations(dict(durations), a.follow_rhythm)
        pitches = [n[2] for n in notes]
        mean = statistics.fmean(pitches) if pitches else None
        spread = statistics.pstdev(pitches) if len(pitches) > 1 else 0.0
        self.sampler.follow_register(mean, spread * REGISTER_SPREAD, a.follow_register)
        if not a.mirror:
            return expression.Expression(articulation=a.articulation)
        return expression.from_call(notes, a.articulation)

    def _retokenize(self, call: Call, bpm: float, end: float) -> None:
        """The call's tokens again at the tempo heard over the whole call, and the model re-primed."""
        self.sampler.restore(call.checkpoint)
        window = self._window_beats(bpm)
        tok = StreamTokenizer(self.vocab.settings, window, performed=True)
        events: list[Event] = []
        scale = bpm / 60.0
        for t, msg in call.messages:
            events += tokenize_message(tok, (t - call.t0) * scale, msg)
        events += tok.flush((end - call.t0) * scale)
        call.tokens = []
        call.bpm = bpm
        self._feed(events)

    def _generate(self, now: float) -> None:
        """Sample events until the answer reaches `lookahead_s` past now, or its length."""
        a = self.answer
        if a is None:
            return
        horizon = now + self.s.answer.lookahead_s
        ch = self.s.answer.channel
        while a.pos < a.target and a.time_of(a.pos) < horizon:
            if a.echo is None and self._send_imminent(a):
                break  # the next tick samples; this one leaves the GIL to the scheduler's send
            if a.echo is not None:
                if not a.echo:
                    break
                pitches, dur = a.echo.pop(0)
            else:
                started = time.perf_counter()
                event = self.sampler.sample_event()
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
                self.answer_notes += 1
                if a.first_due is None:
                    a.first_due = on
            a.pos += dur
            if len(a.tokens) > 4 * a.target:  # rests of length 0 cannot occur; this is a guard
                break

    def _send_imminent(self, a: Answer) -> bool:
        """True when a scheduled message is due within SEND_GUARD_S and the answer has slack:
        sampling then (Python holding the GIL ~0.3 ms per step) would make that send late."""
        if self.clock is None:
            return False
        now = self.clock.now()
        due = self.scheduler.next_due()
        return due is not None and 0 <= due - now < SEND_GUARD_S and a.time_of(a.pos) - now > 4 * SEND_GUARD_S

    def _start_accompaniment(self, t: float) -> None:
        """Accompany mode: play along from the next beat, one beat generated ahead at a time."""
        call = self.call
        assert call is not None
        period = 60.0 / self.bpm
        anchor = self.grid_t0 if self.grid_t0 is not None else call.t0
        k = math.floor((t - anchor) / period) + 1
        self.answers += 1
        self.answer = Answer(number=self.answers, tag=f"answer-{self.answers}", start=anchor + k * period,
                             period=period, target=TICKS, velocity=80, phrase_end=t)

    def _end_accompaniment(self, now: float) -> None:
        self._feed(self.tokenizer.flush(self._beat(now)))
        self._finish_answer(now, stopped=True)

    def _click(self, now: float) -> None:
        """Metronome / count-in clicks, scheduled ahead on the absolute grid (no drift)."""
        r = self.s.practice
        period = 60.0 / self.bpm
        while self.clicks_until is None or self.next_click <= self.clicks_until:
            due = self.grid_t0 + self.next_click * period
            if due >= now + self.s.answer.lookahead_s:
                break
            if due >= now - period / 2:  # after a stall, skip clicks rather than burst them
                note = r.click_accent if self.next_click % r.beats_per_bar == 0 else r.click_note
                ch = r.click_channel
                self.scheduler.schedule(due, mido.Message("note_on", channel=ch, note=note, velocity=r.click_velocity),
                                        "metronome")
                self.scheduler.schedule(due + min(0.05, period / 4), mido.Message("note_off", channel=ch, note=note),
                                        "metronome")
            self.next_click += 1

    def _follow_clock(self, t: float, msg: mido.Message) -> None:
        if self.midi_clock is None:
            return
        self.midi_clock.feed(t, msg)
        bpm = self.midi_clock.bpm
        if self.midi_clock.running and bpm and self.midi_clock.beat_zero is not None:
            if self.grid_t0 is None:
                self.log(f"following MIDI clock at {bpm:.1f} bpm")
            self.bpm = min(self.s.tempo.max_bpm, max(self.s.tempo.min_bpm, bpm))
            self.grid_t0 = self.midi_clock.beat_zero
            if self.clicks_until is None and not self.s.practice.metronome:
                self.clicks_until = -1  # MIDI clock gives a grid, not clicks
                self.next_click = 0

    def _call_key(self) -> int | None:
        """The key of the current (or last) call, from every note struck in it."""
        messages = self.call.messages if self.call else []
        return best_major(m.note for _, m in messages if m.type == "note_on")

    def _lock(self, tonic: int | None) -> None:
        self.sampler.set_pitch_classes(None if tonic is None else set(major_scale(tonic)))
        self.lock = None if tonic is None else scale_name(tonic)
        self.log(f"scale lock: {self.lock or 'off'}")

    def on_sent(self, msg: mido.Message, due: float, actual: float) -> None:
        """The scheduler's hook (its thread): lateness of the answer's messages."""
        a = self.answer
        if a is None:
            return
        a.lateness.append(actual - due)
        if a.first_sent is None and msg.type == "note_on" and a.first_due is not None and due <= a.first_due:
            a.first_sent = actual

    def _finish_answer(self, now: float, stopped: bool) -> None:
        a, self.answer = self.answer, None
        if a is None:
            return
        if stopped:
            self.scheduler.cancel(a.tag)
        self.last_answer_tokens = a.tokens
        self.log(f"answer {a.number}: {'stopped' if stopped else 'done'}, {len(a.tokens)} tokens")
        if self.on_answer is not None:
            late = sorted(a.lateness)
            steps = sorted(a.step_ms)
            self.on_answer({
                "answer": a.number,
                "stopped": stopped,
                "bpm": round(self.bpm, 2),
                "phrase_end": a.phrase_end,
                "scheduled_first": a.first_due,
                "actual_first": a.first_sent,
                "first_late_ms": None if a.first_sent is None or a.first_due is None
                else round((a.first_sent - a.first_due) * 1e3, 3),
                "start_after_phrase_end_ms": round((a.start - a.phrase_end) * 1e3, 1),
                "tokens": len(a.tokens),
                "call_tokens": len(self.call.tokens) if self.call else 0,
                "step_ms_p50": summary_pct(steps, 50),
                "step_ms_p99": summary_pct(steps, 99),
                "late_ms_p50": summary_pct(late, 50, 1e3),
                "late_ms_p99": summary_pct(late, 99, 1e3),
                "late_ms_max": round(late[-1] * 1e3, 3) if late else None,
                "messages": len(late),
            })

    def _panic(self, t: float) -> None:
        if self.answer is not None:
            self._finish_answer(t, stopped=True)
        self.scheduler.panic()
        self.call = None
        self.tokenizer = StreamTokenizer(self.vocab.settings)
        self.log("panic: all notes off")

    # ---- helpers ------------------------------------------------------------------------------------

    def _update_silence(self, t: float) -> None:
        # Silence counts from the last key released, pedal or not: players often rest a foot on
        # the pedal at the end of a phrase (end_gesture = "pedal" is there for those who don't).
        if not self.keys:
            self.silent_since = t

    def _in_range(self, note: int) -> bool:
        return self.vocab.settings.min_pitch <= note <= self.vocab.settings.max_pitch

    def _beat(self, t: float) -> float:
        call = self.call
        return 0.0 if call is None else (t - call.t0) * call.bpm / 60.0

    def _window_beats(self, bpm: float) -> float:
        return self.vocab.settings.chord_window * bpm / 60.0

    def snapshot(self, now: float) -> EngineSnapshot:
        steps = sorted(self.step_ms)
        a = self.answer
        if a is not None:
            beat = (now - a.start) / a.period
        elif self.call is not None and self.state is State.CALLING:
            beat = (now - self.call.t0) * self.bpm / 60
        else:
            beat = 0.0
        names = self.vocab.tokens
        return EngineSnapshot(
            state=self.state.value, bpm=self.bpm, beat=beat, temperature=self.temperature,
            length_ratio=self.length_ratio,
            call_tokens=tuple(names[t] for t in (self.call.tokens if self.call else [])[-48:]),
            answer_tokens=tuple(names[t] for t in (a.tokens if a else self.last_answer_tokens)[-48:]),
            calls=self.calls, answers=self.answers, player_notes=self.player_notes,
            answer_notes=self.answer_notes, step_p50_ms=summary_pct(steps, 50) or 0.0,
            step_p99_ms=summary_pct(steps, 99) or 0.0, warnings=tuple(self.warnings), mode=self.mode, lock=self.lock,
            clock_source=("midi clock" if self.midi_clock is not None and self.midi_clock.running
                          else "metronome" if self.s.practice.metronome else "fixed" if self.grid_fixed
                          else "estimated"),
        )


def tokenize_message(tok: StreamTokenizer, beat: float, msg: mido.Message) -> list[Event]:
    """One player message into the streaming tokenizer; the events it completes."""
    if msg.type == "note_on":
        return tok.note_on(beat, msg.note)
    if msg.type == "note_off":
        return tok.note_off(beat, msg.note)
    if msg.type == "control_change" and msg.control == SUSTAIN:
        return tok.pedal(beat, msg.value >= 64)
    return []


def _articulation(messages: list[tuple[float, mido.Message]], chord_window: float) -> float:
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
