"""`liveduet run --in KEYBOARD --out SYNTH`: the duet daemon."""

from __future__ import annotations

import argparse
from pathlib import Path

from liveduet.errors import ConfigError, LiveduetError

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
    p.add_argument("--mode", choices=["call", "echo", "accompany", "vary"],
                   help="call: call and response (default); echo: plays your call back (checks routing and "
                   "latency); accompany: plays along beat by beat while you play; vary: answers each call with "
                   "a variation of it (the phrase VAE in models/vary)")
    p.add_argument("--variation", type=float, metavar="SIGMA",
                   help="vary mode: how far from the call, σ 0..2 (0 = a near-copy; live on the mod wheel)")
    p.add_argument("--metronome", action="store_true", help="click every beat on channel 10 (fixed tempo)")
    p.add_argument("--count-in", type=int, metavar="BARS", help="bars of clicks before listening starts")
    p.add_argument("--call-bars", type=int, metavar="N", help="every call lasts N bars instead of ending at a silence")
    p.add_argument("--follow-clock", action="store_true",
                   help="take tempo and beat from incoming MIDI clock (e.g. a DAW's), not from the calls")
    p.add_argument("--record", type=Path, metavar="FILE.mid", help="record the session (type-1 MIDI, crash-safe)")
    p.add_argument("--force", action="store_true", help="overwrite an existing recording")
    p.add_argument("--stats", type=Path, metavar="FILE.jsonl", help="append one JSON line of timing per answer")
    p.add_argument("--no-dashboard", action="store_true", help="plain log lines instead of the dashboard")
    p.add_argument("--web", type=int, nargs="?", const=8765, metavar="PORT",
                   help="also serve the live page (liveduet studio's Live tab) on http://127.0.0.1:PORT (default 8765)")
    p.add_argument("--web-host", default="127.0.0.1", metavar="HOST",
                   help="address for --web (others need --web-token)")
    p.add_argument("--web-token", metavar="SECRET", help="a secret the live page must present (required off localhost)")
    p.add_argument("--duration", type=float, help="end the session after this many seconds")
    p.add_argument("--seed", type=int, help="random seed for repeatable answers")
    p.add_argument("--sender", choices=["process", "thread"], default="process",
                   help="send answers from their own process (default: the model and the views never make a "
                   "note late) or from a thread of the daemon")
    p.set_defaults(func=run)


def _settings(args: argparse.Namespace):
    from liveduet.live.settings import load_live_settings

    settings = load_live_settings(args.config)
    over: dict[str, dict] = {}
    if args.tempo is not None:
        over["tempo"] = {"bpm": float(args.tempo)}
    if args.temperature is not None:
        over["answer"] = {"temperature": float(args.temperature)}
    if args.variation is not None:
        over.setdefault("answer", {})["variation"] = float(args.variation)
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
    from liveduet.live.duet import Duet, DuetOptions
    from liveduet.live.fileplayer import load_player_file
    from liveduet.live.session import answer_sampler
    from liveduet.live.summary import logger
    from liveduet.model.runtime import ModelRuntime, default_model_dir

    settings = _settings(args)
    file_input = not args.virtual and args.inp.lower().endswith((".mid", ".midi", ".kar"))
    player_events = load_player_file(args.inp) if file_input else None
    if args.virtual and not args.out:
        raise LiveduetError("--virtual needs --out too: the name of the output port to create")
    check_outputs(args)
    web = _web(args)  # its host and token are checked before the model loads

    say = logger(args.no_dashboard)
    runtime = ModelRuntime.load(args.model or default_model_dir())
    sampler = answer_sampler(runtime, settings.answer, seed=args.seed)
    backend = ports.get_backend(args.backend) if not file_input or args.out else None
    options = DuetOptions(inp=args.inp, out=args.out, virtual=args.virtual, record=args.record, force=args.force,
                          stats=args.stats, duration=args.duration, seed=args.seed, plain=args.no_dashboard,
                          sender=args.sender)
    views = [v for v in (web, None if args.no_dashboard else _dashboard()) if v is not None]
    return Duet(settings, runtime.vocab, sampler, options, backend=backend, player_events=player_events, say=say,
                view=views).run()


def _web(args: argparse.Namespace):
    """The live page's maker for --web (checked before anything starts), or None."""
    if args.web is None:
        return None
    from liveduet.web.server import check_exposure
    from liveduet.web.view import live_view

    if not 0 <= args.web <= 65535:
        raise ConfigError(f"--web PORT must be in 0..65535, got {args.web}")
    check_exposure(args.web_host, args.web_token, ("--web-host", "--web-token"))
    folder = args.record.parent if args.record else Path(".")
    return live_view(args.web, args.web_host, args.web_token, folder)


def _dashboard():
    """The terminal dashboard's maker, or None where it cannot be imported."""
    try:
        from liveduet.ui.dashboard import Dashboard
    except ImportError:
        return None
    return Dashboard
