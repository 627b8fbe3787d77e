"""Model speed, side by side in one run: cached stepping vs the seed's window re-run, and training.

    python benchmarks/bench_model.py [--model models/default] [--data data/default] [--out FILE.json]

Measures, on this machine:
- step: the exported model stepping one token with its cached state (what the daemon does),
  through `ModelRuntime.step` (TorchScript, oneDNN off, 1 thread), median and p99 per token;
- sample: `Sampler.sample()` per token (the step plus grammar masks, temperature, top-p, draw);
- seed approach: the same model re-run over the whole 100-token window for every new token
  (no cache), per token: through the runtime and eagerly with oneDNN off and on, the fastest
  counting; and the seed recipe's own 3×512 LSTM doing the same (random weights);
- training tokens/s for configs/default.toml at its batch and window (oneDNN on, all threads).
Targets: step median ≤ 0.25 ms, ≥ 20× faster than the window re-run, training ≥ 15k tokens/s.
Timings are per call with perf_counter; shared machines are noisy, so the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from liveduet.model.config import load_train_config
from liveduet.model.lstm import DuetLM
from liveduet.model.runtime import ModelRuntime
from liveduet.model.sampling import Sampler
from liveduet.model.train import loss_fn, make_optimizer, resolve_precision

REPO = Path(__file__).resolve().parents[1]
TARGET_STEP_MS = 0.25
TARGET_SPEEDUP = 20.0
TARGET_TRAIN_TPS = 15_000


def timings(fn, n: int, warmup: int = 20) -> dict:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return {"n": n, "median_ms": round(statistics.median(ts) * 1e3, 4),
            "p99_ms": round(ts[min(n - 1, int(n * 0.99))] * 1e3, 4), "mean_ms": round(statistics.fmean(ts) * 1e3, 4)}


def bench_step(rt: ModelRuntime, n: int, tokens: np.ndarray) -> dict:
    state = rt.initial_state()
    i = 0

    def one() -> None:
        nonlocal state, i
        _, state = rt.step(int(tokens[i % len(tokens)]), state)
        i += 1

    return timings(one, n)


def bench_sample(rt: ModelRuntime, n: int) -> dict:
    sampler = Sampler(rt, temperature=1.0, top_p=0.95, seed=0)
    return timings(sampler.sample, n)


def bench_window(score, window: int, n: int, vocab_size: int) -> dict:
    """The seed approach: for each new token, run the model over the last `window` tokens from scratch."""
    tokens = torch.randint(3, vocab_size, (1, window), generator=torch.Generator().manual_seed(0))

    def one() -> None:
        with torch.inference_mode():
            score(tokens)

    return timings(one, n, warmup=3)


def bench_train(config: Path, vocab_size: int, data: np.ndarray | None, steps: int, threads: int) -> dict:
    mcfg, tcfg = load_train_config(config)
    mcfg.vocab_size = vocab_size
    torch.backends.mkldnn.enabled = True  # as training runs (see model/train.py)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = DuetLM(mcfg).train()
    opt = make_optimizer(model, tcfg)
    rng = np.random.default_rng(0)
    if data is None:
        data = rng.integers(3, vocab_size, 1_000_000).astype(np.int64)

    def batch() -> torch.Tensor:
        starts = rng.integers(0, len(data) - tcfg.seq_len - 1, tcfg.batch)
        return torch.from_numpy(np.stack([data[s : s + tcfg.seq_len + 1] for s in starts]).astype(np.int64))

    autocast = resolve_precision(tcfg.precision, torch.device("cpu"))

    def one() -> None:
        b = batch()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast is not None):
            logits, _ = model(b[:, :-1])
        loss = loss_fn(logits, b[:, 1:], tcfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip or 1e9)
        opt.step()

    for _ in range(2):
        one()
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    seconds = time.perf_counter() - t0
    tokens = steps * tcfg.batch * tcfg.seq_len
    return {"config": str(config.relative_to(REPO) if config.is_relative_to(REPO) else config),
            "params": model.num_params(), "batch": tcfg.batch, "seq_len": tcfg.seq_len, "steps": steps,
            "threads": threads, "onednn": True, "precision": "bf16 autocast" if autocast else "fp32",
            "tokens_per_s": round(tokens / seconds),
            "ms_per_step": round(seconds / steps * 1e3, 1)}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=REPO / "models" / "default")
    p.add_argument("--data", type=Path, help="prepared data for realistic tokens (default: random tokens)")
    p.add_argument("--config", type=Path, default=REPO / "configs" / "default.toml", help="training config")
    p.add_argument("--seed-config", type=Path, default=REPO / "configs" / "seed-3x512.toml")
    p.add_argument("--steps", type=int, default=3000, help="cached steps to time")
    p.add_argument("--window", type=int, default=100, help="the seed's window length")
    p.add_argument("--window-steps", type=int, default=60, help="window re-runs to time")
    p.add_argument("--train-steps", type=int, default=6)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for training")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)

    load_before = os.getloadavg()
    data = None
    if args.data is not None:
        from liveduet.music.dataset import load_dataset

        data = load_dataset(args.data).tokens.astype(np.int64)
    rt = ModelRuntime.load(args.model)
    V = len(rt.vocab)
    tokens = data[:10_000] if data is not None else np.random.default_rng(0).integers(3, V, 10_000)

    step = bench_step(rt, args.steps, tokens)
    sample = bench_sample(rt, args.steps)
    # The window re-run three ways; the fastest is the seed approach's figure (the kindest to it).
    windows = {"scripted": bench_window(lambda t: rt.forward(t), args.window, args.window_steps, V)}
    eager = DuetLM(rt.config).eval()  # same shapes; speed does not depend on the weights' values
    for onednn in (False, True):
        torch.backends.mkldnn.enabled = onednn
        windows[f"eager_onednn_{'on' if onednn else 'off'}"] = bench_window(
            lambda t: eager(t), args.window, args.window_steps, V)
    torch.backends.mkldnn.enabled = False
    best = min(windows, key=lambda k: windows[k]["median_ms"])
    window = {"fastest": best, **windows[best]}

    # The seed recipe's network re-running its window, eager as the seed ran it (oneDNN off: faster here).
    seed_cfg, _ = load_train_config(args.seed_config)
    seed_cfg.vocab_size = V
    seed_model = DuetLM(seed_cfg).eval()
    seed_window = bench_window(lambda t: seed_model(t), args.window, max(5, args.window_steps // 4), V)
    seed_step_state = seed_model.initial_state(1)

    def seed_step() -> None:
        nonlocal seed_step_state
        with torch.inference_mode():
            _, seed_step_state = seed_model.step(torch.tensor([5]), seed_step_state)

    seed_cached = timings(seed_step, 200)

    train = bench_train(args.config, V, data, args.train_steps, args.threads)
    speedup = window["median_ms"] / step["median_ms"]
    result = {
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": sys.version.split()[0],
                    "torch": torch.__version__, "load_avg_before": [round(x, 2) for x in load_before],
                    "load_avg_after": [round(x, 2) for x in os.getloadavg()]},
        "model": {"path": str(args.model), "arch": rt.card.get("arch"), "params": rt.card.get("params"),
                  "vocab": V, "format": rt.card.get("format")},
        "step_cached_ms": step,
        "sampler_sample_ms": sample,
        "seed_approach_window_rerun_ms": {"window": args.window, **window, "all": windows},
        "speedup_median": round(speedup, 1),
        "seed_recipe_3x512": {"params": seed_model.num_params(), "window_rerun_ms": seed_window,
                              "cached_step_ms": seed_cached},
        "train": train,
        "targets": {"step_median_ms": TARGET_STEP_MS, "speedup": TARGET_SPEEDUP,
                    "train_tokens_per_s": TARGET_TRAIN_TPS},
        "met": {"step": step["median_ms"] <= TARGET_STEP_MS, "speedup": speedup >= TARGET_SPEEDUP,
                "train": train["tokens_per_s"] >= TARGET_TRAIN_TPS},
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
