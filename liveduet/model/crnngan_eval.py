"""`liveduet evaluate --model <a C-RNN-GAN folder>`: the GAN's samples, the language model's samples
and real music side by side, with the same musical statistics and two judges.

For each of N validation pieces: the prompt is its first `prime` tokens; *real* is what follows,
*lm* the default model's continuation of the prompt (its own sampler: grammar only, as
`evaluate` samples), *gan* the generator's notes conditioned on the prompt's notes. Every
continuation is cut to the same number of notes, so lengths do not bias the statistics.

Statistics (liveduet/music/metrics.py, plus the onset-interval entropy): pitch range, pitch-class
entropy, in-scale share, IOI entropy, notes per onset, longest run, repeated event 4-grams.
Judges: the duet's critic (models/default/critic.ts: is the first stretch after the prompt the
composer's?) and the GAN's own discriminator (is this window of note features real?), each as the
mean probability of "real".
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from liveduet.model.crnngan import piece_features
from liveduet.model.crnngan_io import GANModel, load_gan
from liveduet.music import metrics
from liveduet.music.tokens import PAD, Event

STATS = ("pitch_range", "pitch_class_entropy", "in_scale_ratio", "ioi_entropy", "mean_polyphony", "longest_run",
         "repeated_4gram_share")


def ioi_entropy(events: list[Event]) -> float:
    """Entropy (bits) of the intervals between successive note onsets (rests merged into the gap)."""
    gaps, pending = [], None
    for pitches, dur in events:
        if pitches:
            if pending is not None:
                gaps.append(pending)
            pending = 0
        if pending is not None:
            pending += dur
    return metrics.entropy_bits(Counter(gaps).values())


def stats_of(sequences: list[list[Event]]) -> dict[str, float]:
    per = []
    for ev in sequences:
        m = metrics.sequence_metrics(ev)
        m["ioi_entropy"] = ioi_entropy(ev)
        per.append(m)
    return {k: round(float(np.mean([m[k] for m in per])), 4) for k in STATS} | {"sequences": len(per)}


def _first_notes(events: list[Event], n: int) -> list[Event]:
    """The events up to and including the n-th sounding one."""
    out, count = [], 0
    for e in events:
        out.append(e)
        count += bool(e[0])
        if count >= n:
            break
    return out


def evaluate_gan(model_path: Path, data: Any, samples: int = 64, prime: int = 33, notes: int = 32, seed: int = 0,
                 lm_path: Path | None = None, log=lambda line: None) -> dict:
    """The report (JSON-ready): statistics and judges for real, lm and gan continuations."""
    from liveduet.model.critic import Critic
    from liveduet.model.evaluate import sample_model
    from liveduet.model.runtime import ModelRuntime, default_model_dir

    gan: GANModel = load_gan(model_path)
    runtime = ModelRuntime.load(lm_path or default_model_dir(), threads=1)
    vocab = runtime.vocab
    vocab.check_compatible(data.vocab, "the language model")
    rng = np.random.default_rng(seed)
    pieces = [p for p in data.pieces("val") if len(p) >= prime + 4 * notes]
    pieces = [pieces[i] for i in rng.permutation(len(pieces))[:samples]]
    if len(pieces) < 2:
        from liveduet.errors import CorpusError

        raise CorpusError(f"need at least 2 validation pieces of {prime + 4 * notes} tokens, found {len(pieces)}")
    log(f"sampling {len(pieces)} continuations from the language model and the GAN")
    primes = [list(p[:prime]) for p in pieces]
    real = [_first_notes(list(vocab.decode(p[prime:])), notes) for p in pieces]
    lm = [_first_notes(list(vocab.decode(t)), notes) for t in sample_model(runtime, primes, 6 * notes, seed)]
    gan_ev = []
    for i, pr in enumerate(primes):
        prime_events = list(vocab.decode(pr))
        gan_ev.append(_first_notes(gan.sample_events(notes, seed + i, prime_events), notes))
    report: dict = {"model": str(model_path), "language_model": str(runtime.path), "options": {
        "samples": len(pieces), "prime_tokens": prime, "notes": notes, "seed": seed}}
    report["stats"] = {"real": stats_of(real), "lm": stats_of(lm), "gan": stats_of(gan_ev)}

    judges: dict = {}
    try:
        critic = Critic.load(runtime.path, vocab)
    except Exception as err:  # no critic beside the model: report without it
        judges["critic"] = f"unavailable ({str(err)[:120]})"
    else:
        C, S = critic.cfg.context_tokens, critic.cfg.stretch_events
        out = {}
        for name, seqs in (("real", real), ("lm", lm), ("gan", gan_ev)):
            rows = []
            for pr, ev in zip(primes, seqs):
                ctx = [PAD] * max(0, C - len(pr)) + [int(t) for t in pr[-C:]]
                stretch = vocab.encode(ev[:S])
                if len(stretch) == 2 * S:
                    rows.append(ctx + stretch)
            p = torch.sigmoid(critic.score(torch.tensor(rows, dtype=torch.long))).numpy() if rows else np.zeros(0)
            out[name] = {"p_real_mean": round(float(p.mean()), 4) if len(p) else None,
                         "judged_real": round(float((p > 0.5).mean()), 4) if len(p) else None, "n": len(p)}
        judges["critic"] = out
    T = gan.cfg.seq_len
    disc = {}
    with torch.no_grad():
        for name, seqs in (("real", real), ("lm", lm), ("gan", gan_ev)):
            wins = [piece_features(vocab, np.array(vocab.encode(ev)))[:T] for ev in seqs]
            wins = [w for w in wins if len(w) == T]
            if wins:
                logits, _ = gan.disc(torch.from_numpy(np.stack(wins)))
                disc[name] = round(float(torch.sigmoid(logits).mean()), 4)
    judges["gan_discriminator"] = disc
    report["judges"] = judges
    s = report["stats"]
    closer = {k: abs(s["gan"][k] - s["real"][k]) < abs(s["lm"][k] - s["real"][k]) for k in STATS}
    report["gan_closer_to_real_than_lm"] = closer
    report["verdict"] = ("the GAN is worse than the language model" if sum(closer.values()) < len(STATS) / 2
                         else "the GAN is at least as close to real music as the language model on most statistics")
    return report


def update_gan_card(model_path: Path, report: dict) -> None:
    """Put the evaluation on the GAN's card (card.json and card.md), checksum untouched."""
    from liveduet.model.card import update_card
    from liveduet.model.crnngan_io import render_gan_card

    update_card(model_path, render=render_gan_card, evaluation=report)
