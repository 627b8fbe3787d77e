"""The exported phrase VAE: writing the folder, checking it, loading it.

    models/vary/
      vae.ts        TorchScript: encode(tokens[1, T]) -> (μ, log σ²) [1, Z]; start(z) -> h;
                    forward(token[B], z[B, Z], h, pos[B]) -> (logits[B, V], h), the decoder's cached
                    step; pos: twelfths of the window decoded once `token` is read (phrases.input_positions)
      vocab.json    the vocabulary its token ids refer to (the language model's)
      config.json   model and training config
      card.json     "family": "vae", checksum, data, training, reconstruction, the benchmark's figures
      card.md       the same for people
      loss.png, history.json   the training curves

A VAE whose posterior collapsed (no active latent unit, or a KL under COLLAPSED_KL nats per phrase)
answers every call alike: `check_not_collapsed` refuses it at export, and a test holds it to that.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from liveduet.errors import LiveduetError, ModelLoadError
from liveduet.model.card import sha256_of, update_card
from liveduet.model.export import finish_export, read_run_json, run_card_fields, stage_export
from liveduet.model.family import check_family
from liveduet.model.phrases import duration_table, input_positions
from liveduet.model.vae import PhraseVAE, VAEConfig
from liveduet.music.tokens import BOS, TICKS, Vocabulary

FORMAT = "liveduet-vae/2"  # /2: the decoder's step reads its place in the window (pos)
FILE = "vae.ts"
PARITY_TOLERANCE = 1e-5
WARMUP_LENGTH = 32
COLLAPSED_KL = 1.0  # nats per phrase: below this z says next to nothing about the phrase
SELECTED = {"elbo": "the best validation ELBO", "recon": "the best validation reconstruction NLL at μ",
            "greedy": "the best validation greedy token accuracy from μ"}  # VAEConfig.select, in words


class VAEScript(nn.Module):
    """What the runtime calls, TorchScript-friendly: the encoder, the decoder's start and one step."""

    def __init__(self, model: PhraseVAE) -> None:
        super().__init__()
        self.model = model

    @torch.jit.export
    def encode(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """tokens [1, T] int64 → μ, log σ² [1, Z]."""
        return self.model.encode_one(tokens)

    @torch.jit.export
    def start(self, z: Tensor) -> Tensor:
        """z [B, Z] → the decoder's first state h [1, B, H]."""
        return self.model.initial_h(z)

    def forward(self, token: Tensor, z: Tensor, h: Tensor, pos: Tensor) -> tuple[Tensor, Tensor]:
        """token [B] int64, pos [B] int64 → logits [B, V], the next state."""
        logits, h = self.model.decode_run(token.unsqueeze(1), z, h, pos.unsqueeze(1))  # [B, 1, V]
        return logits.squeeze(1), h


def script_vae(model: PhraseVAE) -> torch.jit.ScriptModule:
    """TorchScript of the VAE's live path (torch.jit's DeprecationWarning silenced around our calls only)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        return torch.jit.script(VAEScript(model.eval()))


def check_parity(model: PhraseVAE, scripted: torch.jit.ScriptModule, tokens: Tensor, durations: Tensor) -> float:
    """Largest difference, relative to the logits' scale, between the eager model (packed encoder,
    teacher-forced decoder over the whole phrase) and the scripted encode + one cached step at a time."""
    with torch.no_grad():
        post = model.encode_packed(tokens, torch.tensor([tokens.shape[1]]))
        mu, _ = scripted.encode(tokens)
        worst = float((mu - post.mu).abs().max())
        pos = input_positions(tokens, durations, model.window)  # [1, T]
        full, _ = model.decode_run(tokens, post.mu, model.initial_h(post.mu), pos)  # [1, T, V]
        h = scripted.start(mu)
        for t in range(tokens.shape[1]):
            logits, h = scripted(tokens[:, t], mu, h, pos[:, t])
            worst = max(worst, float((logits - full[:, t]).abs().max()))
    return worst / max(1.0, float(full.abs().max()))


def check_not_collapsed(figures: dict) -> None:
    """LiveduetError when the validation figures say the posterior collapsed (z is ignored)."""
    kl, active = figures.get("val_kl"), figures.get("active_units")
    if kl is None or active is None:
        raise LiveduetError("the run has no validation figures (val_kl, active_units): evaluate it first")
    if active < 1 or kl < COLLAPSED_KL:
        raise LiveduetError(f"the VAE's posterior collapsed (KL {kl:.3f} nats/phrase, {active} active units): "
                            "it would answer every call alike; retrain with free_bits or a longer KL warm-up")


def best_row(history: list[dict], step: object = None, key: str = "val_elbo") -> dict:
    """The evaluation of the exported checkpoint (the row at its global step); else the best `key`."""
    for r in history:
        if step is not None and r.get("step") == step and isinstance(r.get("val_kl"), int | float):
            return r
    rows = [r for r in history if isinstance(r.get(key), int | float)]
    return min(rows, key=lambda r: r[key]) if rows else {}


def export_vae(run_dir: Path, ckpt: dict, out: Path, force: bool, name: str | None, evaluation: dict | None) -> dict:
    """Write the exported folder from the loop's best checkpoint. Returns the card."""
    run_dir, out = Path(run_dir), Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise LiveduetError(f"{out} exists (use --force to replace it)")
    try:
        cfg = VAEConfig(**ckpt["config"]["model"])
        model = PhraseVAE(cfg)
        model.load_state_dict(ckpt["model"])
    except (TypeError, KeyError, RuntimeError, LiveduetError) as err:
        raise ModelLoadError(f"{run_dir}: weights do not fit the VAE they describe ({str(err)[:200]})") from err
    model.eval()
    vocab = Vocabulary.load(run_dir / "vocab.json")
    vocab.check_compatible(str(ckpt.get("vocab_fingerprint")), f"the checkpoint in {run_dir}")
    run_info = read_run_json(run_dir, "run.json", {})
    history = read_run_json(run_dir, "history.json", [])
    best = best_row(history, ckpt.get("global_step"))
    check_not_collapsed(best)

    scripted = script_vae(model)
    probe = torch.randint(3, len(vocab), (1, 40), generator=torch.Generator().manual_seed(0))
    worst = check_parity(model, scripted, probe, duration_table(vocab))
    if worst > PARITY_TOLERANCE:
        raise LiveduetError(f"exported VAE differs from the trained model by {worst:.2e} (> {PARITY_TOLERANCE})")

    tmp = stage_export(run_dir, out, vocab, ckpt["config"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        scripted.save(str(tmp / FILE))
    card = {
        "name": name or out.name, "family": "vae", "format": FORMAT, "file": FILE,
        "sha256": sha256_of(tmp / FILE), "size_bytes": (tmp / FILE).stat().st_size,
        "params": model.num_params(), "config": ckpt["config"],
        "vocab_size": len(vocab), "vocab_fingerprint": vocab.fingerprint(),
        "reconstruction": {k: best.get(k) for k in ("val_elbo", "val_recon_nll", "val_kl", "val_tf_acc",
                                                    "val_greedy_acc", "active_units", "val_phrases", "step")},
        **run_card_fields(run_dir, out, ckpt, run_info),
        "export_parity_max_abs": worst,
        "evaluation": evaluation,
    }
    return finish_export(tmp, out, card, render_vae_card)


# -- loading ---------------------------------------------------------------------------------

@dataclass
class VAEModel:
    """A loaded VAE folder: the scripted module, its vocabulary, config and card."""

    script: torch.jit.ScriptModule
    vocab: Vocabulary
    cfg: VAEConfig
    card: dict
    path: Path
    _pc_bits: np.ndarray | None = field(default=None, repr=False)
    _durations: Tensor | None = field(default=None, repr=False)

    @property
    def z_dim(self) -> int:
        return self.cfg.z_dim

    @property
    def durations(self) -> Tensor:
        """int64 [V]: each duration token's twelfths (0 for others): how the decoder's pos advances."""
        if self._durations is None:
            self._durations = duration_table(self.vocab)
        return self._durations

    def pitch_tokens_within(self, pitch_classes: frozenset[int]) -> Tensor:
        """bool [V]: the pitch-set tokens all of whose pitches have a class in `pitch_classes` (the rest too)."""
        if self._pc_bits is None:  # each pitch-set token's pitch classes as a 12-bit set, once
            bits = np.zeros(len(self.vocab), dtype=np.int64)
            for t in np.flatnonzero(self.vocab.pitch_mask):
                for p in self.vocab.pitches_of(int(t)):
                    bits[t] |= 1 << (p % 12)
            self._pc_bits = bits
        allowed = sum(1 << pc for pc in pitch_classes)
        return torch.from_numpy(self.vocab.pitch_mask & ((self._pc_bits & ~allowed) == 0))

    @torch.no_grad()
    def warm_up(self) -> None:
        """TorchScript optimises a function on its first calls (~100 ms): spend them here, not on the first
        answer; and build the keep-key rule's table (~3 ms) here too."""
        try:
            self.pitch_tokens_within(frozenset())
            for length in (WARMUP_LENGTH, WARMUP_LENGTH // 2, WARMUP_LENGTH, 2):
                mu, _ = self.encode([self.vocab.rest_id, self.vocab.dur_base + TICKS - 1] * (length // 2))
                h = self.script.start(mu)
                for k in range(3):
                    _, h = self.script(torch.tensor([BOS]), mu, h, torch.tensor([k * TICKS]))
        except Exception as err:
            raise ModelLoadError(f"{self.path}: the VAE fails its first step ({str(err)[:200]})") from err

    @torch.no_grad()
    def encode(self, tokens: list[int] | np.ndarray) -> tuple[Tensor, Tensor]:
        """Phrase tokens (no <bos>/<eos>) → μ, log σ² [1, Z]."""
        return self.script.encode(torch.as_tensor(np.asarray(tokens, dtype=np.int64)).view(1, -1))


def default_vae_dir() -> Path:
    """$LIVEDUET_VARY_MODEL, else <repo>/models/vary beside the (editable) package."""
    env = os.environ.get("LIVEDUET_VARY_MODEL")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "models" / "vary"


def load_vae(path: str | Path | None = None) -> VAEModel:
    """An exported VAE folder, checked: its card names the VAE family, the checksum matches, it loads."""
    path = Path(path) if path is not None else default_vae_dir()
    if not path.is_dir():
        raise ModelLoadError(f"no VAE folder at {path} (train one with `liveduet train --config configs/vae.toml`)")
    try:
        card = json.loads((path / "card.json").read_text())
    except FileNotFoundError as err:
        raise ModelLoadError(f"{path} has no card.json: not an exported model folder") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelLoadError(f"{path}/card.json is damaged: {err}") from err
    if not isinstance(card, dict):
        raise ModelLoadError(f"{path}/card.json is not a model card (a JSON object)")
    check_family(card, path, "vae", "a VAE (the phrase VAE that `vary` and `morph` use)")
    if card.get("format") != FORMAT:
        raise ModelLoadError(f"{path}: VAE format {card.get('format')!r} is not {FORMAT!r} "
                             "(re-export its run with this liveduet)")
    file = path / FILE
    if not file.is_file() or sha256_of(file) != card.get("sha256"):
        raise ModelLoadError(f"{file} is missing or does not match its card's checksum (damaged?)")
    vocab = Vocabulary.load(path / "vocab.json")
    if vocab.fingerprint() != card.get("vocab_fingerprint"):
        raise ModelLoadError(f"{path}: vocab.json is not the vocabulary the VAE was trained with")
    try:
        cfg = VAEConfig(**card["config"]["model"])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            script = torch.jit.load(str(file), map_location="cpu").eval()
    except Exception as err:  # torch.jit raises RuntimeError and friends for a foreign file
        raise ModelLoadError(f"{path}: cannot load the VAE ({str(err).strip().splitlines()[0][:200]})") from err
    vae = VAEModel(script, vocab, cfg, card, path)
    vae.warm_up()
    return vae


# -- the card --------------------------------------------------------------------------------

def _f(value: object, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec) if isinstance(value, int | float) else str(value)


def _int(value: object) -> object:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def render_vae_card(card: dict) -> str:
    """card.json → card.md."""
    m, t = card["config"]["model"], card["config"]["train"]
    r, tr, data = card.get("reconstruction") or {}, card.get("training") or {}, card.get("data") or {}
    lines = [
        f"# liveduet model card: {card['name']} (phrase VAE)", "",
        f"A phrase VAE over liveduet-tokens/1 ({card['vocab_size']} tokens, the language model's vocabulary): "
        f"a bidirectional GRU encoder ({m['enc_hidden']} units a direction, embedding {m['embed']}) → z of "
        f"{m['z_dim']} dimensions (μ, log σ²)"
        + (f", one slice of {m['z_dim'] // m['window_beats']} per beat read from the encoder at that beat's "
           "first and last tokens" if m.get("latent") == "beats" else "")
        + f" → a one-layer GRU decoder of {m['dec_hidden']} units whose state "
        f"starts at tanh(W z) and which reads z at every step"
        + (" beside the slice of the beat it is in" if m.get("latent") == "beats" else "")
        + (f", with a {m['position_embed']}-wide embedding of its place in the window (twelfths elapsed)"
           if m.get("position_embed") else "")
        + f". Phrases are {m['window_beats']}-beat windows "
        f"cut on bar lines ({m['bar_beats']}-beat bars counted from each piece's first onset). It answers "
        "`liveduet run --mode vary`, `liveduet vary` and `liveduet morph`.", "",
        "| | |", "|---|---|",
        f"| format | {card['format']} (`{card['file']}`, sha256 `{card['sha256'][:16]}…`) |",
        f"| parameters | {card['params']:,} ({card['size_bytes'] / 1e6:.1f} MB) |",
        f"| objective | recon + β·Σ max(KL_d, {m['free_bits']}) with β 0 → {m['beta']} over "
        f"{m['kl_warmup_steps']} steps; word dropout {m['word_dropout']}, dropout {m['dropout']} |",
        f"| training | batch {t['batch']}, {t['optimizer']} lr {t['lr']} ({t['lr_schedule']}), "
        f"{_f(tr.get('steps'), '')} steps, {_f(tr.get('seconds'), '')} s on {_f(tr.get('device'), '')} "
        f"({_f(tr.get('stop_reason'), '')}), seed {_f(tr.get('seed'), '')} |",
        f"| exported | {SELECTED.get(m.get('select', 'elbo'), '')}: step "
        f"{_f((card.get('checkpoint') or {}).get('global_step'), '')} |",
        f"| data | `{_f(data.get('folder'), '')}`: {', '.join(data.get('sources') or [])}; transpositions "
        f"{(data.get('settings') or {}).get('transpose')} |",
        f"| export parity | {_f(card.get('export_parity_max_abs'), '.1e')} (relative, scripted step vs eager) |",
        "", "## Reconstruction (validation phrases, by piece)", "",
        "| measure | value |", "|---|---|",
        f"| ELBO bound | {_f(r.get('val_elbo'))} nats/token |",
        f"| reconstruction NLL at μ | {_f(r.get('val_recon_nll'))} nats/token |",
        f"| KL | {_f(r.get('val_kl'), '.2f')} nats/phrase |",
        f"| token accuracy, teacher-forced from μ | {_f(r.get('val_tf_acc'))} |",
        f"| token accuracy, greedy-decoded from μ | {_f(r.get('val_greedy_acc'))} |",
        f"| active latent units (Var μ_d > {m['active_threshold']}) | {_f(_int(r.get('active_units')), '')} of "
        f"{m['z_dim']} |",
        f"| phrases | {_f(_int(r.get('val_phrases')), '')} |", "",
    ]
    ev = card.get("evaluation")
    if isinstance(ev, dict):
        lines += render_evaluation(ev)
    if card.get("notes"):
        lines += ["## Notes", "", str(card["notes"]), ""]
    lines += ["## Reproduce", "", "```", *card.get("reproduce", []), "```", ""]
    return "\n".join(lines)


def render_evaluation(ev: dict) -> list[str]:
    """The benchmark's figures (benchmarks/bench_vae.py) on the card."""
    lines = []
    if ev.get("lm_same_phrases"):
        lm = ev["lm_same_phrases"]
        lines += [f"The language model on the same phrases: {_f(lm.get('nll'))} nats/token "
                  f"(the VAE's ELBO bound: {_f(lm.get('vae_elbo'))}).", ""]
    # Older evaluations have no model-alone rows: their curve and morph were the model alone.
    alone = ev.get("variation_curve_model_alone") is not None
    for suffix, label in (("", " — with the keep-key rule (the default)" if alone else ""),
                          ("_model_alone", " — the model alone (`--no-keep-key`)")):
        curve = ev.get("variation_curve" + suffix)
        if curve:
            lines += [f"## Variation curve (σ: z' = μ + σ·ε){label}", "",
                      "| σ | token accuracy | edit similarity | pitch-class cosine | rhythm overlap | in key |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| {row['sigma']:g} | {_f(row['token_acc'])} | {_f(row['edit_similarity'])} | "
                      f"{_f(row['pc_cosine'])} | {_f(row['rhythm_overlap'])} | {_f(row['in_key'])} |"
                      for row in curve]
            lines.append("")
    for suffix, label in (("", " — with the keep-key rule" if alone else ""), ("_model_alone", " — the model alone")):
        morph = ev.get("morph" + suffix)
        if morph:
            lines += [f"## Morph (spherical interpolation, greedy decoding){label}", "",
                      f"{morph.get('pairs')} pairs, {morph.get('steps')} steps: distance to A rises monotonically "
                      f"in {_f(morph.get('monotone_a'))} of pairs, to B falls in {_f(morph.get('monotone_b'))}; "
                      f"mean in-key share {_f(morph.get('in_key_mean'))}, lowest step "
                      f"{_f(morph.get('in_key_min'))}, steps with ≥ 90 % of notes in key "
                      f"{_f(morph.get('steps_in_key_0.9_share'))}; the inner steps' lowest "
                      f"{_f(morph.get('inner_steps_in_key_min'))}, A's and B's own lowest "
                      f"{_f(morph.get('a_b_themselves_in_key_min'))}. Mean distance (1 − token edit similarity) to A "
                      f"by step: {morph.get('mean_distance_to_a')}; to B: {morph.get('mean_distance_to_b')}.", ""]
    nominal = ev.get("morph_nominal")
    if nominal:
        lines += [f"The decoder alone at the path's nominal points (no choice among nearby points; keep-key rule): "
                  f"monotone to A in {_f(nominal.get('monotone_a'))} of pairs, to B in "
                  f"{_f(nominal.get('monotone_b'))}; inner steps' lowest in-key share "
                  f"{_f(nominal.get('inner_steps_in_key_min'))}.", ""]
    sim = ev.get("live_simulated")
    if sim and sim.get("answer_vs_call"):
        m = sim["answer_vs_call"]
        lines += ["## Through the daemon (simulated player, `live/evaluate.py`)", "",
                  f"{sim['answered']}/{sim['calls']} held-out calls answered in vary mode at σ = {sim['sigma']}; "
                  f"the answer against its call: pitch-class cosine {_f(m.get('pc_cosine'))}, rhythm overlap "
                  f"{_f(m.get('rhythm_overlap'))}, in key {_f(m.get('in_key'))}, register gap "
                  f"{_f(m.get('register_gap'), '.2f')} semitones."
                  + (f" ({sim['note']}.)" if sim.get("note") else ""), ""]
    live = ev.get("live")
    if live:
        lines += ["## Live cost (inside the daemon's engine)", "",
                  f"Encode + first beat of the answer: p50 {_f(live.get('plan_ms_p50'))} ms, p99 "
                  f"{_f(live.get('plan_ms_p99'))} ms; answer lateness p99 {_f(live.get('late_ms_p99'))} ms "
                  f"over {_f(live.get('calls'), '')} calls in real time ({_f(live.get('bpm'), 'g')} bpm)."
                  + (f" ({ev['live_note']}.)" if ev.get("live_note") else "")
                  + " (That lateness is the in-process scheduler's to a fake port; the product's is below.)", ""]
    jack = ev.get("lateness_on_jack")
    if jack:
        rows = [f"{mode} mode p99 {_f(jack[mode].get('p99_ms'))} ms, max {_f(jack[mode].get('max_ms'))} ms over "
                f"{jack[mode].get('messages')} messages" for mode in ("vary", "call") if jack.get(mode)]
        lines += ["## Answer lateness through `liveduet run` on JACK", "",
                  f"What the synth port receives (sender process, frame-timed output; `{jack.get('source')}`): "
                  + "; ".join(rows) + ".", ""]
    targets, targets_alone = ev.get("targets"), ev.get("targets_model_alone")
    if targets and targets_alone:
        lines += ["## The issue's targets", "", "| target | met (keep-key rule, the default) | met (model alone) |",
                  "|---|---|---|"]
        lines += [f"| {k} | {'yes' if v else '**no**'} | {'yes' if targets_alone.get(k) else '**no**'} |"
                  for k, v in targets.items()]
        lines.append("")
    elif targets:
        lines += ["## The issue's targets", "", "| target | met |", "|---|---|"]
        lines += [f"| {k} | {'yes' if v else '**no**'} |" for k, v in targets.items()]
        lines.append("")
    return lines


def update_vae_card(model_dir: str | Path, **fields: object) -> dict:
    """Add fields (e.g. evaluation=...) to an exported VAE card and re-render card.md."""
    return update_card(model_dir, render=render_vae_card, **fields)
