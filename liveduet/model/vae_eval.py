"""The phrase VAE's greedy decoding under the token grammar and its validation figures (the training
loop's evaluation, model/vae.py's VAEFamily.evaluate): ELBO, reconstruction at μ, KL, active units."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from liveduet.model.phrases import PhraseSet, batch_tensors, input_positions
from liveduet.model.vae import PhraseVAE, kl_per_dim
from liveduet.music.tokens import BOS, EOS, PAD


def grammar_mask(prev: Tensor, vocab_size: int, pitch_mask: Tensor, dur_mask: Tensor) -> Tensor:
    """Which tokens may follow `prev` [B]: a duration after a pitch set, else a pitch set or <eos>.
    → bool [B, V]."""
    after_pitch = pitch_mask[prev]  # [B]
    allowed_after_dur = pitch_mask.clone()
    allowed_after_dur[EOS] = True
    return torch.where(after_pitch[:, None], dur_mask[None, :].expand(len(prev), -1),
                       allowed_after_dur[None, :].expand(len(prev), -1))


@torch.no_grad()
def greedy_decode(model: PhraseVAE, z: Tensor, max_len: int, pitch_mask: Tensor, dur_mask: Tensor,
                  durations: Tensor) -> Tensor:
    """Batched greedy decoding under the token grammar: z [B, Z] → tokens [B, max_len] (<pad> after <eos>)."""
    B = z.shape[0]
    h = model.initial_h(z)
    tok = torch.full((B,), BOS, dtype=torch.long)
    pos = torch.zeros(B, dtype=torch.long)
    done = torch.zeros(B, dtype=torch.bool)
    out = torch.full((B, max_len), PAD, dtype=torch.long)
    for t in range(max_len):
        pos = pos + durations[tok]
        logits, h = model.decode_run(tok[:, None], z, h, pos[:, None])  # [B, 1, V]
        allowed = grammar_mask(tok, logits.shape[-1], pitch_mask, dur_mask)
        if t == 0:
            allowed[:, EOS] = False
        tok = logits[:, 0].masked_fill(~allowed, -math.inf).argmax(dim=1)  # [B]
        tok = torch.where(done, torch.full_like(tok, PAD), tok)
        out[:, t] = tok
        done |= tok == EOS
        if bool(done.all()):
            break
    return out


@torch.no_grad()
def reconstruction_metrics(model: PhraseVAE, phrases: PhraseSet, pitch_mask: Tensor, dur_mask: Tensor,
                           active_threshold: float, device: torch.device, durations: Tensor,
                           chunk: int = 250) -> dict[str, float]:
    """On `phrases`: the ELBO (nats/token, one z sample from a fixed seed), teacher-forced and greedy
    token accuracy decoded from μ, reconstruction NLL at μ, KL per phrase, active latent units."""
    gen = torch.Generator().manual_seed(0)
    nll_z = nll_mu = kl = 0.0
    tf_right = greedy_right = ntok = 0
    mus: list[Tensor] = []
    for a in range(0, len(phrases.lengths), chunk):
        enc, lens, dec_in, tgt = batch_tensors(phrases.tokens[a : a + chunk], phrases.lengths[a : a + chunk])
        enc, dec_in, tgt = enc.to(device), dec_in.to(device), tgt.to(device)
        post = model.encode_packed(enc, lens)
        mus.append(post.mu.cpu())
        noise = torch.randn(post.mu.shape, generator=gen).to(device)
        z = post.mu + torch.exp(0.5 * post.logvar) * noise
        mask = tgt != PAD  # [B, T + 1]
        pos = input_positions(dec_in, durations, model.window)
        logits_z, _ = model.decode_run(dec_in, z, model.initial_h(z), pos)
        nll_z += float(F.cross_entropy(logits_z.transpose(1, 2), tgt, ignore_index=PAD, reduction="sum"))
        logits_mu, _ = model.decode_run(dec_in, post.mu, model.initial_h(post.mu), pos)
        nll_mu += float(F.cross_entropy(logits_mu.transpose(1, 2), tgt, ignore_index=PAD, reduction="sum"))
        tf_right += int(((logits_mu.argmax(-1) == tgt) & mask).sum())
        greedy = greedy_decode(model, post.mu, tgt.shape[1], pitch_mask, dur_mask, durations)  # [B, T + 1]
        greedy_right += int(((greedy == tgt) & mask).sum())
        kl += float(kl_per_dim(post).sum())
        ntok += int(mask.sum())
    n = len(phrases.lengths)
    mu_all = torch.cat(mus)  # [N, Z]
    active = int((mu_all.var(dim=0) > active_threshold).sum()) if n > 1 else 0
    return {"val_elbo": (nll_z + kl) / ntok, "val_recon_nll": nll_mu / ntok, "val_kl": kl / n,
            "val_tf_acc": tf_right / ntok, "val_greedy_acc": greedy_right / ntok, "active_units": active,
            "val_phrases": n}
