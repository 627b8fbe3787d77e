"""The terminal dashboard: a view that pulls the session's snapshot ~10 times a second.

    Session.snapshot()  ──(Rich Live refresh thread, 10 Hz)──>  render(snapshot, width)  ──> terminal
    stdin (cbreak, key thread)  ──>  session.send(Panic() | SetTemperature(v) | Record()) / stop_event

Nothing here is on the real-time path: the engine publishes an immutable snapshot and never waits
for us. Music theory (key, chord names with music21) is computed here, from the token names in the
snapshot, and cached by input, because music21 costs tens of milliseconds — far too much for the
engine thread. While the dashboard runs, stderr (the session's log lines) goes to an in-memory buffer
shown in a panel and printed after exit, so a log line from the engine thread never waits on the
terminal or on Rich's render lock.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import math
import os
import select
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from liveduet.errors import VocabularyError
from liveduet.live import commands
from liveduet.music.tokens import NOTE_NAMES, REST_NAME, TICKS, parse_pitch, pitch_name

REFRESH_HZ = 10
TEMPERATURE_STEP = 0.1
KEY_EVERY_S = 0.5  # music21 key analysis costs ~30 ms: at most twice a second while a call grows
MAX_ROLL_ROWS = 12
NOTICE_S = 3.0  # how long the footer shows the result of a key press
STATE_STYLE = {"listening": "bold green", "calling": "bold cyan", "entering": "bold magenta",
               "answering": "bold magenta"}
PART_STYLE = {"call": "cyan", "answer": "magenta"}
SIDE_BY_SIDE_WIDTH = 90  # narrower terminals get the call and answer rolls stacked
NO_OUTPUT = ("", "(none)")  # what `liveduet run` names the output when there is none (record only)
FOOTER_KEYS = "p panic   + / - temperature   r record on/off   q quit"

Event = tuple[tuple[int, ...], int]  # (pitches, duration in twelfths of a beat), as in music.tokens


# ---- tokens → events ----------------------------------------------------------------------------


def parse_token_names(names: Iterable[str]) -> list[Event]:
    """Token names ("E4+G4+C5", "R", "d1/2", ...) → (pitches, twelfths) events.

    The snapshot holds only the last tokens of a phrase, so it may start with a duration: a
    duration without a pitch before it is skipped, as are specials and a trailing pitch.
    """
    events: list[Event] = []
    pending: tuple[int, ...] | None = None
    for name in names:
        if name.startswith("d") and len(name) > 1 and name[1].isdigit():
            if pending is not None:
                events.append((pending, max(1, round(Fraction(name[1:]) * TICKS))))
                pending = None
        elif name == REST_NAME:
            pending = ()
        elif name.startswith("<"):
            continue
        else:
            try:
                pending = tuple(sorted(parse_pitch(p) for p in name.split("+")))
            except VocabularyError:
                pending = None
    return events


# ---- music theory (off the hot path, cached) ----------------------------------------------------


def _display(name: str) -> str:
    """music21 spells flats with '-' ("B-"): show them as 'b'."""
    return name.replace("-", "b")


@functools.lru_cache(maxsize=256)
def key_name(names: tuple[str, ...]) -> str:
    """The key of a token sequence by music21's Krumhansl–Schmuckler analysis ("G major"), or "—"."""
    events = [e for e in parse_token_names(names) if e[0]]
    if not events:
        return "—"
    from music21 import chord, note, stream  # ~0.7 s to import: only once a phrase is there

    s = stream.Stream()
    for pitches, dur in events:
        ql = dur / TICKS
        s.append(note.Note(pitches[0], quarterLength=ql) if len(pitches) == 1
                 else chord.Chord(pitches, quarterLength=ql))
    try:
        k = s.analyze("key")
    except Exception:  # music21 raises assorted errors on degenerate input; a name is not worth a crash
        return "—"
    return f"{_display(k.tonic.name)} {k.mode}"


@functools.lru_cache(maxsize=256)
def chord_name(pitches: tuple[int, ...]) -> str:
    """A pitch set's name by music21 ("C major triad", "G dominant seventh chord"), or "—"."""
    if not pitches:
        return "—"
    classes = {p % 12 for p in pitches}
    if len(classes) == 1:
        return NOTE_NAMES[min(pitches) % 12] + " (one note)"
    from music21 import chord

    try:
        c = chord.Chord(list(pitches))
        root, common = c.root().name, c.commonName
    except Exception:  # as above
        return "—"
    if len(classes) == 2:  # a dyad reads better as "minor third on C" than music21's "Minor Third above C"
        return f"{common.lower()} on {_display(c.bass().name)}"
    return f"{_display(root)} {common}"


def current_pitches(events: Sequence[Event], beats: float = 1.0) -> tuple[int, ...]:
    """The pitches struck in the last `beats` of the phrase (at least its last pitched event):
    the "current chord" of a melody is the harmony its recent notes outline."""
    window = round(beats * TICKS)
    out: set[int] = set()
    end = sum(d for _, d in events)
    pos = end
    for pitches, dur in reversed(events):
        pos -= dur
        if end - pos > window and out:
            break
        out.update(pitches)
    return tuple(sorted(out))


@dataclass(frozen=True)
class Harmony:
    key: str
    chord: str


def harmony_names(key_tokens: tuple[str, ...], chord_tokens: tuple[str, ...]) -> tuple[str, str]:
    """(key, chord) names by music21: what the harmony worker process computes."""
    return key_name(key_tokens), chord_name(current_pitches(parse_token_names(chord_tokens)))


class HarmonyCache:
    """Key and chord names for the dashboard: cached by input; the key (the costly part) is
    re-analysed at most every `key_every_s` while a phrase grows, the chord on every change.

    With an `executor` (the live dashboard: one worker *process*) music21 runs there and `names`
    never waits: it returns the latest finished answer. music21 is pure Python: ~30 ms of it in a
    thread of the daemon held the GIL long enough to make scheduled notes 80 ms late.
    """

    def __init__(self, key_every_s: float = KEY_EVERY_S, clock: Callable[[], float] = time.monotonic,
                 executor: Any = None) -> None:
        self.key_every_s = key_every_s
        self.clock = clock
        self.executor = executor
        self._key_input: tuple[str, ...] | None = None
        self._chord_input: tuple[str, ...] | None = None
        self._key = "—"
        self._chord = "—"
        self._key_at = -math.inf
        self._pending: Any = None

    def names(self, key_tokens: tuple[str, ...], chord_tokens: tuple[str, ...]) -> Harmony:
        now = self.clock()
        key_due = key_tokens != self._key_input and now - self._key_at >= self.key_every_s
        if self.executor is None:
            if key_due:
                self._key_input, self._key, self._key_at = key_tokens, key_name(key_tokens), now
            return Harmony(self._key, chord_name(current_pitches(parse_token_names(chord_tokens))))
        if self._pending is not None and self._pending.done():
            try:
                self._key, self._chord = self._pending.result()
            except Exception:  # a dead worker: keep the last names rather than break the view
                pass
            self._pending = None
        if self._pending is None and (key_due or chord_tokens != self._chord_input):
            ask_key = key_tokens if key_due else self._key_input or ()
            self._key_input, self._chord_input = ask_key, chord_tokens
            if key_due:
                self._key_at = now
            try:
                self._pending = self.executor.submit(harmony_names, ask_key, chord_tokens)
            except RuntimeError:  # shut down
                pass
        return Harmony(self._key, self._chord)


def harmony_inputs(snapshot: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Which tokens name the key (the last call and its answer together) and the current chord
    (the part sounding now: the answer while answering, else the call)."""
    e = snapshot.engine
    key_tokens = tuple(e.call_tokens) + tuple(e.answer_tokens)
    chord_tokens = tuple(e.answer_tokens) if e.state == "answering" or not e.call_tokens else tuple(e.call_tokens)
    return key_tokens, chord_tokens


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
        (f"×{e.length_ratio:.2f}", "bold"), "   mode ", (e.mode, "bold"), "   scale lock ",
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


def _import_music21() -> None:
    with contextlib.suppress(ImportError):
        import music21.chord  # noqa: F401
        import music21.stream  # noqa: F401


class LogBuffer:
    """Stands in for sys.stderr while the dashboard runs: `write` appends to a deque, nothing more,
    so a log line from the engine thread costs microseconds and never waits on a lock or a tty."""

    def __init__(self, original: TextIO, maxlen: int = 5000) -> None:
        self.original = original
        self.lines: deque[str] = deque(maxlen=maxlen)
        self._partial = ""

    def write(self, text: str) -> int:
        *done, self._partial = (self._partial + text).split("\n")
        self.lines.extend(done)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.original.fileno()  # for faulthandler & co: they bypass Python's buffers anyway

    @property
    def encoding(self) -> str:
        return getattr(self.original, "encoding", "utf-8")

    def drain(self) -> list[str]:
        out = list(self.lines) + ([self._partial] if self._partial else [])
        self.lines.clear()
        self._partial = ""
        return out


class Dashboard:
    """Rich Live over a Session: `start()` returns at once, `stop()` restores the terminal.

    Keys (when stdin is a terminal): p panic, + / - temperature, r starts a recording to a new
    timestamped file (or finishes the running one), q quit.
    """

    def __init__(self, session: Any, stop_event: threading.Event, console: Console | None = None,
                 keys: bool = True, capture_stderr: bool = True) -> None:
        self.session = session
        self.stop_event = stop_event
        self.console = console or Console(stderr=False)
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
        log = list(self._log.lines)[-3:] if self._log is not None else ()
        size = self.console.size
        return render(snap, size.width, size.height, harmony=harmony, log=log, notice=notice)

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
        if fd is not None:
            self._key_thread = threading.Thread(target=self._read_keys, args=(fd,), name="liveduet-keys", daemon=True)
            self._key_thread.start()
        # music21 runs in a worker process (see HarmonyCache); it imports music21 there right away,
        # while the player has barely begun.
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        self._executor = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), initializer=_import_music21)
        self.harmony.executor = self._executor

    def stop(self) -> None:
        """Stop the view and the key thread; the terminal is as it was, the log printed below."""
        self._quit.set()
        executor = getattr(self, "_executor", None)
        if executor is not None:  # later frames keep the last names: submit() now raises, is caught
            executor.shutdown(wait=False, cancel_futures=True)
        try:
            if self._key_thread is not None:
                self._key_thread.join(1.0)
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
