"""A running duet: the threads and ports around the engine, each with one job.

    input port (rtmidi thread) ─ Listener: stamp + enqueue
      └─ router thread: thru to the output at once, record, hand to the engine (a bounded Gate:
           │  under a flood the engine skips note-ons, never what ends a sound)
           └─ engine thread: tokenizer → model step → answer plan → Scheduler heap
                └─ scheduler: absolute due times → output port → (reports) → recorder

With a real output port the scheduler lives in the sender process (live/sender.py): its own
interpreter, so the model, the candidates, the VAE and the views here can never make a note late;
with fakes and simulated time it is a thread here. Model work happens on the engine thread only, so
the player's own notes (thru) never wait for it; a short interpreter switch interval keeps the GIL
from holding them up either (see README, figures in benchmarks/). Shutdown order matters:
producers stop before ports close (sending on a closed rtmidi JACK port crashes the process), and
the scheduler's panic closes every note first.
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mido

from liveduet.clock import Clock, MonotonicClock
from liveduet.live import commands
from liveduet.live.engine import Engine, summary_pct
from liveduet.live.listener import Gate, Listener, clean
from liveduet.live.phrase import State
from liveduet.live.recorder import Recorder, journal_path
from liveduet.live.scheduler import Scheduler
from liveduet.live.settings import AnswerSettings, LiveSettings
from liveduet.live.snapshot import EngineSnapshot
from liveduet.music.tokens import Vocabulary

log = logging.getLogger(__name__)

SWITCH_INTERVAL_S = 0.0005  # the GIL changes hands at least this often (Python's default: 5 ms)
SNAPSHOT_EVERY_S = 0.1
PLAYED_KEPT = 256  # the player's latest note messages, for views (the web page's sound of your notes)
ENGINE_QUEUE = 512  # messages waiting for the engine thread: a human plays far fewer between two of its turns


@dataclass(frozen=True)
class SessionSnapshot:
    engine: EngineSnapshot
    input_name: str
    output_name: str
    input_ok: bool
    output_ok: bool
    recording: str | None
    recorded_s: float
    late_p99_ms: float
    dropped: int
    elapsed_s: float


def answer_sampler(runtime: Any, answer: AnswerSettings, seed: int | None = None) -> Any:
    """The model's sampler as `run` and the live evaluation use it: the [answer] settings, <bos> fed."""
    from liveduet.model.sampling import Sampler

    sampler = Sampler(runtime, temperature=answer.temperature, top_k=answer.top_k, top_p=answer.top_p, seed=seed,
                      max_repeat=answer.max_repeat, max_loop=answer.max_loop)
    if answer.candidates <= 1:
        return sampler
    from liveduet.live.candidates import best_of_k  # the critic beside the model (ModelLoadError if unfit)

    return best_of_k(sampler, runtime.path, answer.candidates, seed)


class Session:
    """Wires a Listener, the Engine, the Scheduler and the Recorder together; see the module doc."""

    def __init__(
        self,
        settings: LiveSettings,
        vocab: Vocabulary,
        sampler: Any,
        clock: Clock | None = None,
        recorder: Recorder | None = None,
        stats_path: Path | None = None,
        log: Callable[[str], None] = lambda line: None,
        seed: int | None = None,
        input_name: str = "",
        output_name: str = "",
        sender: Any = None,
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or MonotonicClock()
        self.log = log
        self.recorder = recorder
        self.input_name, self.output_name = input_name, output_name
        self.input_ok = self.output_ok = True
        self._out_lock = threading.Lock()
        self._out: Any = None  # the output port, swapped on reconnect
        # To the engine thread, bounded like the input door: under a flood thru and the recording take
        # everything, the engine what it can (never dropping what ends a sound), at most a moment behind.
        self._to_engine = Gate(ENGINE_QUEUE)
        # MIDI clock (when followed) goes to the engine thread; the rtmidi thread only enqueues.
        on_clock = (lambda t, m: self._to_engine.offer(t, m)) if settings.tempo.follow_clock else None
        self.listener = Listener(self.clock, on_clock=on_clock)
        # The sender process (live/sender.py) when the duet has one: the same interface, the notes
        # sent by another interpreter. Else a thread here (tests, simulated time, fake backends).
        self.scheduler: Any = sender or Scheduler(self._send, self.clock, on_sent=self._on_sent)
        self._remote = sender is not None
        if sender is not None:
            sender.on_sent = self._on_sent
            sender.on_warning = self.warn
        self._stats = open(stats_path, "a", encoding="utf-8") if stats_path else None  # noqa: SIM115
        self.engine = Engine(settings, vocab, sampler, self.scheduler, log=log, on_answer=self._on_answer, seed=seed,
                             clock=self.clock)
        self.quit = threading.Event()  # set by a Quit command: whoever runs the session ends it
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started_at = self.clock.now()
        self._snapshot: SessionSnapshot | None = None
        self._next_snapshot = 0.0  # when `pump` publishes the next one (the engine thread keeps its own)
        self._late_sent, self._late_p99 = -1, 0.0
        self.answers_done = threading.Event()
        # The player's note messages as routed, (number, time, message): views copy it, nothing waits on it.
        self.played: deque[tuple[int, float, mido.Message]] = deque(maxlen=PLAYED_KEPT)
        self._played_n = itertools.count()

    # ---- ports ------------------------------------------------------------------------------------

    def set_output(self, port: Any, name: str | None = None) -> None:
        """Use `port` for output from now on (None: record only); closes nothing."""
        with self._out_lock:
            self._out = port
            if name:
                self.output_name = name
            if self._remote:
                self.scheduler.use_output(port)

    def take_output(self) -> Any:
        """Detach and return the output port, so it can be closed with nothing sending on it."""
        with self._out_lock:
            port, self._out = self._out, None
            if self._remote and port is not None:
                self.scheduler.use_output(None)
            return port

    def _send(self, msg: mido.Message) -> None:
        with self._out_lock:
            if self._out is not None:
                self._out.send(msg)

    def _on_sent(self, msg: mido.Message, due: float, actual: float) -> None:
        rec = self.recorder  # read once: `toggle_recording` may swap it from another thread
        if rec is not None:
            rec.on_sent(msg, due, actual)
        self.engine.on_sent(msg, due, actual)

    def _on_answer(self, stats: dict) -> None:
        if self._stats is not None:
            stats = {**stats, **{k: round(v - self._started_at, 6) for k, v in stats.items()
                                 if k in ("phrase_end", "scheduled_first", "actual_first") and v is not None}}
            self._stats.write(json.dumps(stats) + "\n")
            self._stats.flush()

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self, threads: bool = True) -> None:
        """Start the session; `threads=False` for simulated time, where the caller `pump`s instead."""
        self._started_at = self.clock.now()
        self.engine.start(self._started_at)
        if not threads:
            return
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self.scheduler.start()
        if self.recorder is not None:
            self.recorder.start()
        for target, name in ((self._route, "router"), (self._run_engine, "engine")):
            thread = threading.Thread(target=target, name=f"liveduet-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _route(self) -> None:
        while not self._stop.is_set():
            item = self.listener.get(timeout=0.1)
            if item is not None:
                self.route(*item)

    def route(self, t: float, msg: mido.Message) -> None:
        """One input message: thru first (the player hears themself at once), then the recording,
        then the engine's queue. The router thread calls this; so does the simulation (simulate.py)."""
        control = commands.is_control(msg, self.settings)
        if self.settings.controls.thru and not control:
            self.scheduler.send_now(msg)
        rec = self.recorder
        if rec is not None and not control:
            rec.record_player(msg, t)
        if msg.type in ("note_on", "note_off"):
            self.played.append((next(self._played_n), t, msg))
        kept = clean(msg) or msg
        self._to_engine.offer(t, kept, kept)

    def _run_engine(self) -> None:
        next_snapshot = 0.0
        while not self._stop.is_set():
            item = self._to_engine.get(timeout=self.engine.wait_hint())
            now = self.clock.now()
            self.engine_step(item, now)
            if now >= next_snapshot:
                self._publish(now)
                next_snapshot = now + SNAPSHOT_EVERY_S

    def engine_step(self, item: tuple[float, mido.Message | commands.Command] | None, now: float) -> None:
        """One turn of the engine thread: the item (a message or a command), then time passes."""
        engine = self.engine
        try:
            if item is not None:
                t, msg = item
                if isinstance(msg, mido.Message):
                    engine.handle(t, msg)
                else:
                    engine.command(msg, t)
            engine.tick(now)
        except Exception as err:  # a bug: keep the duet alive, silence it, say so once per kind
            log.exception("engine error")
            engine.warnings.append(f"engine error: {type(err).__name__}: {err}")
            self.scheduler.panic()
        if engine.state is State.LISTENING and self._to_engine.queue.empty():
            self.answers_done.set()
        else:
            self.answers_done.clear()

    def pump(self) -> None:
        """Everything the threads would do at `clock.now()`, on the caller's thread: route what the
        listener holds, run the engine over its queue and tick it, send what is due. For simulated
        time (a ManualClock, `start(threads=False)`)."""
        now = self.clock.now()
        for item in self.listener.drain():
            self.route(*item)
        for item in self._to_engine.drain():
            self.engine_step(item, now)
        self.engine_step(None, now)
        self.scheduler.run_due(now)
        if now >= self._next_snapshot:
            self._publish(now)
            self._next_snapshot = now + SNAPSHOT_EVERY_S

    def send(self, cmd: commands.Command) -> str | None:
        """A command from any control surface (any thread). Recording is switched here and returns a
        line for the user; musical commands go to the engine thread, in order with the player's input."""
        if isinstance(cmd, commands.Record):
            return self.toggle_recording()
        if isinstance(cmd, commands.Quit):
            self.quit.set()
            return None
        self._to_engine.offer(self.clock.now(), cmd, essential=True)
        return None

    def panic(self) -> None:
        """Silence everything now (any thread): the engine thread carries it out."""
        self.send(commands.Panic())

    def set_temperature(self, value: float) -> None:
        """Set the temperature exactly (any thread); the engine thread applies it."""
        self.send(commands.SetTemperature(value))

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the threads, close every open note (panic), keep the output port open for the caller."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self.scheduler.panic()
        self.scheduler.stop(timeout)
        if self._stats is not None:
            self._stats.close()
            self._stats = None

    def warn(self, line: str, said: str | None = None) -> None:
        """A problem the player should see, without stopping the duet (any thread): `line` in the
        dashboard's warnings, `said` (default: the same) in the log. Every recorder of the session
        reports here."""
        self.engine.warnings.append(line)
        self.log(said or line)

    @property
    def bpm(self) -> float:
        """The tempo now (the engine's; a recording is saved at it)."""
        return self.engine.bpm

    def toggle_recording(self, folder: Path = Path(".")) -> str:
        """Start recording to a new timestamped file, or finish the one running (any thread).
        Returns a line for the user. A new recording warns as the one `run --record` starts (`warn`)."""
        import datetime as dt

        rec = self.recorder
        if rec is not None:
            self.recorder = None  # producers see None from now on; a late record() on `rec` is refused
            rec.stop()
            path = rec.finish(tempo_bpm=self.engine.bpm)
            return f"recorded {path}"
        stamp = f"liveduet-{dt.datetime.now():%Y%m%d-%H%M%S}"
        path, n = folder / f"{stamp}.mid", 2
        while path.exists() or journal_path(path).exists():  # `r` pressed twice within a second
            path, n = folder / f"{stamp}-{n}.mid", n + 1
        rec = Recorder(path, clock=self.clock, tempo_bpm=self.engine.bpm, on_warning=self.warn)
        rec.start()
        self.recorder = rec
        return f"recording to {path}"

    def summary(self) -> dict:
        """The figures a player wants at the end of a session."""
        e = self.engine
        steps = sorted(e.step_ms)
        late = self.scheduler.lateness_stats()
        return {
            "duration_s": round(self.clock.now() - self._started_at, 1),
            "calls": e.calls, "answers": e.answers,
            "notes_heard": e.player_notes, "notes_played": e.answer_notes,
            "model_step_ms_p50": summary_pct(steps, 50), "model_step_ms_p99": summary_pct(steps, 99),
            "answer_late_ms_p99": round(late.p99 * 1e3, 3), "answer_late_ms_max": round(late.max * 1e3, 3),
            "events_dropped": self.listener.dropped, "events_skipped": self._to_engine.dropped,
        }

    def idle(self) -> bool:
        """True when no call is being heard, no answer is playing and nothing waits to be handled."""
        return self.answers_done.is_set() and self.listener.queue.empty()

    # ---- the view ------------------------------------------------------------------------------

    def _publish(self, now: float) -> None:
        rec = self.recorder
        self._snapshot = SessionSnapshot(
            engine=self.engine.snapshot(now), input_name=self.input_name, output_name=self.output_name,
            input_ok=self.input_ok, output_ok=self.output_ok,
            recording=str(rec.path) if rec else None, recorded_s=(now - rec.t0) if rec else 0.0,
            late_p99_ms=self._late_p99_ms(), dropped=self.listener.dropped + self._to_engine.dropped,
            elapsed_s=now - self._started_at,
        )

    def _late_p99_ms(self) -> float:
        # Full lateness stats sort and average up to 10,000 samples: only when something was sent.
        sent = self.scheduler.sent
        if sent != self._late_sent:
            self._late_sent, self._late_p99 = sent, self.scheduler.lateness_stats().p99 * 1e3
        return self._late_p99

    def snapshot(self) -> SessionSnapshot | None:
        """The latest immutable view (published by the engine thread ~10 times a second)."""
        return self._snapshot
