"""Evaluation: the model next to the baselines on held-out pieces, then its samples next to real music.

1. Next-token prediction on VAL pieces: NLL per token (nats), perplexity and top-1 accuracy for the
   model (batched `forward`, each piece from the initial state), a unigram and a Kneser-Ney
   Markov model fitted on TRAIN. Targets are every token after <bos>; <pad> is never scored.
2. Continuations: N val pieces, each primed with its first K tokens, continued by the model and by
   the Markov model at temperature 1; the musical metrics of both and of the pieces' real
   continuations (same pieces, same length), so all three columns describe like with like.

The scored pieces are a fixed selection (seed 0, capped at `max_tokens`), independent of `seed`, so
scores from different runs compare; `seed` only drives the sampling.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from liveduet.errors import LiveduetError, VocabularyError
from liveduet.model.baselines import Markov, Score, Unigram
from liveduet.music import metrics
from liveduet.music.dataset import Dataset, load_dataset
from liveduet.music.tokens import BOS, EOS, PAD, Vocabulary

# torch loads inside the functions that need it: the CLI imports this module for EvalOptions'
# defaults whenever it builds its parser, and torch costs seconds to import.
if TYPE_CHECKING:
    from liveduet.model.runtime import ModelRuntime

BATCH = 16  # pieces per forward call
LOGITS_BUDGET = 16_000_000  # floats of logits per forward call (64 MB): sets the window from V


@dataclass
class EvalOptions:
    max_tokens: int = 200_000  # val tokens scored, at most
    samples: int = 20  # continuations per generator
    length: int = 200  # tokens per continuation
    prime: int = 33  # tokens of each val piece given as the prompt: <bos> + 16 events
    order: int = 8  # Markov context length
    # Train tokens the Markov model is fitted on, at most (a larger corpus is subsampled by piece).
    # Fitting takes ~3.5 s and ~170 MB per million tokens: data/default's 21.6M, 74 s and 3.8 GB.
    markov_tokens: int = 25_000_000
    unigram_k: float = 0.5
    temperature: float = 1.0
    seed: int = 0
    # Torch threads for batched scoring. Sampling steps at batch 1 always use one: a second thread
    # only adds synchronisation there, and on a busy 2-core machine even batched scoring ran at
    # 190 tokens/s with 2 threads against 5,100 with 1 (OpenMP threads wait on each other).
    threads: int = 1

    def validate(self) -> None:
        if self.max_tokens < 1:
            raise LiveduetError(f"--max-tokens must be at least 1, got {self.max_tokens}")
        if self.samples < 0:
            raise LiveduetError(f"--samples must be 0 or more, got {self.samples}")
        if self.length < 1:
            raise LiveduetError(f"--length must be at least 1, got {self.length}")
        if self.prime < 1 or self.prime % 2 == 0:
            raise LiveduetError(f"--prime must be odd (<bos> plus whole events), got {self.prime}")
        if self.markov_tokens < 1:
            raise LiveduetError(f"--markov-tokens must be at least 1, got {self.markov_tokens}")
        if not 1 <= self.order <= 32:
            raise LiveduetError(f"--order must be 1..32, got {self.order}")
        if not 1 <= self.threads <= 256:
            raise LiveduetError(f"--threads must be 1..256, got {self.threads}")
        if self.temperature <= 0:
            raise LiveduetError(f"--temperature must be positive, got {self.temperature}")


def check_vocabulary(model_vocab: Vocabulary, data: Dataset, model_path: str | Path, data_path: str | Path) -> None:
    """Refuse data whose token ids mean something else than the model's."""
    mine, theirs = model_vocab.fingerprint(), data.vocab.fingerprint()
    if mine != theirs:
        raise VocabularyError(
            f"vocabulary mismatch: the model {model_path} uses vocabulary {mine}, the data {data_path} uses "
            f"{theirs}; prepare the data with the model's vocabulary: liveduet prepare SOURCE... --out NEW_DIR "
            f"--vocab {Path(model_path) / 'vocab.json' if Path(model_path).is_dir() else 'MODEL/vocab.json'}"
        )


def select_pieces(pieces: Sequence[np.ndarray], max_tokens: int) -> list[np.ndarray]:
    """Pieces in a fixed shuffled order until `max_tokens` predicted tokens; the last one is cut to
    fit. Shuffled because pieces are stored by source, and a cap would otherwise take only the first."""
    order = np.random.default_rng(0).permutation(len(pieces))
    out, total = [], 0
    for i in order:
        piece = pieces[i]
        if len(piece) < 2:
            continue
        take = min(len(piece), max_tokens - total + 1)  # +1: the <bos> is input, not a target
        out.append(piece[:take])
        total += take - 1
        if total >= max_tokens:
            break
    return out


def score_model(runtime: ModelRuntime, pieces: Sequence[np.ndarray], batch: int = BATCH,
                window: int | None = None, threads: int | None = None) -> Score:
    """NLL, perplexity and top-1 of a ModelRuntime on whole pieces, each from the initial state.
    Pieces run in windows of `window` steps (default: what fits LOGITS_BUDGET), the state carried;
    `threads` sets torch's thread count for the call."""
    import torch

    if window is None:
        window = max(16, LOGITS_BUDGET // (batch * len(runtime.vocab)))
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _score_model(runtime, pieces, batch, window)
    finally:
        torch.set_num_threads(before)


def _score_model(runtime: ModelRuntime, pieces: Sequence[np.ndarray], batch: int, window: int) -> Score:
    import torch
    import torch.nn.functional as F

    nll, correct, count = 0.0, 0, 0
    with torch.inference_mode():
        by_length = sorted(pieces, key=len, reverse=True)  # similar lengths together: little padding
        for a in range(0, len(by_length), batch):
            group = by_length[a : a + batch]
            longest = max(len(p) for p in group)
            padded = torch.full((len(group), longest), PAD, dtype=torch.long)
            for row, piece in enumerate(group):
                padded[row, : len(piece)] = torch.as_tensor(np.asarray(piece, dtype=np.int64))
            inputs, targets = padded[:, :-1], padded[:, 1:]  # [B, T-1] each
            state = None
            for t in range(0, inputs.shape[1], window):
                logits, state = runtime.forward(inputs[:, t : t + window], state)  # [B, w, V]
                target = targets[:, t : t + window]  # [B, w]
                keep = target != PAD
                logp = F.log_softmax(logits.float(), dim=-1)  # [B, w, V]
                picked = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # [B, w]
                nll -= float(picked[keep].sum())
                correct += int((logp.argmax(-1) == target)[keep].sum())
                count += int(keep.sum())
    return Score.from_sums(nll, correct, count)


def sample_model(runtime: ModelRuntime, primes: Sequence[Sequence[int]], length: int, seed: int,
                 temperature: float = 1.0) -> list[list[int]]:
    """Continuations of each prime (starting with <bos>) by the model's own sampler.

    Only the grammar shapes the draw: the live repetition guard is switched off (a guard would cap
    the longest run we want to measure) and <eos> is allowed, as it is for the Markov model.
    """
    from liveduet.model.sampling import Sampler

    sampler = Sampler(runtime, temperature=temperature, seed=seed, allow_eos=True, max_repeat=0, max_loop=0)
    out = []
    for prime in primes:
        sampler.reset()  # feeds <bos>
        for token in prime[1:] if len(prime) and prime[0] == BOS else prime:
            sampler.feed(int(token))
        tokens: list[int] = []
        for _ in range(length):
            token = sampler.sample()  # also feeds it
            tokens.append(token)
            if token == EOS:
                break
        out.append(tokens)
    return out


def sample_prompts(pieces: Sequence[np.ndarray], n: int, prime: int, length: int, seed: int) -> list[np.ndarray]:
    """`n` val pieces to continue, long enough for the prime plus a real continuation; pieces that
    run the whole length are preferred, so the data column has full-length continuations too."""
    rng = np.random.default_rng(seed)
    long = [p for p in pieces if len(p) >= prime + length]
    short = [p for p in pieces if prime + 2 <= len(p) < prime + length]
    chosen = [long[i] for i in rng.permutation(len(long))[:n]]
    if len(chosen) < n:
        chosen += [short[i] for i in rng.permutation(len(short))[: n - len(chosen)]]
    return chosen


def _metrics(vocab: Vocabulary, sequences: Sequence[Sequence[int]]) -> dict:
    return metrics.summarize([list(vocab.decode(s)) for s in sequences])


def evaluate(runtime: ModelRuntime, data: Dataset, options: EvalOptions,
             log: Callable[[str], None] = lambda _: None) -> dict:
    """The whole report as a JSON-ready dict: model, unigram, markov, metrics {data, model, markov}."""
    options.validate()
    vocab: Vocabulary = data.vocab
    train, val_all = data.pieces("train"), data.pieces("val")
    if not train or not val_all:
        raise LiveduetError("the data needs both train and val pieces (see prepare --val-percent)")
    val = select_pieces(val_all, options.max_tokens)
    timing = {}

    log("scoring the model")
    started = time.perf_counter()
    model_score = score_model(runtime, val, threads=options.threads)
    timing["model_score"] = time.perf_counter() - started

    log("fitting the unigram and Markov baselines")
    unigram = Unigram.fit(train, len(vocab), k=options.unigram_k)
    markov_train = select_pieces(train, options.markov_tokens)
    markov = Markov.fit(markov_train, len(vocab), order=options.order)
    timing["markov_fit"] = markov.fit_seconds
    log("scoring the baselines")
    started = time.perf_counter()
    unigram_score, markov_score = unigram.score(val), markov.score(val)
    timing["baseline_score"] = time.perf_counter() - started

    log("sampling continuations")
    started = time.perf_counter()
    prompts = sample_prompts(val_all, options.samples, options.prime, options.length, options.seed)
    primes = [list(p[: options.prime]) for p in prompts]
    real = [list(p[options.prime : options.prime + options.length]) for p in prompts]
    model_samples = sample_model(runtime, primes, options.length, options.seed, options.temperature)
    rng = np.random.default_rng(options.seed)
    markov_samples = [markov.generate(vocab, prime, options.length, rng, options.temperature) for prime in primes]
    timing["sampling"] = time.perf_counter() - started

    return {
        "model": model_score.to_dict(),
        "unigram": {**unigram_score.to_dict(), "k": options.unigram_k},
        "markov": {**markov_score.to_dict(), "order": options.order, "smoothing": "interpolated modified Kneser-Ney",
                   "train_tokens": int(sum(len(p) for p in markov_train)), "ngrams": markov.sizes()},
        "metrics": {
            "data": _metrics(vocab, real),
            "model": _metrics(vocab, model_samples),
            "markov": _metrics(vocab, markov_samples),
        },
        "val": {"pieces": len(val), "pieces_total": len(val_all), "tokens": model_score.tokens},
        "train_tokens": int(sum(len(p) for p in train)),
        "vocab_size": len(vocab),
        "vocab_fingerprint": vocab.fingerprint(),
        "options": asdict(options),
        "seconds": {k: round(v, 3) for k, v in timing.items()},
    }


def evaluate_paths(model_path: str | Path, data_path: str | Path, options: EvalOptions,
                   log: Callable[[str], None] = lambda _: None) -> dict:
    """Load the model and the data, refuse a vocabulary mismatch, then `evaluate`."""
    options.validate()
    log("loading the model and the data")
    from liveduet.model.runtime import ModelRuntime

    runtime = ModelRuntime.load(model_path, threads=1)
    data = load_dataset(data_path)
    check_vocabulary(runtime.vocab, data, model_path, data_path)
    report = evaluate(runtime, data, options, log)
    report["model"]["path"] = str(model_path)
    report["data"] = str(data_path)
    return report

