"""The exported C-RNN-GAN folder: writing it, loading it, and sampling MIDI from it.

    models/crnngan/
      crnngan.pt    {"format", "config", "generator", "discriminator"}: tensors only (weights_only loads it)
      vocab.json    the tokenizer settings its samples are rounded with (grid, piano range)
      config.json   model and training config
      card.json     "family": "crnngan", checksum, data, training, evaluation
      card.md       the same for people
      loss.png, history.json   G and D losses on one figure, as the seed plots them
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from liveduet.errors import LiveduetError, ModelLoadError
from liveduet.model.card import sha256_of
from liveduet.model.crnngan import FEATURES, Discriminator, GANConfig, Generator, features_to_events, piece_features
from liveduet.model.export import finish_export, read_run_json, run_card_fields, stage_export
from liveduet.music.tokens import Event, Vocabulary

FORMAT = "liveduet-crnngan/1"
FILE = "crnngan.pt"


@dataclass
class GANModel:
    gen: Generator
    disc: Discriminator
    cfg: GANConfig
    vocab: Vocabulary
    card: dict
    path: Path

    def sample_events(self, notes: int, seed: int, primer: list[Event] | None = None,
                      scale: float = 1.0) -> list[Event]:
        """`notes` generated notes (after an optional primer, which conditions G and is not returned)
        → events rounded to the grid and the piano range; `scale` multiplies the noise."""
        prime = None
        if primer:
            feats = piece_features(self.vocab, np.asarray(self.vocab.encode(primer)))
            prime = torch.from_numpy(feats)[None] if len(feats) else None
        g = torch.Generator().manual_seed(seed)
        out = self.gen.sample(1, notes, g, prime, scale)[0].numpy()  # [T, 4]
        return features_to_events(out, self.vocab.settings)


def _models(ckpt_like: dict, cfg: GANConfig) -> tuple[Generator, Discriminator]:
    gen, disc = Generator(cfg), Discriminator(cfg)
    gen.load_state_dict(ckpt_like["generator"])
    disc.load_state_dict(ckpt_like["discriminator"])
    return gen.eval(), disc.eval()


def export_gan(run_dir: Path, ckpt: dict, out: Path, force: bool, name: str | None, evaluation: dict | None) -> dict:
    """Write the exported folder from a training checkpoint (the loop's best.pt). Returns the card."""
    run_dir, out = Path(run_dir), Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise LiveduetError(f"{out} exists (use --force to replace it)")
    model_cfg = dict(ckpt["config"]["model"])
    cfg = GANConfig(**model_cfg)
    weights = {"format": FORMAT, "config": model_cfg, "generator": ckpt["model"],
               "discriminator": (ckpt.get("modules") or {})["disc"]}
    gen, disc = _models(weights, cfg)  # fails here, not at load time, if the weights do not fit
    vocab = Vocabulary.load(run_dir / "vocab.json")
    run_info = read_run_json(run_dir, "run.json", {})
    history = read_run_json(run_dir, "history.json", [])

    tmp = stage_export(run_dir, out, vocab, ckpt["config"])
    torch.save(weights, tmp / FILE)
    best = min(history, key=lambda r: r.get("val_stat_gap", float("inf"))) if history else {}
    card = {
        "card_version": 1,
        "name": name or out.name,
        "family": "crnngan",
        "format": FORMAT,
        "file": FILE,
        "sha256": sha256_of(tmp / FILE),
        "size_bytes": (tmp / FILE).stat().st_size,
        "params": {"generator": sum(p.numel() for p in gen.parameters()),
                   "discriminator": sum(p.numel() for p in disc.parameters())},
        "config": ckpt["config"],
        "features": list(FEATURES),
        "vocab_fingerprint": vocab.fingerprint(),
        "best": {k: v for k, v in best.items() if isinstance(v, (int, float))},
        **run_card_fields(run_dir, out, ckpt, run_info),
        "evaluation": evaluation,
    }
    return finish_export(tmp, out, card, render_gan_card)


def load_gan(path: str | Path) -> GANModel:
    """An exported C-RNN-GAN folder; anything missing, damaged or of another family → ModelLoadError."""
    from liveduet.model.family import check_family

    path = Path(path)
    try:
        card = json.loads((path / "card.json").read_text())
    except FileNotFoundError as err:
        raise ModelLoadError(f"{path} is not a model folder (no card.json)") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelLoadError(f"{path}/card.json is damaged: {err}") from err
    check_family(card, path, "crnngan", "a C-RNN-GAN")
    file = path / FILE
    if not file.is_file():
        raise ModelLoadError(f"{path}: {FILE} is missing")
    if card.get("sha256") and sha256_of(file) != card["sha256"]:
        raise ModelLoadError(f"{file} does not match the checksum in its card (damaged or replaced)")
    try:
        weights = torch.load(file, map_location="cpu", weights_only=True)
        cfg = GANConfig(**weights["config"])
        gen, disc = _models(weights, cfg)
        vocab = Vocabulary.load(path / "vocab.json")
    except (KeyError, TypeError, RuntimeError, LiveduetError) as err:
        raise ModelLoadError(f"{path}: cannot load the C-RNN-GAN ({str(err).splitlines()[0][:200]})") from err
    return GANModel(gen, disc, cfg, vocab, card, path)


def render_gan_card(card: dict) -> str:
    m = card["config"]["model"]
    t = card["config"]["train"]
    tr = card.get("training") or {}
    data = card.get("data") or {}
    lines = [
        f"# liveduet model card: {card['name']} (C-RNN-GAN)",
        "",
        f"C-RNN-GAN (Mogren 2016): a {m['layers']}×{m['hidden']} LSTM generator (noise {m['noise']} per step plus "
        f"its previous output) and a {m['d_layers']}×{m['d_hidden']} bidirectional-LSTM discriminator scoring "
        f"every step, over windows of {m['seq_len']} notes. Each note is four continuous features "
        f"({', '.join(card['features'])}; normalised as in liveduet/model/crnngan.py), derived from the "
        "prepared tokens (top note of each event). Samples are rounded to the tokenizer's grid and the piano "
        "range. It is not a step model: `liveduet run` cannot use it; `liveduet generate --model` can.",
        "",
        "| | |",
        "|---|---|",
        f"| format | {card['format']} (`{card['file']}`, sha256 `{card['sha256'][:16]}…`) |",
        f"| parameters | G {card['params']['generator']:,}, D {card['params']['discriminator']:,} |",
        f"| stabilisers | feature matching {m['feature_matching']}, label smoothing {m['label_smoothing']}, "
        f"D/G steps {m['d_steps']}/{m['g_steps']}, D frozen below {m['freeze_ratio']}× G's loss, "
        f"grad clip {t['grad_clip']} |",
        f"| training | batch {t['batch']}, {t['optimizer']} lr {t['lr']}, {tr.get('steps')} steps, "
        f"{tr.get('seconds')} s ({tr.get('stop_reason')}), seed {tr.get('seed')} |",
        f"| data | `{data.get('folder')}`: {', '.join(data.get('sources') or [])} |",
        f"| selected on | val_stat_gap (feature statistics vs validation windows): {card.get('best')} |",
        "",
        "![G and D losses](loss.png)",
        "",
    ]
    if card.get("notes"):
        lines += ["## Notes", "", str(card["notes"]), ""]
    ev = card.get("evaluation")
    if ev:
        lines += ["## Evaluation", "", "```json", json.dumps(ev, indent=1), "```", ""]
    lines += ["## Reproduce", "", "```sh", *card["reproduce"], "```", "",
              f"Exported {card['created']} by liveduet {card['liveduet_version']}.", ""]
    return "\n".join(lines)


def gan_piece(path: Path, tokens: int, temperature: float, seed: int, primer: object = None,
              bpm: float | None = None, answer_only: bool = False) -> tuple[object, list[Event], float]:
    """`liveduet generate --model <a C-RNN-GAN>`: tokens // 2 notes (a note is two tokens for the
    language model), the noise scaled by `temperature`, after an optional primer (a MidiNotes) that
    conditions the generator. Returns (mido.MidiFile, the generated events, bpm)."""
    from liveduet.errors import MidiFileError
    from liveduet.music.midifile import notes_to_midi
    from liveduet.music.stream import tokenize_notes
    from liveduet.music.tokens import TICKS, events_to_notes

    model = load_gan(path)
    primer_events: list[Event] = []
    if primer is not None:
        primer_events = tokenize_notes(primer.notes, model.vocab.settings, primer.pedal)  # type: ignore[attr-defined]
        if not primer_events:
            raise MidiFileError("has no notes to continue")
        bpm = bpm or primer.first_bpm  # type: ignore[attr-defined]
    events = model.sample_events(max(1, tokens // 2), seed, primer_events or None, temperature)
    start = 0 if answer_only else sum(d for _, d in primer_events)
    notes = [] if answer_only else events_to_notes(primer_events)
    notes += events_to_notes(events, start=start)
    bpm = bpm or 120.0
    midi = notes_to_midi([(a / TICKS, b / TICKS, p, 80) for a, b, p in notes], bpm=bpm,
                         track_name="liveduet generate (C-RNN-GAN)")
    return midi, events, bpm
