"""`liveduet generate --tokens N --out OUT.mid`: sample a piano piece (optionally continuing a primer)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VELOCITY = 80


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="sample music from a model into a MIDI file",
        description="Sample N tokens from a model (after an optional primer MIDI file) and write a piano "
        "MIDI file with the rhythm the tokens carry. The primer's notes come first in the output.",
    )
    p.add_argument("--model", type=Path, help="model folder (default: $LIVEDUET_MODEL or models/default)")
    p.add_argument("--primer", type=Path, metavar="FILE.mid", help="MIDI file to continue")
    p.add_argument("--tokens", type=int, required=True, help="tokens to sample (two per note or chord)")
    p.add_argument("--temperature", type=float, required=True, help="0 = greedy, 1 = as trained, higher = wilder")
    p.add_argument("--top-k", type=int, default=0, help="sample among the K likeliest tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    p.add_argument("--seed", type=int, required=True, help="random seed (same seed, same output)")
    p.add_argument("--out", type=Path, required=True, help="MIDI file to write")
    p.add_argument("--bpm", type=float, help="tempo (default: the primer's, else 120)")
    p.add_argument("--answer-only", action="store_true", help="leave the primer out of the output")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from liveduet.errors import ConfigError, MidiFileError, OutputPathError
    from liveduet.fsutil import check_output_file, os_error_line
    from liveduet.model.runtime import ModelRuntime
    from liveduet.model.sampling import Sampler
    from liveduet.music.midifile import read_midi, save_atomic
    from liveduet.music.tokens import TICKS

    if args.tokens < 1:
        raise ConfigError(f"--tokens must be at least 1, got {args.tokens}")
    if args.bpm is not None and not 10 <= args.bpm <= 400:
        raise ConfigError(f"--bpm must be in 10..400, got {args.bpm}")
    check_output_file(args.out, "the MIDI file", force=args.force)  # before minutes of sampling
    if _is_gan(args.model):
        return _run_gan(args)
    try:
        runtime = ModelRuntime.load(args.model)
        sampler = Sampler(runtime, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                          seed=args.seed)
    except ValueError as err:
        raise ConfigError(str(err)) from err

    primer = None
    if args.primer is not None:
        try:
            primer = read_midi(args.primer)
        except MidiFileError as err:  # the reader's reasons name no file: say which one
            raise MidiFileError(f"primer {args.primer}: {err}") from err
    try:
        piece = generate_piece(runtime, sampler, args.tokens, primer, bpm=args.bpm, answer_only=args.answer_only)
    except MidiFileError as err:
        raise MidiFileError(f"{args.primer} {err}") from err
    events, answer, bpm = piece.events, piece.tokens, piece.bpm
    try:
        save_atomic(piece.midi, args.out, force=args.force)
    except OSError as err:  # the disk filled, or the folder went away while sampling
        raise OutputPathError(f"cannot write {args.out}: {os_error_line(err)}") from err
    print(f"wrote {len(events)} events ({len(answer)} tokens, {sum(d for _, d in events) / TICKS:g} beats at "
          f"{bpm:g} bpm) to {args.out}")
    return 0


def _is_gan(model: Path | None) -> bool:
    """A C-RNN-GAN folder (card family "crnngan") is generated from by liveduet/model/crnngan_io.py."""
    import json

    try:
        return model is not None and json.loads((model / "card.json").read_text()).get("family") == "crnngan"
    except (OSError, ValueError, AttributeError):
        return False  # the step model's loader names what is wrong


def _run_gan(args: argparse.Namespace) -> int:
    """The same flags for a C-RNN-GAN: --tokens // 2 notes, --temperature scales the noise (top-k/p do
    not apply to continuous outputs), --primer conditions the generator."""
    from liveduet.errors import MidiFileError, OutputPathError
    from liveduet.fsutil import os_error_line
    from liveduet.model.crnngan_io import gan_piece
    from liveduet.music.midifile import read_midi, save_atomic

    try:
        primer = read_midi(args.primer) if args.primer is not None else None
        midi, events, bpm = gan_piece(args.model, args.tokens, args.temperature, args.seed, primer, args.bpm,
                                      args.answer_only)
    except MidiFileError as err:
        raise MidiFileError(f"primer {args.primer}: {err}") from err
    try:
        save_atomic(midi, args.out, force=args.force)
    except OSError as err:
        raise OutputPathError(f"cannot write {args.out}: {os_error_line(err)}") from err
    print(f"wrote {len(events)} events from the C-RNN-GAN at {bpm:g} bpm to {args.out}")
    return 0


@dataclass(frozen=True)
class Piece:
    """What `generate_piece` made: the file, the sampled events and tokens, the tempo."""

    midi: Any  # mido.MidiFile
    events: list  # the sampled (pitches, twelfths) events, the primer's not included
    tokens: list[int]
    bpm: float
    notes: list[tuple[float, float, int, int]]  # (onset beats, end beats, pitch, velocity), primer first


def generate_piece(runtime: Any, sampler: Any, tokens: int, primer: Any = None, bpm: float | None = None,
                   answer_only: bool = False) -> Piece:
    """Sample `tokens` tokens after an optional primer (a MidiNotes from the capped reader): the one
    generator behind `liveduet generate` and the studio's Generate tab. The sampler is made (and
    biased) by the caller. Raises MidiFileError when the primer has no notes."""
    from liveduet.errors import MidiFileError
    from liveduet.music.midifile import notes_to_midi
    from liveduet.music.stream import tokenize_notes
    from liveduet.music.tokens import TICKS, events_to_notes

    primer_events: list = []
    if primer is not None:
        primer_events = tokenize_notes(primer.notes, runtime.vocab.settings, primer.pedal)
        if not primer_events:
            raise MidiFileError("has no notes to continue")
        bpm = bpm or primer.first_bpm
        for token in runtime.vocab.encode(primer_events):
            sampler.feed(token)
    bpm = bpm or 120.0
    answer = [sampler.sample() for _ in range(tokens)]
    events = list(runtime.vocab.decode(answer))
    if primer is not None:
        # The primer as the model heard it (quantised, chords mapped into the vocabulary).
        primer_events = list(runtime.vocab.decode(runtime.vocab.encode(primer_events)))
    start = sum(d for _, d in primer_events)
    notes = [] if answer_only else events_to_notes(primer_events)
    notes += events_to_notes(events, start=0 if answer_only else start)
    midi_notes = [(on / TICKS, off / TICKS, pitch, VELOCITY) for on, off, pitch in notes]
    midi = notes_to_midi(midi_notes, bpm=bpm, track_name="liveduet generate")
    return Piece(midi, events, answer, bpm, midi_notes)
