"""Best of K (live/candidates.py) with the shipped default model and a small untrained critic:
batched stepping equals K single steps, reranking is reproducible by seed, K = 1 is the plain
sampler, the sampler's state follows the events played, and K candidates never make the engine
schedule a note late (manual clock, with a modelled cost for every event sampled)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from liveduet.clock import ManualClock
from liveduet.errors import ModelLoadError
from liveduet.io.fake import FakeOutput
from liveduet.live.candidates import CandidateSampler, best_of_k, repeat_state, row_state, stack_states, step_batch
from liveduet.live.engine import Engine
from liveduet.live.scheduler import Scheduler
from liveduet.live.settings import LiveSettings
from liveduet.model.critic import CRITIC_CARD, Critic, CriticConfig, CriticNet, export_critic
from liveduet.model.runtime import ModelRuntime
from liveduet.model.sampling import Sampler
from liveduet.music.tokens import TokenizerSettings, Vocabulary

REPO = Path(__file__).resolve().parents[1]
CALL = [((60,), 6), ((62,), 6), ((64,), 12), ((67,), 6), ((65,), 6), ((64,), 12)]


@pytest.fixture(scope="module")
def runtime() -> ModelRuntime:
    torch.set_num_threads(1)
    return ModelRuntime.load(REPO / "models" / "default")


@pytest.fixture(scope="module")
def critic_dir(runtime: ModelRuntime, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("critic")
    torch.manual_seed(0)
    cfg = CriticConfig(embed=16, hidden=16)
    export_critic(CriticNet(len(runtime.vocab), cfg).eval(), cfg, runtime.vocab, folder, {})
    return folder


def primed(runtime: ModelRuntime, seed: int, events=CALL) -> Sampler:
    s = Sampler(runtime, temperature=1.0, top_p=0.95, seed=seed)
    for t in runtime.vocab.encode(events):
        s.feed(t)
    return s


def test_batched_step_equals_k_single_steps(runtime: ModelRuntime) -> None:
    samplers = [primed(runtime, 0, CALL[:n]) for n in (2, 4, 6)]
    tokens = [runtime.vocab.pitch_id((p,)) for p in (60, 65, 71)]
    batched = stack_states([s.state for s in samplers])
    logits, state = step_batch(runtime, tokens, batched)
    for j, (s, t) in enumerate(zip(samplers, tokens)):
        single, single_state = runtime.step(t, s.state)
        torch.testing.assert_close(logits[j], single, atol=1e-5, rtol=1e-5)
        for a, b in zip(row_state(state, j), single_state):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    # repeat_state is stacking one state K times.
    rep = repeat_state(samplers[0].state, 3)
    for a, b in zip(rep, stack_states([samplers[0].state] * 3)):
        assert torch.equal(a, b)


def test_rerank_is_deterministic_under_a_seed(runtime: ModelRuntime, critic_dir: Path) -> None:
    critic = Critic.load(critic_dir, runtime.vocab)

    def run(seed: int) -> tuple[list, list[int]]:
        cs = CandidateSampler(primed(runtime, seed), critic, 4, seed=seed)
        return [cs.sample_event() for _ in range(16)], cs.picks

    a, b, c = run(3), run(3), run(4)
    assert a == b
    assert len(a[1]) == 16 // critic.cfg.stretch_events
    assert a[0] != c[0]


def test_k1_is_the_plain_sampler_and_state_follows_the_events(runtime: ModelRuntime, critic_dir: Path) -> None:
    plain = primed(runtime, 5)
    assert best_of_k(plain, critic_dir, 1) is plain
    critic = Critic.load(critic_dir, runtime.vocab)
    base = primed(runtime, 5)
    cs = CandidateSampler(base, critic, 4, seed=5)
    S = critic.cfg.stretch_events
    events = [cs.sample_event() for _ in range(2 * S)]
    # After whole stretches the wrapped sampler has been fed exactly the events played, in order.
    played = runtime.vocab.encode(events)
    assert list(base.tokens)[-len(played):] == played
    ref = primed(runtime, 5)
    for t in played:
        ref.feed(t)
    torch.testing.assert_close(base._logits, ref._logits, atol=1e-4, rtol=1e-4)


def test_critic_for_another_vocabulary_is_refused(runtime: ModelRuntime, critic_dir: Path, tmp_path: Path) -> None:
    other = Vocabulary(TokenizerSettings(), [(60, 64, 67)])
    with pytest.raises(ModelLoadError, match="vocabulary"):
        Critic.load(critic_dir, other)
    with pytest.raises(ModelLoadError, match="no critic"):
        Critic.load(tmp_path, runtime.vocab)
    (tmp_path / CRITIC_CARD).write_text("{")
    with pytest.raises(ModelLoadError, match="damaged"):
        Critic.load(tmp_path, runtime.vocab)


class Costly:
    """The candidate sampler with a modelled cost: every event it samples advances the manual clock
    by `per_event` (K candidates grown in one batched step), and a critic pick by `per_pick`."""

    def __init__(self, inner: CandidateSampler, clock: ManualClock, per_event: float, per_pick: float) -> None:
        self.inner, self.clock, self.per_event, self.per_pick = inner, clock, per_event, per_pick

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def sample_event(self):
        picks = len(self.inner.picks)
        event = self.inner.sample_event()
        self.clock.advance(self.per_event + self.per_pick * (len(self.inner.picks) - picks))
        return event


def test_k_candidates_never_delay_a_scheduled_note(runtime: ModelRuntime, critic_dir: Path) -> None:
    from test_live_engine import play, run_until

    clock = ManualClock(50.0)
    out = FakeOutput(clock)
    sched = Scheduler(out.send, clock)
    settings = LiveSettings().with_overrides(tempo={"bpm": 120.0}, answer={"candidates": 4})
    critic = Critic.load(critic_dir, runtime.vocab)
    sampler = Costly(CandidateSampler(Sampler(runtime, seed=1), critic, 4, seed=1), clock, 0.0008, 0.0005)
    engine = Engine(settings, runtime.vocab, sampler, sched, seed=1)
    sched._on_sent = engine.on_sent
    scheduled: list[tuple[float, float]] = []
    original = sched.schedule

    def spy(due, msg, tag="answer"):
        scheduled.append((clock.now(), due))
        return original(due, msg, tag)

    sched.schedule = spy  # type: ignore[method-assign]
    notes, beat = [], 0.0
    for pitches, dur in CALL * 2:
        notes += [(beat, dur / 12 * 0.9, p) for p in pitches]
        beat += dur / 12
    play(engine, clock, sched, notes)
    run_until(engine, clock, sched, clock.now() + 15.0)
    assert len(scheduled) >= 8, "the answer played"
    assert all(due >= now for now, due in scheduled), "a note was scheduled after it was due"
    late = sched.lateness_stats()
    assert late.count and late.max <= 0.005 + 1e-9  # never later than one engine tick of the manual clock
    assert sampler.inner.picks, "the critic chose"
