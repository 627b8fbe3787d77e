"""`liveduet morph A.mid B.mid --steps 5 --out morph.mid`: from one phrase to another through the VAE's latent space."""

from __future__ import annotations

import argparse
from pathlib import Path

STEPS_RANGE = (2, 64)  # phrases from A to B, both included


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "morph",
        help="interpolate between two phrases in the phrase VAE's latent space",
        description="Encode the first window of A and of B with the phrase VAE (models/vary), interpolate "
        "spherically between their latents (MusicVAE's slerp) in --steps steps from A to B, and write the "
        "decoded phrases one after the other (each one window, e.g. 8 beats) into one MIDI file.",
    )
    p.add_argument("a", type=Path, metavar="A.mid", help="the phrase to start from")
    p.add_argument("b", type=Path, metavar="B.mid", help="the phrase to arrive at")
    p.add_argument("--steps", type=int, default=5, help="phrases from A to B, both included (default 5)")
    p.add_argument("--out", type=Path, required=True, help="MIDI file to write")
    p.add_argument("--model", type=Path, help="VAE folder (default: $LIVEDUET_VARY_MODEL or models/vary)")
    p.add_argument("--bpm", type=float, help="tempo (default: A's)")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    from liveduet.commands.vary import add_keep_key

    add_keep_key(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from liveduet.commands.vary import check_bpm, read_phrase, write_phrase
    from liveduet.errors import ConfigError
    from liveduet.fsutil import check_output_file
    from liveduet.live.vary import morph_events
    from liveduet.model.vae_export import load_vae

    if not STEPS_RANGE[0] <= args.steps <= STEPS_RANGE[1]:
        raise ConfigError(f"--steps must be {STEPS_RANGE[0]}..{STEPS_RANGE[1]}, got {args.steps}")
    check_bpm(args.bpm)
    check_output_file(args.out, "the MIDI file", force=args.force)
    vae = load_vae(args.model)
    a, bpm = read_phrase(args.a, vae)
    b, _ = read_phrase(args.b, vae)
    phrases = morph_events(vae, a, b, args.steps, keep_key=args.keep_key)
    write_phrase([e for phrase in phrases for e in phrase], args.bpm or bpm, args.out, force=args.force,
                 title=f"liveduet morph {args.a.name} -> {args.b.name}")
    print(f"wrote {args.steps} phrases of {vae.cfg.window_beats} beats from {args.a} to {args.b} to {args.out}")
    return 0
