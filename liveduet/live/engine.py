"""The engine: the player's events in, the answer's notes scheduled out.

It carries out the state machine's actions (phrase.py): the call side — the streaming tokenizer
(the one training used, reading live input as a performance), the sampler's cached model state,
what it remembers between calls (memory.py), when the call ends (entry.py) — and hands the answer
to answer.py, which listens to the call and plays the answer out; grid.py keeps the beat grid,
commands.py is how every control surface reaches it and controls.py what each command changes. It
is driven by three calls from one thread — `handle(t, msg)` for each input message, `command(cmd,
t)` for each command, `tick(now)` between them — and never sleeps, so tests drive it with a manual
clock and a fake port, microsecond by microsecond. Invariant: an answer's notes are scheduled only
between END_CALL and the answer's end or its cancellation, and a cancelled (ENTERING) answer leaves
the model exactly as before END_CALL.

Timing: the call's tokens are stepped through the model as they are played, so when the call
ends only the answer is left to compute; the answer is generated `lookahead_s` ahead of the
playhead, never all at once, on the player's beat grid (anchored at the call's first note).
"""

from __future__ import annotations

import copy
import math
import random
import statistics
import time
from collections import deque
from collections.abc import Callable

import mido

from liveduet.clock import Clock
from liveduet.live import commands, entry, expression, memory, vary
from liveduet.live.answer import (
    SUSTAIN,
    Answer,
    AnswerPlayer,
    Call,
    LiveSampler,
    answer_stats,
    articulation_of,
    call_notes,
    listen,
    retokenize,
    summary_pct,
    tokenize_message,
)
from liveduet.live.controls import Controls
from liveduet.live.grid import Grid
from liveduet.live.listener import CLOCK_TYPES
from liveduet.live.phrase import Action, Input, State, transition
from liveduet.live.scheduler import Scheduler
from liveduet.live.settings import LiveSettings
from liveduet.live.snapshot import EngineSnapshot, snapshot_of
from liveduet.live.tempo import estimate_bpm
from liveduet.music.stream import StreamTokenizer
from liveduet.music.tokens import TICKS, Event, Vocabulary

RETEMPO = 0.08  # re-tokenize the call when its estimated tempo differs by more than this share
ENTRY_WINDOW_S = 0.015  # a bar-line entry is planned within this long before its margin runs out
IDLE_BEATS = 8  # no input at all for this long ends a call even with keys down (lost note-offs)


class Engine(Controls):
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
        self.complexity = commands.COMPLEXITY_NEUTRAL
        self.set_complexity(settings.answer.complexity)
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
        self.calls = self.answers = self.player_notes = 0
        self.player = AnswerPlayer(settings, vocab, sampler, scheduler, self.rng, clock)
        self.step_ms = self.player.step_ms
        self.warnings: deque[str] = deque(maxlen=5)
        self.mode = settings.practice.mode
        self.varier = vary.Varier(settings.answer, vocab, self.mode == "vary", self.warnings.append)  # σ, the VAE
        self.lock: str | None = None
        self.grid = Grid(settings, log)  # count-in, metronome, MIDI clock: calls and answers sit on it

    @property
    def answer_notes(self) -> int:
        return self.player.notes

    def start(self, now: float) -> None:
        """The session starts: a count-in and/or the metronome put a beat grid in place."""
        self.grid.start(now, self.bpm)

    @property
    def grid_t0(self) -> float | None:
        return self.grid.t0

    @property
    def grid_fixed(self) -> bool:
        """Tempo set from outside (fixed, metronome, MIDI clock): never estimated from calls."""
        return bool(self.s.tempo.bpm) or self.grid_t0 is not None
    # ---- input ------------------------------------------------------------------------------------

    def handle(self, t: float, msg: mido.Message) -> None:
        """One message from the player (already stamped, hygiene already filtered)."""
        if msg.type in CLOCK_TYPES:
            bpm = self.grid.follow(t, msg)
            if bpm is not None:
                self.bpm = min(self.s.tempo.max_bpm, max(self.s.tempo.min_bpm, bpm))
            return
        self.last_input = t
        cmd = commands.from_control(msg, self.s, self.vocab.settings.min_pitch)
        if cmd is not None:
            self.command(cmd, t)
            return
        if msg.type == "control_change":
            if msg.control == SUSTAIN:
                down = msg.value >= 64
                released = self.pedal and not down
                self.pedal = down
                self._apply(Input.NOTE_OFF, t, msg)
                if released and self.s.phrase.end_gesture == "pedal" and self.state is State.CALLING:
                    self._apply(Input.END_GESTURE, t, msg)
            return
        if msg.type in ("note_on", "note_off") and not self._in_range(msg.note):
            return  # beyond a piano's 88 keys (keyswitches above, test probes): passed thru, never a call
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

    def tick(self, now: float) -> None:
        """Time passes: close chords, detect the end of the call, generate ahead, finish answers."""
        self.grid.click(now, self.bpm, self.s.answer.lookahead_s, self.scheduler)
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
            if self.silent_since is not None and self._likely_end(now):
                self._apply(Input.LIKELY_END, now, None)
            elif self.silent_since is not None and now - self.silent_since >= silence and not self._predicting():
                self._apply(Input.SILENCE, now, None)
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
        step = transition(self.state, event, self.s.phrase.barge_in, accompany=self.mode == "accompany",
                          vary=self.mode == "vary")
        self.state = step.state
        for action in step.actions:
            if action is Action.START_CALL:
                self._start_call(t)
            elif action is Action.FEED and msg is not None:
                self._feed_message(t, msg)
            elif action in (Action.END_CALL, Action.VARY_CALL):
                self._end_call(t, vary=action is Action.VARY_CALL)
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
        t = self.grid.snap(t, self.bpm)  # on a grid, the call's beats are the grid's beats
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

    def _end_call(self, now: float, vary: bool = False) -> None:
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
        if vary:  # the answer is a variation of the call, as long as the call (live/vary.py)
            self.varier.plan(self.answer, call.tokens, self.rng.getrandbits(31))
        self.log(
            f"call {self.calls}: {len(call.tokens)} tokens, {call_beats:.1f} beats at {self.bpm:.0f} bpm; "
            f"answering {beats} beats"
        )
        self._generate(now)

    def _start_margin(self) -> float:
        """How far ahead of its first note an answer is planned, so that sampling the first event
        cannot make it late even on a loaded machine: the margin + a few recent worst-case steps."""
        recent = sorted(list(self.step_ms)[-200:])
        return (self.s.answer.start_margin_s + min(0.5, 4e-3 * (summary_pct(recent, 99) or 0.0))
                + (self.varier.margin_s() if self.mode == "vary" else 0.0))  # the call's encoding, first

    def _feed_gap(self, call: Call, start: float, first: int) -> None:
        """The model hears the silence between the call's last event and the answer as a rest, so
        the answer's first event sits where the model thinks it does in the bar."""
        heard = sum(d for _, d in self.vocab.decode(call.tokens))  # twelfths from the call's first note
        gap = round((start - call.t0) / (60.0 / self.bpm) * TICKS) + first - heard
        if gap > 0:
            self._feed([((), min(gap, self.vocab.settings.max_duration))])

    def _predicting(self) -> bool:
        """Whether live/entry.py decides when the call ends (else `silence_beats` of silence does)."""
        return (self.s.phrase.early_entry and not self.s.practice.call_bars and self.s.phrase.end_gesture == "silence"
                and self.mode != "accompany")

    def _likely_end(self, now: float) -> bool:
        """Whether the silent call seems to end on a coming beat (live/entry.py); remembers the beat."""
        call = self.call
        if call is None or self.silent_since is None or not self._predicting():
            return False
        if call.release is None or call.release[0] != self.silent_since:
            bpm = self.bpm if self.grid_fixed else estimate_bpm(call.onsets, call.bpm, self.s.tempo.min_bpm,
                                                                 self.s.tempo.max_bpm)
            call.release = (self.silent_since, bpm, articulation_of(call.messages, self.vocab.settings.chord_window),
                            self._start_margin())
        _, bpm, articulation, margin_s = call.release
        anchor = self.grid_t0 if self.grid_t0 is not None else call.t0
        to_beats = bpm / 60.0
        target = entry.entry_beat((call.onsets[-1] - anchor) * to_beats, (self.silent_since - anchor) * to_beats,
                                  (now - anchor) * to_beats, margin_s * to_beats, ENTRY_WINDOW_S * to_beats,
                                  self.s.practice.beats_per_bar, self.s.phrase.entry_silence_beats, articulation,
                                  self.s.phrase.silence_beats)
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
            self.player.notes -= sum(len(p) for p, _ in self.vocab.decode(a.tokens)) if a.echo is None else 0
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

    def _listen(self, call: Call, end: float) -> expression.Expression:
        return listen(self.sampler, self.s.answer, self.vocab, call, call_notes(call, end, self.bpm))

    def _retokenize(self, call: Call, bpm: float, end: float) -> None:
        """The call's tokens again at the tempo heard over the whole call, and the model re-primed."""
        self.sampler.restore(call.checkpoint)
        events = retokenize(call, bpm, end, self.vocab.settings, self._window_beats(bpm))
        call.tokens = []
        call.bpm = bpm
        self._feed(events)

    def _generate(self, now: float) -> None:
        if self.answer is not None:
            self.player.generate(self.answer, now)

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
            self.on_answer(answer_stats(a, stopped, self.bpm, len(self.call.tokens) if self.call else 0))

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
        return snapshot_of(self, now)
