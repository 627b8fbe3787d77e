"""The terminal dashboard: a view that pulls the session's snapshot ~10 times a second.

    Session.snapshot()  ──(Rich Live refresh thread, 10 Hz)──>  render(snapshot, width)  ──> terminal
    stdin (cbreak, key thread)  ──>  session.send(Panic() | SetTemperature(v) | Record()) / stop_event

Nothing here is on the real-time path: the engine publishes an immutable snapshot and never waits
for us. Music theory (key, chord names with music21) is computed here, from the token names in the
snapshot, and cached by input, because music21 costs tens of milliseconds — far too much for the
engine thread. While the dashboard runs, stderr (the session's log lines) goes to an in-memory buffer
shown in a panel and printed after exit, so a log line from the engine thread never waits on the
terminal or on Rich's render lock. On a terminal a child process draws the frames (ui/screen.py), so
Rich's rendering never holds the daemon's interpreter either; a given console is drawn on a thread.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import select
import sys
import threading
import time
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from liveduet.live import commands
from liveduet.music.tokens import TICKS, pitch_name
from liveduet.ui.harmony import (  # noqa: F401 - re-exported: the dashboard's API
    KEY_EVERY_S,
    Event,
    Harmony,
    HarmonyCache,
    chord_name,
    current_pitches,
    harmony_inputs,
    harmony_names,
    import_music21,
    key_name,
    parse_token_names,
)
from liveduet.ui.screen import LogBuffer, plain

REFRESH_HZ = 10
TEMPERATURE_STEP = 0.1
MAX_ROLL_ROWS = 12
NOTICE_S = 3.0  # how long the footer shows the result of a key press
STATE_STYLE = {"listening": "bold green", "calling": "bold cyan", "entering": "bold magenta",
               "answering": "bold magenta"}
PART_STYLE = {"call": "cyan", "answer": "magenta"}
SIDE_BY_SIDE_WIDTH = 90  # narrower terminals get the call and answer rolls stacked
NO_OUTPUT = ("", "(none)")  # what `liveduet run` names the output when there is none (record only)
DRAW_ENV = "LIVEDUET_DRAW"
FOOTER_KEYS = "p panic   + / - temperature   r record on/off   q quit"





# ---- the piano roll -------------------------------------------------------------------------------


def piano_roll(events: Sequence[Event], columns: int, max_rows: int = MAX_ROLL_ROWS) -> tuple[list[str], str]:
    """Rows of text, highest pitch first: `█` where a note starts, `▒` while it holds, `·` on beats.

    Rows are every semitone of the range when it fits in `max_rows`, else only the pitches played
    (the highest kept: the melody). A column is the finest of 1/4, 1/2, 1, 2, 4 beats that fits the
    phrase in `columns`. Returns the rows and a one-line scale note ("1 col = 1/4 beat").
    """
    played = sorted({p for pitches, _ in events for p in pitches}, reverse=True)
    if not played:
        return [], ""
    total = sum(d for _, d in events)
    label = 4
    width = max(1, columns - label)
    step = next((s for s in (3, 6, 12, 24, 48) if math.ceil(total / s) <= width), 48)
    ncols = min(width, max(1, math.ceil(total / step)))
    hi, lo = played[0], played[-1]
    rows = list(range(hi, lo - 1, -1)) if hi - lo + 1 <= max_rows else played
    hidden = max(0, len(rows) - max_rows)
    rows = rows[:max_rows]
    grid = {p: [("·" if (c * step) % TICKS == 0 else " ") for c in range(ncols)] for p in rows}
    pos = 0
    for pitches, dur in events:
        first = round(pos / step)
        last = max(first, round((pos + dur) / step) - 1)
        for p in pitches:
            if p in grid and first < ncols:
                cells = grid[p]
                cells[first] = "█"
                for c in range(first + 1, min(last, ncols - 1) + 1):
                    cells[c] = "▒"
        pos += dur
    lines = [f"{pitch_name(p):<{label}}" + "".join(grid[p]) for p in rows]
    scale = f"1 col = {Fraction(step, TICKS)} beat" + (f", {hidden} lower pitches not shown" if hidden else "")
    return lines, scale


def token_line(names: Sequence[str], width: int, lines: int = 2) -> str:
    """The tokens as text, the newest kept: at most `lines` lines of `width` (older ones become …)."""
    names = [n for n in names if not n.startswith("<")]
    budget = max(8, width * lines)
    text = " ".join(names)
    if len(text) <= budget:
        return text
    return "… " + text[-(budget - 2) :].split(" ", 1)[-1]


# ---- the frame --------------------------------------------------------------------------------------


def _fmt_ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} ms"


def _beat_dots(beat: float, state: str) -> str:
    if state == "listening":
        return "○ ○ ○ ○"
    if beat < 0:
        return f"in {-beat:.1f} beats"
    n = int(beat) % 4
    return " ".join("●" if i == n else "○" for i in range(4))


def _phrase_panel(title: str, part: str, names: Sequence[str], width: int, max_rows: int) -> Panel:
    inner = max(10, width - 4)  # border and padding
    events = parse_token_names(names)
    rows, scale = piano_roll(events, inner, max_rows)
    body = Text()
    if rows:
        for line in rows:
            body.append(line[:4], style="dim")
            body.append(line[4:] + "\n", style=PART_STYLE[part])
        body.append(scale + "\n", style="dim")
    else:
        body.append("(nothing yet)\n", style="dim")
    body.append(token_line(names, inner), style="bold" if names else "dim")
    beats = sum(d for _, d in events) / TICKS
    subtitle = f"{len(names)} tokens, {beats:.2f}".rstrip("0").rstrip(".") + " beats" if names else None
    return Panel(body, title=title, title_align="left", subtitle=subtitle, subtitle_align="right", width=width)


def render(
    snapshot: Any,
    width: int,
    height: int | None = None,
    *,
    harmony: Harmony | None = None,
    log: Sequence[str] = (),
    notice: str = "",
) -> RenderableType:
    """One frame of the dashboard for a SessionSnapshot (None: still starting), `width` columns wide.

    Pure: the same inputs give the same text. `harmony` is the key/chord to show (computed from the
    snapshot, cached, when not given); `height` (terminal rows) shrinks the piano rolls to fit;
    `log` holds the latest log lines; `notice` what the last key press did.
    """
    footer = Text(FOOTER_KEYS, style="bold")
    if notice:
        footer.append("   " + notice, style="yellow")
    if snapshot is None:
        return Group(Panel(Text("starting…", style="dim"), title="liveduet", width=width), footer)
    e = snapshot.engine
    if harmony is None:
        key_tokens, chord_tokens = harmony_inputs(snapshot)
        harmony = Harmony(key_name(key_tokens), chord_name(current_pitches(parse_token_names(chord_tokens))))

    head = Text.assemble(
        (e.state.upper(), STATE_STYLE.get(e.state, "bold")),
        f"   beat {e.beat:.2f} {_beat_dots(e.beat, e.state)}   {e.bpm:.1f} bpm ({e.clock_source})   ",
        "key ", (harmony.key, "bold"), "   chord ", (harmony.chord, "bold"),
    )
    ports = Text.assemble(
        "in ", (snapshot.input_name or "—", "bold"), " ",
        ("(connected)", "green") if snapshot.input_ok else ("(LOST)", "bold red"), "   out ",
        *(
            (("none", "bold"), (" (record only)", "dim")) if snapshot.output_name in NO_OUTPUT
            else ((snapshot.output_name, "bold"), " ",
                  ("(connected)", "green") if snapshot.output_ok else ("(LOST)", "bold red"))
        ),
    )
    controls = Text.assemble(
        "temperature ", (f"{e.temperature:.2f}", "bold"), " (+/-)   answer length ",
        (f"×{e.length_ratio:.2f}", "bold"), "   mode ", (e.mode, "bold"),
        *(("  σ ", (f"{e.variation:.2f}", "bold")) if e.mode == "vary" else ()),
        *(("   complexity ", (f"{e.complexity:.2f}", "bold")) if e.complexity != 0.5 else ()), "   scale lock ",
        (e.lock or "off", "bold" if e.lock else "dim"),
        f"\ncalls {e.calls}  answers {e.answers}  notes in {e.player_notes}  out {e.answer_notes}",
    )
    top = Panel(Group(head, ports, controls), title="liveduet", title_align="left", width=width)

    rec = (
        Text.assemble("recording ", (snapshot.recording, "bold red"), f"  {snapshot.recorded_s:.1f} s")
        if snapshot.recording else Text("not recording (start with --record FILE.mid)", style="dim")
    )
    figures = Text.assemble(
        f"model step p50 {_fmt_ms(e.step_p50_ms)}  p99 {_fmt_ms(e.step_p99_ms)}   ",
        f"answer lateness p99 {_fmt_ms(snapshot.late_p99_ms)}   ",
        ("dropped " + str(snapshot.dropped), "bold red" if snapshot.dropped else ""),
        f"   elapsed {snapshot.elapsed_s:.0f} s",
    )

    # Rows left for the piano rolls once the other panels have theirs (each roll adds 5: its scale,
    # two token lines, two borders), so the footer with the keys stays on screen.
    side = width >= SIDE_BY_SIDE_WIDTH
    rows = MAX_ROLL_ROWS
    if height is not None:
        def lines(*texts: Text, inner: int = width - 4) -> int:
            return sum(max(1, math.ceil(t.cell_len / max(1, inner))) for t in texts)

        others = (2 + lines(head, ports, controls) + 2 + lines(figures, rec) + 2
                  + max(1, min(3, len(e.warnings))) + (2 + min(3, len(log)) if log else 0) + lines(footer, inner=width))
        rows = max(2, min(MAX_ROLL_ROWS, (height - others) - 5 if side else (height - others) // 2 - 5))
    if side:
        half = width // 2
        rolls: RenderableType = Table.grid()
        rolls.add_row(
            _phrase_panel("last call", "call", e.call_tokens, half, rows),
            _phrase_panel("answer", "answer", e.answer_tokens, width - half, rows),
        )
    else:
        rolls = Group(_phrase_panel("last call", "call", e.call_tokens, width, rows),
                      _phrase_panel("answer", "answer", e.answer_tokens, width, rows))

    stats = Panel(Group(figures, rec), title="figures", title_align="left", width=width)

    warn = Text()
    for i, w in enumerate(e.warnings[-3:]):
        warn.append(("\n" if i else "") + "⚠ " + w, style="bold yellow")
    if not e.warnings:
        warn.append("none", style="dim")
    warnings = Panel(warn, title="warnings", title_align="left", width=width)
    parts: list[RenderableType] = [top, rolls, stats, warnings]
    if log:
        tail = Text("\n".join(line[: width - 4] for line in log[-3:]), style="dim", no_wrap=True)
        parts.append(Panel(tail, title="log", title_align="left", width=width))
    parts.append(footer)
    return Group(*parts)


# ---- the live view and the keys -----------------------------------------------------------------


class Dashboard:
    """Rich Live over a Session: `start()` returns at once, `stop()` restores the terminal.

    Keys (when stdin is a terminal): p panic, + / - temperature, r starts a recording to a new
    timestamped file (or finishes the running one), q quit.
    """

    def __init__(self, session: Any, stop_event: threading.Event, console: Console | None = None,
                 keys: bool = True, capture_stderr: bool = True, draw_in_process: bool | None = None) -> None:
        self.session = session
        self.stop_event = stop_event
        self.console = console or Console(stderr=False)
        # On the terminal a child process draws (ui/screen.py: Rich off the daemon's GIL); a given
        # console (tests, a file) is drawn here, and so is any with LIVEDUET_DRAW=thread (the old way:
        # for a terminal the child cannot draw on, and for bench_studio's before/after).
        if draw_in_process is None:
            draw_in_process = console is None and self.console.is_terminal and os.environ.get(DRAW_ENV) != "thread"
        self.draw_in_process = draw_in_process
        self._screen: Any = None
        self.harmony = HarmonyCache()
        self._keys_wanted = keys
        self._capture = capture_stderr
        self._live: Any = None
        self._log: LogBuffer | None = None
        self._quit = threading.Event()
        self._key_thread: threading.Thread | None = None
        self._tty_fd: int | None = None
        self._tty_saved: list | None = None
        self._notice = ""
        self._notice_until = 0.0
        self._pending_temp: tuple[float, float] | None = None  # (value, when): until a snapshot shows it

    # -- the frame ------------------------------------------------------------------------------------

    def frame(self) -> RenderableType:
        """Called by Live's refresh thread: the latest snapshot, rendered to the console's size."""
        snap = self.session.snapshot()
        harmony = self.harmony.names(*harmony_inputs(snap)) if snap is not None else None
        notice = self._notice if time.monotonic() < self._notice_until else ""
        log = self._log.tail() if self._log is not None else ()
        size = self.console.size
        return render(snap, size.width, size.height, harmony=harmony, log=log, notice=notice)

    def frame_inputs(self) -> tuple:
        """What the drawing child needs for a frame: the snapshot, the log's last lines, the notice."""
        notice = self._notice if time.monotonic() < self._notice_until else ""
        return plain(self.session.snapshot()), self._log.tail() if self._log is not None else (), notice

    def say(self, notice: str) -> None:
        self._notice, self._notice_until = notice, time.monotonic() + NOTICE_S

    # -- keys -------------------------------------------------------------------------------------------

    def handle_key(self, key: str) -> None:
        """One key press (the key thread, or a test)."""
        if key in "pP":
            self.session.send(commands.Panic())
            self.say("panic: all notes off")
        elif key in "+=-_":
            self._nudge_temperature(TEMPERATURE_STEP if key in "+=" else -TEMPERATURE_STEP)
        elif key in "rR":
            try:
                self.say(self.session.send(commands.Record()) or "")
            except Exception as err:  # a full disk, an unwritable folder: say it, keep playing
                self.say(f"recording failed: {err}")
        elif key in "qQ":
            self.say("quitting: all notes off, saving the recording")
            self.stop_event.set()

    def _nudge_temperature(self, delta: float) -> None:
        snap = self.session.snapshot()
        current = snap.engine.temperature if snap is not None else 1.0
        # Presses come faster than snapshots (10/s): build on our own last value until one shows it.
        if self._pending_temp is not None:
            value, when = self._pending_temp
            if abs(current - value) > 0.02 and time.monotonic() - when < 1.0:
                current = value
        lo, hi = commands.TEMPERATURE_RANGE
        value = round(min(hi, max(lo, current + delta)), 2)
        self._pending_temp = (value, time.monotonic())
        self.session.send(commands.SetTemperature(value))
        self.say(f"temperature → {value:.2f}")

    def _read_keys(self, fd: int) -> None:
        try:
            while not self._quit.is_set():
                ready, _, _ = select.select([fd], [], [], 0.1)
                if not ready:
                    continue
                data = os.read(fd, 32)
                if not data:
                    return  # stdin closed
                for key in data.decode("utf-8", "ignore"):
                    try:
                        self.handle_key(key)
                    except Exception as err:  # a failed key must not end the key thread: say so, go on
                        self.say(f"key {key!r} failed: {err}")
        finally:
            self._restore_tty()

    def _raw_stdin(self) -> int | None:
        """Put stdin in cbreak mode (keys arrive one by one, unechoed; Ctrl-C still signals)."""
        if not self._keys_wanted:
            return None
        try:
            import termios
            import tty

            fd = sys.stdin.fileno()
            if not os.isatty(fd):
                return None
            self._tty_saved = termios.tcgetattr(fd)
            self._tty_fd = fd
            tty.setcbreak(fd, termios.TCSANOW)  # TCSANOW: keys typed while starting are kept, not flushed
        except (ImportError, OSError, ValueError, AttributeError):
            return None
        return fd

    def _restore_tty(self) -> None:
        fd, saved = self._tty_fd, self._tty_saved
        if fd is None or saved is None:
            return
        self._tty_fd = self._tty_saved = None
        with contextlib.suppress(Exception):
            import termios

            termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    # -- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> None:
        from rich.live import Live

        # The restore must happen whatever ends the process short of a kill -9.
        atexit.register(self._restore_tty)

        # Not a terminal (output piped): no live screen to keep clean, so log lines go out as they come.
        if self._capture and self.console.is_terminal:
            self._log = LogBuffer(sys.stderr)
            sys.stderr = self._log  # type: ignore[assignment]
        fd = self._raw_stdin()
        if self.draw_in_process:
            from liveduet.ui.screen import ScreenProcess

            self._screen = ScreenProcess(self.frame_inputs, REFRESH_HZ)
            try:
                self._screen.start()
            except BaseException:
                self._restore_tty()
                self._release_stderr()
                raise
            self._start_keys(fd)
            return
        self._live = Live(
            console=self.console, get_renderable=self.frame, refresh_per_second=REFRESH_HZ,
            screen=self.console.is_terminal, redirect_stdout=False, redirect_stderr=False, transient=False,
        )
        try:
            self._live.start()
        except BaseException:
            self._restore_tty()
            self._release_stderr()
            raise
        self._start_keys(fd)
        # music21 runs in a worker process (see HarmonyCache); it imports music21 there right away,
        # while the player has barely begun.
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        self._executor = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), initializer=import_music21)
        self.harmony.executor = self._executor

    def _start_keys(self, fd: int | None) -> None:
        if fd is not None:
            self._key_thread = threading.Thread(target=self._read_keys, args=(fd,), name="liveduet-keys", daemon=True)
            self._key_thread.start()

    def stop(self) -> None:
        """Stop the view and the key thread; the terminal is as it was, the log printed below."""
        self._quit.set()
        executor = getattr(self, "_executor", None)
        if executor is not None:  # later frames keep the last names: submit() now raises, is caught
            executor.shutdown(wait=False, cancel_futures=True)
        try:
            if self._key_thread is not None:
                self._key_thread.join(1.0)
            if self._screen is not None:
                self._screen.stop()
            if self._live is not None:
                self._live.stop()
                if not self.console.is_terminal:
                    self.console.line()  # the last frame ends without one; log lines follow it
        finally:
            self._restore_tty()
            self._release_stderr()
            atexit.unregister(self._restore_tty)

    def _release_stderr(self) -> None:
        log, self._log = self._log, None
        if log is None:
            return
        if sys.stderr is log:
            sys.stderr = log.original
        lines = log.drain()
        if lines:
            log.original.write("\n".join(lines) + "\n")
            log.original.flush()
