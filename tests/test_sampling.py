"""The sampler: grammar, determinism, scale lock, temperature, repetition guard.

Most tests drive it with a fake runtime whose logits are chosen per test, so each property is
checked against a known distribution; one runs it on a real exported (untrained) model.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from liveduet.model.export import export_run
from liveduet.model.lstm import DuetLM, LSTMState, ModelConfig
from liveduet.model.runtime import ModelRuntime
from liveduet.model.sampling import Sampler
from liveduet.model.train import CHECKPOINT_FORMAT
from liveduet.music.tokens import BOS, EOS, PAD, TokenizerSettings, Vocabulary

VOCAB = Vocabulary(TokenizerSettings(), [(60, 64, 67), (62, 65, 69), (61, 65, 68), (55, 59, 62)])
V = len(VOCAB)
C_MAJOR = {0, 2, 4, 5, 7, 9, 11}


class FakeRuntime:
    """Logits from a function of the last token fed (the "state" is that token)."""

    def __init__(self, logits_after: Callable[[int], torch.Tensor]) -> None:
        self.vocab = VOCAB
        self.logits_after = logits_after
        self.steps = 0

    def initial_state(self) -> LSTMState:
        return LSTMState(torch.zeros(1), torch.zeros(1))

    def step(self, token: int, state: LSTMState) -> tuple[torch.Tensor, LSTMState]:
        self.steps += 1
        return self.logits_after(token).clone(), state


def random_logits(seed: int = 0, scale: float = 2.0) -> torch.Tensor:
    return torch.randn(V, generator=torch.Generator().manual_seed(seed)) * scale


def fixed(logits: torch.Tensor) -> FakeRuntime:
    return FakeRuntime(lambda _token: logits)


def run(sampler: Sampler, n: int) -> list[int]:
    return [sampler.sample() for _ in range(n)]


def pitch_tokens(tokens: list[int]) -> list[int]:
    return [t for t in tokens if VOCAB.pitch_mask[t]]


def test_grammar_alternates_pitch_and_duration() -> None:
    logits = torch.zeros(V)
    logits[[PAD, BOS, EOS]] = 50.0  # the specials are the model's favourites: the grammar must still win
    sampler = Sampler(fixed(logits), temperature=1.5, seed=0)
    tokens = run(sampler, 2000)
    assert all(VOCAB.pitch_mask[t] for t in tokens[0::2])
    assert all(VOCAB.duration_mask[t] for t in tokens[1::2])
    assert not {PAD, BOS, EOS} & set(tokens)
    assert list(VOCAB.decode(tokens)) and len(list(VOCAB.decode(tokens))) == 1000


def test_eos_only_when_allowed_and_only_between_events() -> None:
    logits = torch.zeros(V)
    logits[EOS] = 3.0
    sampler = Sampler(fixed(logits), temperature=1.0, seed=1, allow_eos=True)
    tokens = run(sampler, 400)
    assert EOS in tokens
    expect_pitch = True  # after <bos>
    for t in tokens:
        if expect_pitch:
            assert VOCAB.pitch_mask[t] or t == EOS
            expect_pitch = t == EOS
        else:
            assert VOCAB.duration_mask[t]
            expect_pitch = True


def test_sample_event_and_eos() -> None:
    sampler = Sampler(fixed(random_logits(2)), seed=2)
    for _ in range(50):
        pitches, twelfths = sampler.sample_event()
        assert isinstance(pitches, tuple) and 1 <= twelfths <= VOCAB.settings.max_duration
    logits = torch.full((V,), -10.0)
    logits[EOS] = 10.0
    ender = Sampler(fixed(logits), seed=0, allow_eos=True)
    assert ender.sample_event() is None


def test_same_seed_same_tokens_other_seed_other_tokens() -> None:
    runtime = fixed(random_logits(3, scale=0.5))
    a = run(Sampler(runtime, temperature=1.0, top_p=0.95, seed=42), 300)
    b = run(Sampler(runtime, temperature=1.0, top_p=0.95, seed=42), 300)
    c = run(Sampler(runtime, temperature=1.0, top_p=0.95, seed=43), 300)
    assert a == b
    assert a != c


def test_reset_restarts_from_bos() -> None:
    runtime = fixed(random_logits(4))
    sampler = Sampler(runtime, seed=5)
    run(sampler, 10)
    sampler.reset()
    assert list(sampler.tokens) == [BOS]
    assert VOCAB.pitch_mask[sampler.sample()]


def test_feed_advances_one_step_per_token_and_sets_the_grammar() -> None:
    runtime = fixed(random_logits(5))
    sampler = Sampler(runtime, seed=0)
    before = runtime.steps
    c4 = VOCAB.pitch_id((60,))
    sampler.feed(c4)
    assert runtime.steps == before + 1
    assert VOCAB.duration_mask[sampler.sample()]  # a pitch was fed: a duration must follow
    with pytest.raises(ValueError, match="outside the vocabulary"):
        sampler.feed(V)


def test_scale_lock_keeps_pitch_classes_and_allows_rests() -> None:
    sampler = Sampler(fixed(torch.zeros(V)), temperature=1.0, seed=6)  # uniform: everything is likely
    sampler.set_pitch_classes(C_MAJOR)
    tokens = pitch_tokens(run(sampler, 4000))
    assert all(p % 12 in C_MAJOR for t in tokens for p in VOCAB.pitches_of(t))
    assert VOCAB.rest_id in tokens
    assert VOCAB.pitch_id((60, 64, 67)) in tokens  # an in-scale chord
    assert VOCAB.pitch_id((61, 65, 68)) not in tokens
    sampler.set_pitch_classes(None)
    unlocked = pitch_tokens(run(sampler, 4000))
    assert any(p % 12 not in C_MAJOR for t in unlocked for p in VOCAB.pitches_of(t))
    with pytest.raises(ValueError):
        sampler.set_pitch_classes({12})


def entropy(tokens: list[int]) -> float:
    counts = Counter(tokens)
    n = len(tokens)
    return -sum(c / n * math.log(c / n) for c in counts.values())


def test_temperature_spreads_or_sharpens_the_choice() -> None:
    runtime = fixed(random_logits(7, scale=3.0))
    guard_off = {"max_repeat": 0, "max_loop": 0}
    cold = pitch_tokens(run(Sampler(runtime, temperature=0.3, seed=1, **guard_off), 3000))
    warm = pitch_tokens(run(Sampler(runtime, temperature=1.0, seed=1, **guard_off), 3000))
    hot = pitch_tokens(run(Sampler(runtime, temperature=2.0, seed=1, **guard_off), 3000))
    assert entropy(cold) < entropy(warm) < entropy(hot)
    greedy = Sampler(runtime, temperature=0.0, seed=1, **guard_off)
    best_pitch = int(torch.argmax(random_logits(7, 3.0).masked_fill(~torch.from_numpy(VOCAB.pitch_mask), -1e9)))
    assert set(pitch_tokens(run(greedy, 40))) == {best_pitch}


def test_temperature_is_settable_between_calls_and_validated() -> None:
    sampler = Sampler(fixed(random_logits(8)), seed=0)
    sampler.temperature = 0.0
    first = sampler.sample()
    sampler.temperature = 1.7
    assert sampler.temperature == 1.7
    assert VOCAB.duration_mask[sampler.sample()] and VOCAB.pitch_mask[first]
    for bad in (-0.1, float("nan"), 11.0):
        with pytest.raises(ValueError):
            sampler.temperature = bad
    with pytest.raises(ValueError):
        sampler.top_p = 0.0
    with pytest.raises(ValueError):
        sampler.top_k = -1


def test_top_k_limits_the_choice() -> None:
    logits = random_logits(9)
    sampler = Sampler(fixed(logits), temperature=2.0, top_k=3, seed=0, max_repeat=0, max_loop=0)
    tokens = run(sampler, 2000)
    pitch_only = logits.masked_fill(~torch.from_numpy(VOCAB.pitch_mask), float("-inf"))
    top3 = set(torch.topk(pitch_only, 3).indices.tolist())
    assert set(pitch_tokens(tokens)) <= top3


def test_top_p_drops_the_tail() -> None:
    logits = torch.full((V,), -20.0)
    c4, e4, g4 = VOCAB.pitch_id((60,)), VOCAB.pitch_id((64,)), VOCAB.pitch_id((67,))
    logits[[c4, e4, g4]] = torch.tensor([3.0, 2.0, -1.0])  # probabilities ≈ .72, .26, .01
    logits[VOCAB.duration_id(12)] = 0.0
    sampler = Sampler(fixed(logits), top_p=0.9, seed=0, max_repeat=0, max_loop=0)
    assert set(pitch_tokens(run(sampler, 2000))) == {c4, e4}


def test_guard_stops_a_note_repeated_forever() -> None:
    logits = torch.zeros(V)
    c4 = VOCAB.pitch_id((60,))
    logits[c4] = 20.0  # the model only wants C4
    unguarded = pitch_tokens(run(Sampler(fixed(logits), seed=0, max_repeat=0, max_loop=0), 200))
    assert set(unguarded) == {c4}
    guarded = pitch_tokens(run(Sampler(fixed(logits), seed=0, max_repeat=4), 400))
    longest = run_length = 0
    for prev, cur in zip([None, *guarded], guarded):
        run_length = run_length + 1 if cur == prev else 1
        longest = max(longest, run_length)
    assert longest == 4  # at most 4 in a row, and it still plays C4 most of the time
    assert guarded.count(c4) > 0.6 * len(guarded)


def test_guard_breaks_a_looping_figure() -> None:
    a, b = VOCAB.pitch_id((60,)), VOCAB.pitch_id((67,))
    d = VOCAB.duration_id(6)
    last_pitch = {"p": b}

    def trill(token: int) -> torch.Tensor:  # after A's duration it wants B, after B's, A
        if VOCAB.pitch_mask[token]:
            last_pitch["p"] = token
        logits = torch.zeros(V)
        logits[d] = 10.0
        logits[b if last_pitch["p"] == a else a] = 20.0
        return logits

    unguarded = pitch_tokens(run(Sampler(FakeRuntime(trill), seed=0, max_repeat=0, max_loop=0), 100))
    assert unguarded[:6] == [a, b, a, b, a, b]
    last_pitch["p"] = b
    guarded = pitch_tokens(run(Sampler(FakeRuntime(trill), seed=0, max_loop=4), 400))
    # No stretch with period 2 longer than 4 repetitions (8 tokens).
    longest = run_length = 0
    for i in range(2, len(guarded)):
        run_length = run_length + 1 if guarded[i] == guarded[i - 2] else 0
        longest = max(longest, run_length + 2)
    assert longest <= 8
    assert guarded.count(a) + guarded.count(b) > 0.5 * len(guarded)


def test_guard_gives_way_when_nothing_else_is_allowed() -> None:
    logits = torch.zeros(V)
    sampler = Sampler(fixed(logits), seed=0, max_repeat=1)
    sampler.set_pitch_classes(set())  # only the rest is left...
    tokens = pitch_tokens(run(sampler, 20))
    assert set(tokens) == {VOCAB.rest_id}  # ...and the guard does not deadlock on it


# -- on a real exported model --------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained model exported through the real path (checkpoint → export → runtime)."""
    from dataclasses import asdict

    from liveduet.model.config import TrainConfig

    root = tmp_path_factory.mktemp("sampling")
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=V, embed=16, hidden=16, layers=1, dropout=0.0)
    model = DuetLM(cfg)
    run = root / "run"
    run.mkdir()
    VOCAB.save(run / "vocab.json")
    torch.save({"format": CHECKPOINT_FORMAT, "model": model.state_dict(),
                "config": {"model": asdict(cfg), "train": asdict(TrainConfig())}, "epoch": 0, "step": 0,
                "global_step": 0, "vocab_fingerprint": VOCAB.fingerprint()}, run / "best.pt")
    export_run(run, root / "model")
    return root / "model"


def test_real_model_grammar_and_determinism(real_model: Path) -> None:
    rt = ModelRuntime.load(real_model)
    a = run(Sampler(rt, temperature=1.2, top_k=50, seed=3), 200)
    b = run(Sampler(rt, temperature=1.2, top_k=50, seed=3), 200)
    assert a == b
    assert all(VOCAB.pitch_mask[t] for t in a[0::2]) and all(VOCAB.duration_mask[t] for t in a[1::2])
    sampler = Sampler(rt, seed=3)
    sampler.feed(VOCAB.pitch_id((60,)))
    sampler.feed(VOCAB.duration_id(12))
    pitches, dur = sampler.sample_event()
    assert dur >= 1


# -- following the call ---------------------------------------------------------------------------

def _events(sampler: Sampler, n: int) -> list:
    return [sampler.sample_event() for _ in range(n)]


def test_follow_pitch_classes_draws_toward_the_call_and_can_be_removed() -> None:
    sampler = Sampler(fixed(torch.zeros(V)), seed=3)  # flat model: the bias alone decides
    call = [0.0] * 12
    call[0], call[7] = 3.0, 1.0  # a call of C and G
    sampler.follow_pitch_classes(call, 2.0)
    pcs = [p % 12 for ps, _ in _events(sampler, 400) for p in ps]
    share = sum(pc in (0, 7) for pc in pcs) / len(pcs)
    assert share > 0.5, "C and G are 2 of 12 pitch classes; the bias makes them most of the answer"
    sampler.follow_pitch_classes(None, 2.0)
    pcs = [p % 12 for ps, _ in _events(sampler, 400) for p in ps]
    assert sum(pc in (0, 7) for pc in pcs) / len(pcs) < 0.35


def test_follow_durations_and_register() -> None:
    sampler = Sampler(fixed(torch.zeros(V)), seed=4)
    sampler.follow_durations({6: 10, 12: 2}, 3.0)
    durs = [d for _, d in _events(sampler, 300)]
    assert sum(d in (6, 12) for d in durs) / len(durs) > 0.8
    sampler.follow_register(60.0, 3.0, 2.0)
    notes = [p for ps, _ in _events(sampler, 300) for p in ps]
    assert abs(sum(notes) / len(notes) - 60) < 4, "answers stay near the call's register"
    sampler.follow_durations(None, 0)
    sampler.follow_register(None, 0, 0)
    assert torch.equal(sampler._mask_duration, sampler._grammar_duration)
