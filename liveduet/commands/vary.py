"""`liveduet vary CALL.mid --sigma 0.5 --n 4 --out variations/`: a phrase played back, varied (the phrase VAE)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liveduet.commands.generate import VELOCITY

if TYPE_CHECKING:
    import mido

    from liveduet.music.midifile import MidiNotes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "vary",
        help="write variations of a phrase (the phrase VAE: z' = z + σ·ε)",
        description="Encode a MIDI phrase with the phrase VAE (models/vary), move its latent by σ·ε and "
        "decode N variations, each as long as the phrase and at its tempo, into --out as "
        "<name>-var<k>.mid. σ = 0 plays the phrase back as the VAE hears it. A phrase longer than the VAE's "
        "window is varied window by window; a shorter one is repeated to fill the window, then cut back.",
    )
    p.add_argument("call", type=Path, metavar="CALL.mid", help="the phrase to vary")
    p.add_argument("--sigma", type=float, default=0.5, help="variation σ >= 0 (default 0.5; 0 = a near-copy)")
    p.add_argument("--n", type=int, default=4, help="how many variations (default 4)")
    p.add_argument("--out", type=Path, required=True, help="folder for the variations (created)")
    p.add_argument("--model", type=Path, help="VAE folder (default: $LIVEDUET_VARY_MODEL or models/vary)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same variations)")
    p.add_argument("--bpm", type=float, help="tempo of the output (default: the phrase's)")
    p.add_argument("--force", action="store_true", help="overwrite existing files in --out")
    add_keep_key(p)
    p.set_defaults(func=run)


def add_keep_key(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-keep-key", dest="keep_key", action="store_false",
                   help="let the VAE leave the phrase's key (by default it picks only pitches in its key scale or "
                   "among its own pitch classes)")


SIGMA_MAX = 10.0  # σ beyond this decodes noise; `vary` and the studio refuse it


def phrase_events(midi: MidiNotes, vae: Any) -> list:
    """A file's notes as the VAE's events (quantised, chords mapped into its vocabulary); MidiFileError
    when it has none. `vary`, `morph` and the studio's Generate tab read phrases through this."""
    from liveduet.errors import MidiFileError
    from liveduet.music.stream import tokenize_notes

    events = tokenize_notes(midi.notes, vae.vocab.settings, midi.pedal)
    if not any(p for p, _ in events):
        raise MidiFileError("has no notes (an empty phrase cannot be varied)")
    return list(vae.vocab.decode(vae.vocab.encode(events)))


def variations(vae: Any, events: list, sigma: float, n: int, seed: int, keep_key: bool = True) -> list[list]:
    """N variations of a phrase at σ, the k-th from seed·1000 + k (same seed, same variations)."""
    from liveduet.live.vary import vary_events

    return [vary_events(vae, events, sigma, seed=seed * 1000 + k, keep_key=keep_key) for k in range(n)]


def phrase_midi(events: list, bpm: float, title: str) -> mido.MidiFile:
    """Events → a one-track piano MIDI file at `bpm`."""
    from liveduet.music.midifile import notes_to_midi
    from liveduet.music.tokens import TICKS, events_to_notes

    notes = [(on / TICKS, off / TICKS, pitch, VELOCITY) for on, off, pitch in events_to_notes(events)]
    title = title.encode("latin-1", "replace").decode("latin-1")  # what a MIDI track name can hold
    return notes_to_midi(notes, bpm=bpm, track_name=title)


def read_phrase(path: Path, vae: Any) -> tuple[list, float]:
    """A MIDI file's notes as the VAE's events, and its tempo; errors name the file."""
    from liveduet.errors import MidiFileError
    from liveduet.music.midifile import read_midi

    try:
        midi = read_midi(path)
        return phrase_events(midi, vae), midi.first_bpm
    except MidiFileError as err:  # the reader's reasons name no file: say which one
        raise MidiFileError(f"{path}: {err}") from err


def write_phrase(events: list, bpm: float, path: Path, force: bool, title: str) -> None:
    """Events → a piano MIDI file at `bpm`, written atomically."""
    from liveduet.errors import OutputPathError
    from liveduet.fsutil import os_error_line
    from liveduet.music.midifile import save_atomic

    try:
        save_atomic(phrase_midi(events, bpm, title), path, force=force)
    except OSError as err:
        raise OutputPathError(f"cannot write {path}: {os_error_line(err)}") from err


def check_bpm(bpm: float | None) -> None:
    from liveduet.errors import ConfigError

    if bpm is not None and not 10 <= bpm <= 400:
        raise ConfigError(f"--bpm must be in 10..400, got {bpm}")


def run(args: argparse.Namespace) -> int:
    from liveduet.errors import ConfigError, OutputPathError
    from liveduet.fsutil import check_output_folder
    from liveduet.model.vae_export import load_vae
    from liveduet.music.tokens import TICKS

    if not 0 <= args.sigma <= SIGMA_MAX:  # NaN fails too
        raise ConfigError(f"--sigma must be in 0..{SIGMA_MAX:g}, got {args.sigma}")
    if not 1 <= args.n <= 1000:
        raise ConfigError(f"--n must be 1..1000, got {args.n}")
    check_bpm(args.bpm)
    check_output_folder(args.out, "the variations")
    vae = load_vae(args.model)
    events, file_bpm = read_phrase(args.call, vae)
    bpm = args.bpm or file_bpm
    paths = [args.out / f"{args.call.stem}-var{k + 1}.mid" for k in range(args.n)]
    taken = [p for p in paths if p.exists()]
    if taken and not args.force:
        raise OutputPathError(f"{taken[0]} exists (use --force to overwrite)")
    args.out.mkdir(parents=True, exist_ok=True)
    for path, varied in zip(paths, variations(vae, events, args.sigma, args.n, args.seed, args.keep_key), strict=True):
        write_phrase(varied, bpm, path, force=True, title=f"liveduet vary sigma={args.sigma:g}")
    beats = sum(d for _, d in events) / TICKS
    print(f"wrote {args.n} variation(s) of {args.call} ({beats:g} beats at {bpm:g} bpm, σ = {args.sigma:g}) "
          f"to {args.out}")
    return 0
