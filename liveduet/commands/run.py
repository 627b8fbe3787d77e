"""`liveduet run --in KEYBOARD --out SYNTH`: the duet daemon."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

from liveduet.errors import ConfigError, LiveduetError, OutputPathError
from liveduet.fsutil import os_error_line

EXAMPLES = """examples:
  liveduet run --in Keyboard --out Synth --record session.mid
  liveduet run --in examples/call-and-response.mid --record duet.mid      (no MIDI hardware)
  liveduet run --virtual --in liveduet-in --out liveduet-out               (ports for a DAW)
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="play a duet: listen on a MIDI input, answer on a MIDI output",
        description="Listen to the player on a MIDI input; when a phrase ends (silence, or a gesture), answer "
        "it in the player's tempo through the output, streaming the model's tokens. The player's notes go "
        "straight through to the output (thru). Ctrl-C ends the session with all notes off and a finished "
        "recording.", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--in", dest="inp", required=True, metavar="PORT|FILE.mid",
                   help="input port (exact name or a unique part of it), or a MIDI file played as the player")
    p.add_argument("--out", metavar="PORT", help="output port (a synth); omit to only record")
    p.add_argument("--virtual", action="store_true", help="create our own ports named --in/--out (for DAWs)")
    p.add_argument("--backend", choices=["alsa", "jack"], help="MIDI backend (default: $MIDO_BACKEND, else rtmidi's)")
    p.add_argument("--model", type=Path, help="exported model folder (default: the shipped models/default)")
    p.add_argument("--config", type=Path, help="live settings TOML (see configs/live.toml)")
    p.add_argument("--tempo", type=float, help="fix the tempo in bpm instead of estimating it from each call")
    p.add_argument("--temperature", type=float, help="sampling temperature 0.1..2.0 (live on the mod wheel)")
    p.add_argument("--no-thru", action="store_true", help="do not pass the player's notes to the output")
    p.add_argument("--mode", choices=["call", "echo", "accompany"],
                   help="call: call and response (default); echo: plays your call back (checks routing and "
                   "latency); accompany: plays along beat by beat while you play")
    p.add_argument("--metronome", action="store_true", help="click every beat on channel 10 (fixed tempo)")
    p.add_argument("--count-in", type=int, metavar="BARS", help="bars of clicks before listening starts")
    p.add_argument("--call-bars", type=int, metavar="N", help="every call lasts N bars instead of ending at a silence")
    p.add_argument("--follow-clock", action="store_true",
                   help="take tempo and beat from incoming MIDI clock (e.g. a DAW's), not from the calls")
    p.add_argument("--record", type=Path, metavar="FILE.mid", help="record the session (type-1 MIDI, crash-safe)")
    p.add_argument("--force", action="store_true", help="overwrite an existing recording")
    p.add_argument("--stats", type=Path, metavar="FILE.jsonl", help="append one JSON line of timing per answer")
    p.add_argument("--no-dashboard", action="store_true", help="plain log lines instead of the dashboard")
    p.add_argument("--duration", type=float, help="end the session after this many seconds")
    p.add_argument("--seed", type=int, help="random seed for repeatable answers")
    p.set_defaults(func=run)


def _settings(args: argparse.Namespace):
    from liveduet.live.settings import load_live_settings

    settings = load_live_settings(args.config)
    over: dict[str, dict] = {}
    if args.tempo is not None:
        over["tempo"] = {"bpm": float(args.tempo)}
    if args.temperature is not None:
        over["answer"] = {"temperature": float(args.temperature)}
    if args.no_thru:
        over["controls"] = {"thru": False}
    if args.follow_clock:
        over.setdefault("tempo", {})["follow_clock"] = True
    practice = {k: v for k, v in (("mode", args.mode), ("metronome", args.metronome or None),
                                  ("count_in_bars", args.count_in), ("call_bars", args.call_bars)) if v is not None}
    if practice:
        over["practice"] = practice
        if (args.metronome or args.count_in) and not (args.tempo or settings.tempo.bpm or args.follow_clock):
            raise ConfigError("--metronome and --count-in need a tempo: add --tempo BPM (or --follow-clock)")
    try:
        return settings.with_overrides(**over) if over else settings
    except ConfigError as err:
        raise ConfigError(str(err).replace("override: ", "")) from err


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse output paths that cannot be written, in one line, before anything starts."""
    from liveduet.fsutil import check_output_file
    from liveduet.live.recorder import check_recording_path

    if args.record:
        check_recording_path(args.record, force=args.force)
    if args.stats:
        check_output_file(args.stats, "--stats", force=True)  # appended to: it may exist


def run(args: argparse.Namespace) -> int:
    from liveduet.io import ports
    from liveduet.live.clock import MonotonicClock
    from liveduet.live.fileplayer import FilePlayer, load_player_file
    from liveduet.live.recorder import Recorder
    from liveduet.live.session import Session, answer_sampler
    from liveduet.model.runtime import ModelRuntime, default_model_dir

    settings = _settings(args)
    file_input = not args.virtual and args.inp.lower().endswith((".mid", ".midi", ".kar"))
    player_events = load_player_file(args.inp) if file_input else None
    if args.virtual and not args.out:
        raise LiveduetError("--virtual needs --out too: the name of the output port to create")
    check_outputs(args)

    say = _logger(args.no_dashboard)
    runtime = ModelRuntime.load(args.model or default_model_dir())
    sampler = answer_sampler(runtime, settings.answer, seed=args.seed)

    backend = None
    if not file_input or args.out:
        backend = ports.get_backend(args.backend)
    clock = MonotonicClock()
    out_port = None
    if args.out:
        out_port = ports.open_output(backend, args.out, virtual=args.virtual)
    recorder = None
    running: list = []  # the session, once there is one (the recorder may warn before)

    def warn(line: str) -> None:  # a problem the player should see, without stopping the duet
        if running:
            running[0].engine.warnings.append(line)
        say(line)

    code = 0
    try:
        if args.record:
            recorder = Recorder(args.record, force=args.force, clock=clock,
                                tempo_bpm=settings.tempo.bpm or settings.tempo.initial_bpm, on_warning=warn)
        try:
            session = Session(settings, runtime.vocab, sampler, clock, recorder, args.stats, say, args.seed,
                              input_name=args.inp,
                              output_name=getattr(out_port, "name", "") if out_port else "(none)")
        except OSError as err:  # the --stats file, checked above, went away since
            raise OutputPathError(f"cannot open --stats {args.stats}: {os_error_line(err)}") from err
        running.append(session)
        session.set_output(out_port)
        session.start()
        in_port = player = None
        held: dict = {}  # the open input port, swapped by the hot-plug watcher
        if file_input:
            player = FilePlayer(player_events, session.listener.callback, clock, name=args.inp)
        else:
            in_port = ports.open_input(backend, args.inp, session.listener.callback, virtual=args.virtual)
            session.input_name = in_port.name
            held["input"] = in_port
        watchers = _watch(backend, args, session, say, held, out_port) if backend is not None and not args.virtual \
            else []
        say(f"listening on {session.input_name}, answering on {session.output_name}"
            + (f", recording to {args.record}" if args.record else ""))
        if player is not None:
            player.start()
        code = _wait(args, session, player, say)
    finally:
        # Producers first, ports last: nothing may send on a closed port.
        for watcher in locals().get("watchers") or []:
            watcher.stop()
        if locals().get("player") is not None:
            player.stop()
        if locals().get("held") and held.get("input") is not None:
            held["input"].close()
        if running:
            session.stop()
            port = session.take_output()
        else:
            port = out_port
        if port is not None:
            port.close()
        if running:
            recorder = session.recorder  # the one running now: `r` in the dashboard may have swapped it
        if recorder is not None:
            code = _finish_recording(recorder, session.engine.bpm if running else None, say) or code
    if running:
        _print_summary(session.summary(), args.record, args.no_dashboard)
    return code


def _finish_recording(recorder, bpm: float | None, say) -> int:
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


def _print_summary(summary: dict, record: Path | None, plain: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="liveduet session", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(justify="right")
    labels = {
        "duration_s": "duration (s)", "calls": "calls", "answers": "answers", "notes_heard": "notes heard",
        "notes_played": "notes played", "model_step_ms_p50": "model step p50 (ms)",
        "model_step_ms_p99": "model step p99 (ms)", "answer_late_ms_p99": "answer lateness p99 (ms)",
        "answer_late_ms_max": "answer lateness max (ms)", "events_dropped": "input events dropped",
    }
    for key, label in labels.items():
        table.add_row(label, "-" if summary.get(key) is None else str(summary[key]))
    if record:
        table.add_row("recording", str(record))
    Console(stderr=not plain, highlight=False).print(table)


def _wait(args: argparse.Namespace, session, player, say) -> int:
    stop = threading.Event()
    got: list[int] = []

    def on_signal(signum, frame):  # noqa: ARG001
        got.append(signum)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    started = time.monotonic()
    dashboard = None
    if not args.no_dashboard:
        try:
            from liveduet.ui.dashboard import Dashboard
        except ImportError:
            Dashboard = None  # noqa: N806
        if Dashboard is not None:
            dashboard = Dashboard(session, stop)
            dashboard.start()
    try:
        while not stop.wait(0.1):
            if args.duration is not None and time.monotonic() - started >= args.duration:
                break
            if player is not None and player.done.is_set() and session.idle():
                time.sleep(0.3)  # let the last note-offs go out before the summary
                break
    finally:
        if dashboard is not None:
            dashboard.stop()
        for s, handler in old.items():
            signal.signal(s, handler)
    if got:
        say(f"stopping ({signal.Signals(got[0]).name}): all notes off")
    return 0


def _watch(backend, args, session, say, held: dict, out_port=None) -> list:
    """Hot-plug: one poller per direction, each watching the port it holds (a device often has an
    input and an output of one name). A MIDI file as input has no port to watch."""
    from liveduet.io import ports

    def lost(kind: str, name: str) -> None:
        session.engine.warnings.append(f"{kind} port lost: {name}")
        say(f"{kind} port lost: {name} — still running; will reconnect when it returns")
        setattr(session, f"{kind}_ok", False)

    def back(kind: str, name: str) -> None:
        try:
            if kind == "output":
                old = session.take_output()  # nothing sends on it once detached
                if old is not None:
                    old.close()
                session.set_output(ports.open_output(backend, name), name)
            else:
                # The connection died with the device (JACK and ALSA alike): open anew, then close
                # the old port; the listener is the same, so nothing downstream notices.
                new = ports.open_input(backend, name, session.listener.callback)
                old, held["input"] = held.get("input"), new
                session.input_name = new.name
                if old is not None:
                    old.close()
            setattr(session, f"{kind}_ok", True)
            say(f"{kind} port back: {name}")
        except LiveduetError as err:
            say(f"reconnecting {name} failed: {err}")

    watchers = []
    lister = ports.PortLister(backend)
    for kind, query, port in watched_ports(args, held.get("input"), out_port):
        watcher = ports.PortWatcher(
            lambda k=kind: lister.names(k), {query: port.name},
            on_lost=lambda n, k=kind: lost(k, n), on_back=lambda n, k=kind: back(k, n), kind=kind,
        )
        watcher.start()
        watchers.append(watcher)
    return watchers


def watched_ports(args: argparse.Namespace, in_port, out_port) -> list[tuple[str, str, object]]:
    """(kind, what the user typed, the open port) for each connection hot-plug should watch: the
    ports we opened, by the names they were opened as. A file input opened none; our own virtual
    ports cannot be unplugged."""
    if args.virtual:
        return []
    return [(kind, query, port) for kind, query, port in (("input", args.inp, in_port), ("output", args.out, out_port))
            if port is not None and query]


def _logger(plain: bool):
    start = time.monotonic()

    def say(line: str) -> None:
        print(f"[{time.monotonic() - start:7.2f}] {line}", file=sys.stderr if not plain else sys.stdout, flush=True)

    return say

