"""`liveduet studio`: the web studio on http://127.0.0.1:8765 — recordings and the generator."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

EXAMPLES = """examples:
  liveduet studio                                   (then open http://127.0.0.1:8765)
  liveduet studio --recordings sessions/ --models models/ --port 9000
  liveduet studio --host 0.0.0.0 --token SECRET     (on a network: a token is required)
  liveduet run --in Keyboard --out Synth --web      (the live page of a duet, beside the dashboard)
"""


def register(sub: argparse._SubParsersAction) -> None:
    from liveduet.web.server import DEFAULT_PORT

    p = sub.add_parser(
        "studio", help="the web studio: recordings as piano rolls, audio and scores; generation",
        description="Serve the web studio: the recordings folder as a list (each opens as a piano roll, plays in "
        "the browser, downloads as .mid, opens as a score) and the generator (model, temperature, top-p, length, "
        "tempo, complexity, a primer; vary and morph a primer with a VAE folder). Opens no browser by itself."
        " The live page of a duet is served by "
        "`liveduet run ... --web`.", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need --token)")
    p.add_argument("--token", help="a secret the page must present (required off localhost)")
    p.add_argument("--recordings", type=Path, default=Path("."), metavar="DIR",
                   help="folder of recorded sessions (.mid; default: the current folder)")
    p.add_argument("--models", type=Path, action="append", metavar="DIR",
                   help="an exported model folder, or a folder of them (repeatable; default: the shipped models)")
    p.add_argument("--cache", type=Path, metavar="DIR", help="where rendered audio and scores are kept "
                   "(default: ~/.cache/liveduet/studio)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import signal

    from liveduet.errors import ConfigError
    from liveduet.web.app import Studio, create_app
    from liveduet.web.library import list_models
    from liveduet.web.media import Media
    from liveduet.web.server import WebServer, check_exposure

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {args.port}")
    check_exposure(args.host, args.token)
    if not args.recordings.is_dir():
        raise ConfigError(f"--recordings {args.recordings}: not a folder")
    models = list_models(args.models or _default_models())
    studio = Studio(recordings=args.recordings, models=models, host=args.host, token=args.token,
                    media=Media(args.cache) if args.cache else None)
    server = WebServer(create_app(studio), args.host, args.port, args.token)
    server.start()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(f"liveduet studio on {server.url} ({len(models)} model(s), recordings in {args.recordings}); "
          "Ctrl-C ends it", flush=True)
    try:
        stop.wait()
    finally:
        server.stop()
    return 0


def _default_models() -> list[Path]:
    from liveduet.errors import ModelLoadError
    from liveduet.model.runtime import default_model_dir

    try:
        return [default_model_dir().parent]
    except ModelLoadError:
        return []
