"""One duet, from its first port to its exit summary: everything `liveduet run` holds, and the order
in which it lets go, written once.

    open()    each step registers its own undo on one ExitStack, in this order:
                signal handlers      SIGINT / SIGTERM → stop()
                recording            (--record)
                sender process       (a real --out: live/sender.py; the notes go out from there)
                output port          (--out, held by the sender process when there is one)
                session              its threads started (live/session.py)
                input port           (--in PORT)
                port watchers        hot-plug: the ports opened, by their exact names
                the views            (the dashboard, the web page: they send commands, producers too)
                file player          (--in FILE.mid)
    wait()    until stopped (a signal, the view's `q`, a Quit command), the --duration is over, or a
              file input has been played and answered
    close()   undoes the steps in reverse: the producers stop (file player, view, watchers, input
              port), the session stops (threads joined, every open note closed), the output port
              closes, the sender process ends, the recording is finished, the signal handlers are
              restored; then the summary.

Invariant: nothing sends on a port after it is closed (a send on a closed rtmidi JACK port kills the
process) and nothing is recorded after the recording is finished. A start that fails half way
undoes what it did and keeps no recording.

Ports come from a backend (a mido backend, or `io/fake.py`'s FakeBackend) and time from one clock.
With `threads=False` and a ManualClock, `wait` runs everything on the caller's thread as simulated
time passes (Session.pump, FilePlayer.pump, PortWatcher.poll_once): a whole session — hot-plug,
signals, recording, summary — runs in a unit test without JACK and without sleeping.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import mido

from liveduet.clock import Clock, MonotonicClock
from liveduet.errors import LiveduetError, OutputPathError
from liveduet.fsutil import os_error_line
from liveduet.io import ports
from liveduet.live.fileplayer import FilePlayer
from liveduet.live.recorder import Recorder
from liveduet.live.session import Session
from liveduet.live.settings import LiveSettings
from liveduet.live.summary import logger, print_summary
from liveduet.music.tokens import Vocabulary

POLL_S = 0.1  # with threads: how often `wait` looks at the end conditions
STEP_S = 0.005  # without threads: the longest step of simulated time (the engine thread's wait while busy)
LAST_NOTES_S = 0.3  # a file input played and answered: the last note-offs go out before the end
WATCH_INTERVAL_S = 1.5  # hot-plug polling (listing ports costs ~50 ms on JACK: a thread, never the hot path)


@dataclass(frozen=True)
class DuetOptions:
    """What `liveduet run` was asked for (commands/run.py), decoded."""

    inp: str  # the input port as the user typed it, or the MIDI file that plays the player
    out: str | None = None  # the output port as typed; None: record only
    virtual: bool = False  # create our own ports named `inp` and `out`
    record: Path | None = None
    force: bool = False  # overwrite an existing recording
    stats: Path | None = None  # one JSON line of timing per answer, appended
    duration: float | None = None  # end after this many seconds
    seed: int | None = None
    plain: bool = False  # no dashboard: log lines and the summary on stdout
    sender: str = "process"  # "process": answers go out from live/sender_child.py; "thread": from this one


class View(Protocol):
    """The dashboard or the web page, as the duet uses it: made from the session and the duet's stop event."""

    def start(self) -> None: ...
    def stop(self) -> None: ...


ViewMaker = Callable[[Session, threading.Event], View]


class Duet:
    """A session's whole life; see the module doc. `run()` is `open()`, `wait()`, `close()`."""

    def __init__(
        self,
        settings: LiveSettings,
        vocab: Vocabulary,
        sampler: Any,
        options: DuetOptions,
        *,
        backend: Any = None,
        player_events: list[tuple[float, mido.Message]] | None = None,
        clock: Clock | None = None,
        say: Callable[[str], None] | None = None,
        view: ViewMaker | list[ViewMaker] | None = None,
        threads: bool = True,
        console: Any = None,
        watch_interval: float = WATCH_INTERVAL_S,
    ) -> None:
        self.settings, self.vocab, self.sampler, self.options = settings, vocab, sampler, options
        self.backend = backend  # None: a file input and no output port
        self.player_events = player_events  # a file input, loaded (None: the input is a port)
        self.clock: Clock = clock or MonotonicClock()
        self.say = say or logger(options.plain)
        self.make_views = view if isinstance(view, list) else [view] if view is not None else []
        self.threads = threads
        self.console = console
        self.watch_interval = watch_interval
        self.session: Session | None = None
        self.recorder: Recorder | None = None  # the one --record started
        self.player: FilePlayer | None = None
        self.watchers: list[ports.PortWatcher] = []
        self.signal: str | None = None  # the name of the signal that stopped the duet
        self.summary: dict | None = None
        self.code = 0
        self._stopping = threading.Event()
        self._stack: contextlib.ExitStack | None = None
        self._listening = False  # open() got through: from here on the session counts
        self._out_port: Any = None  # as opened; the session holds the current one (hot-plug swaps it)
        self._input: Any = None  # the input port held now (hot-plug swaps it)
        self._sender: Any = None  # the sender process, when answers go out from one
        self._started_at = 0.0
        self._next_poll = 0.0
        self._player_due: float | None = None
        self._ending_at: float | None = None
        self._said_stop = False

    # ---- the life -----------------------------------------------------------------------------

    def run(self) -> int:
        """The whole duet; the exit code (0, or 2 when the recording could not be saved)."""
        self.open()
        try:
            self.wait()
        finally:
            code = self.close()
        return code

    def __enter__(self) -> Duet:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> Duet:
        """Open the ports, start the session and everything around it (module doc, in that order)."""
        with contextlib.ExitStack() as stack:
            self._handle_signals(stack)
            self._open_recording(stack)
            self._start_sender(stack)
            self._open_output(stack)
            self._start_session(stack)
            self._open_input(stack)
            self._watch(stack)
            session = self.session
            assert session is not None
            self.say(f"listening on {session.input_name}, answering on {session.output_name}"
                     + (f", recording to {self.options.record}" if self.options.record else ""))
            self._start_view(stack)
            self._start_player(stack)
            self._started_at = self._next_poll = self.clock.now()
            self._next_poll += self.watch_interval
            self._listening = True
            self._stack = stack.pop_all()
        return self

    def stop(self) -> None:
        """End the duet (any thread): `wait` returns, `close` tears down in order."""
        self._stopping.set()

    def wait(self, seconds: float | None = None) -> bool:
        """Run until the duet ends (see the module doc) or `seconds` more have passed; True when it
        has ended. With threads the threads do the work and this only watches; without, this drives
        the session, the file player and the watchers as the clock (a ManualClock) moves on."""
        session = self.session
        assert session is not None, "open() first"
        until = None if seconds is None else self.clock.now() + seconds
        while True:
            now = self.clock.now()
            if not self.threads:
                self._turn(now)
            if self._ended(now):
                if self.signal and not self._said_stop:
                    self.say(f"stopping ({self.signal}): all notes off")
                self._said_stop = True
                self._stopping.set()
                return True
            if until is not None and now >= until:
                return False
            self.clock.wait(self._stopping, self._step(now, until))

    def close(self) -> int:
        """Tear down in order (module doc), then the summary. The exit code."""
        stack, self._stack = self._stack, None
        if stack is None:
            return self.code
        stack.close()
        if self.session is not None:
            self.summary = self.session.summary()
            print_summary(self.summary, self.options.record, self.options.plain, self.console)
        return self.code

    # ---- open(), step by step; each registers its undo ------------------------------------------

    def _handle_signals(self, stack: contextlib.ExitStack) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers; whoever runs us elsewhere calls stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            old = signal.signal(signum, self._on_signal)
            stack.callback(signal.signal, signum, signal.SIG_DFL if old is None else old)

    def _on_signal(self, signum: int, frame: object) -> None:  # noqa: ARG002
        if self.signal is None:
            self.signal = signal.Signals(signum).name
        self._stopping.set()

    def _open_recording(self, stack: contextlib.ExitStack) -> None:
        stack.callback(self._finish_recording)  # also the one `r` in the view may start without --record
        o = self.options
        if o.record is not None:
            tempo = self.settings.tempo
            self.recorder = Recorder(o.record, force=o.force, clock=self.clock,
                                     tempo_bpm=tempo.bpm or tempo.initial_bpm, on_warning=self._warn)

    def _finish_recording(self) -> None:
        session = self.session
        rec = session.recorder if session is not None else self.recorder  # `r` in the view may have swapped it
        if rec is None:
            return
        if not self._listening:  # the duet never started: nothing worth a file
            rec.discard()
            return
        self.code = finish_recording(rec, session.bpm if session is not None else None, self.say) or self.code

    def _warn(self, line: str) -> None:
        """A problem the player should see, without stopping the duet (the recorder's, say)."""
        if self.session is not None:
            self.session.warn(line)
        else:
            self.say(line)

    def _start_sender(self, stack: contextlib.ExitStack) -> None:
        """The sender process (live/sender.py) for a real port: the model and the views run here, the
        notes go out from there. Fakes and simulated time keep the scheduler on a thread."""
        module = ports.backend_module(self.backend)
        if not (self.threads and self.options.out and module and self.options.sender == "process"):
            return
        from liveduet.live.sender import SenderProcess

        self._sender = SenderProcess(module, self.clock, on_warning=self.say)
        stack.callback(self._sender.close)  # last of all: after the session's stop and the port's close

    def _open_port(self, name: str, virtual: bool = False) -> Any:
        if self._sender is not None:
            return self._sender.open_output(name, virtual)
        return ports.open_output(self.backend, name, virtual=virtual)

    def _open_output(self, stack: contextlib.ExitStack) -> None:
        if not self.options.out:
            return
        self._out_port = self._open_port(self.options.out, virtual=self.options.virtual)
        stack.callback(self._close_output)

    def _close_output(self) -> None:
        port = self.session.take_output() if self.session is not None else self._out_port
        if port is not None:
            port.close()

    def _start_session(self, stack: contextlib.ExitStack) -> None:
        o = self.options
        try:
            session = Session(self.settings, self.vocab, self.sampler, self.clock, self.recorder, o.stats, self.say,
                              o.seed, input_name=o.inp,
                              output_name=getattr(self._out_port, "name", "") if self._out_port else "(none)",
                              sender=self._sender)
        except OSError as err:  # the --stats file, checked by `run`, went away since
            raise OutputPathError(f"cannot open --stats {o.stats}: {os_error_line(err)}") from err
        self.session = session
        session.set_output(self._out_port)
        session.start(threads=self.threads)
        stack.callback(session.stop)

    def _open_input(self, stack: contextlib.ExitStack) -> None:
        if self.player_events is not None:
            return  # a file plays the player: no port
        session = self.session
        assert session is not None
        self._input = ports.open_input(self.backend, self.options.inp, session.listener.callback,
                                       virtual=self.options.virtual)
        session.input_name = self._input.name
        stack.callback(self._close_input)

    def _close_input(self) -> None:
        port, self._input = self._input, None
        if port is not None:
            port.close()

    def _watch(self, stack: contextlib.ExitStack) -> None:
        """Hot-plug: one poller per direction, each watching the port it holds (a device often has an
        input and an output of one name)."""
        watched = watched_ports(self.options, self._input, self._out_port) if self.backend is not None else []
        if not watched:
            return
        lister = ports.PortLister(self.backend)
        stack.callback(lister.close)
        for kind, query, port in watched:
            watcher = ports.PortWatcher(
                lambda k=kind: lister.names(k), {query: port.name}, on_lost=lambda n, k=kind: self._lost(k, n),
                on_back=lambda n, k=kind: self._back(k, n), interval=self.watch_interval, kind=kind,
            )
            self.watchers.append(watcher)
            if self.threads:
                watcher.start()
                stack.callback(watcher.stop)

    def _lost(self, kind: str, name: str) -> None:
        session = self.session
        assert session is not None
        session.warn(f"{kind} port lost: {name}", said=f"{kind} port lost: {name} — still running; "
                     "will reconnect when it returns")
        setattr(session, f"{kind}_ok", False)

    def _back(self, kind: str, name: str) -> None:
        session = self.session
        assert session is not None
        try:
            if kind == "output":
                old = session.take_output()  # nothing sends on it once detached
                if old is not None:
                    old.close()
                session.set_output(self._open_port(name), name)
            else:
                # The connection died with the device (JACK and ALSA alike): open anew, then close the
                # old port; the listener is the same, so nothing downstream notices.
                new = ports.open_input(self.backend, name, session.listener.callback)
                old, self._input = self._input, new
                session.input_name = new.name
                if old is not None:
                    old.close()
            setattr(session, f"{kind}_ok", True)
            self.say(f"{kind} port back: {name}")
        except LiveduetError as err:
            self.say(f"reconnecting {name} failed: {err}")

    def _start_view(self, stack: contextlib.ExitStack) -> None:
        """The views (the dashboard, the web page), in order; each stops before the session."""
        assert self.session is not None
        for make in self.make_views:
            view = make(self.session, self._stopping)
            view.start()
            stack.callback(view.stop)

    def _start_player(self, stack: contextlib.ExitStack) -> None:
        if self.player_events is None:
            return
        assert self.session is not None
        self.player = FilePlayer(self.player_events, self.session.listener.callback, self.clock, name=self.options.inp)
        stack.callback(self.player.stop)
        if self.threads:
            self.player.start()
        else:
            self.player.begin()

    # ---- wait(), turn by turn ---------------------------------------------------------------------

    def _turn(self, now: float) -> None:
        """Without threads: what the file player, the watchers and the session's threads would do now."""
        if self.player is not None:
            self._player_due = self.player.pump(now)
        if self.watchers and now >= self._next_poll:
            for watcher in self.watchers:
                watcher.poll_once()
            self._next_poll = now + self.watch_interval
        assert self.session is not None
        self.session.pump()

    def _ended(self, now: float) -> bool:
        session = self.session
        assert session is not None
        if self._stopping.is_set() or session.quit.is_set():
            return True
        if self.options.duration is not None and now - self._started_at >= self.options.duration:
            return True
        if self._ending_at is None and self.player is not None and self.player.done.is_set() and session.idle():
            self._ending_at = now + LAST_NOTES_S
        return self._ending_at is not None and now >= self._ending_at

    def _step(self, now: float, until: float | None) -> float:
        """How long to wait before looking again; without threads, up to the next thing due."""
        if self.threads:
            step = POLL_S
        else:
            assert self.session is not None
            step = STEP_S
            dues = [self.session.scheduler.next_due(), self._player_due, self._ending_at]
            if self.watchers:
                dues.append(self._next_poll)
            for due in dues:
                if due is not None and now < due < now + step:
                    step = due - now
        if until is not None:
            step = min(step, until - now)
        if self.options.duration is not None:
            step = min(step, max(0.0, self._started_at + self.options.duration - now))
        return max(step, 0.0)


def watched_ports(options: Any, in_port: Any, out_port: Any) -> list[tuple[str, str, Any]]:
    """(kind, what the user typed, the open port) for each connection hot-plug should watch: the
    ports we opened, by the names they were opened as. A file input opened none; our own virtual
    ports cannot be unplugged."""
    if options.virtual:
        return []
    return [(kind, query, port) for kind, query, port in (("input", options.inp, in_port),
                                                           ("output", options.out, out_port))
            if port is not None and query]


def finish_recording(recorder: Recorder, bpm: float | None, say: Callable[[str], None]) -> int:
    """Save the recording; an error saving it is said in one line (exit 2) and the summary still follows."""
    recorder.stop()
    try:
        path = recorder.finish(tempo_bpm=bpm)
    except LiveduetError as err:
        say(f"error: {err}")
        return err.exit_code
    if recorder.saved_until is not None:
        say(f"recorded {path}: only its first {recorder.saved_until:.1f} s (the disk was full)")
    else:
        say(f"recorded {path}")
    return 0
