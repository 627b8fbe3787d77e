"""An immutable view of the engine for the dashboard, logs and (later) the web page: pulled at ~10 Hz
by the engine thread, read by any thread; the real-time path never waits on a viewer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from liveduet.live.answer import summary_pct
from liveduet.live.phrase import State

if TYPE_CHECKING:
    from liveduet.live.engine import Engine


@dataclass(frozen=True)
class EngineSnapshot:
    """An immutable view for the dashboard and logs."""

    state: str
    bpm: float
    beat: float  # beats since the call's first note (or the answer's start)
    temperature: float
    length_ratio: float
    call_tokens: tuple[str, ...]
    answer_tokens: tuple[str, ...]
    calls: int
    answers: int
    player_notes: int
    answer_notes: int
    step_p50_ms: float
    step_p99_ms: float
    warnings: tuple[str, ...]
    mode: str = "call"
    lock: str | None = None  # the scale answers keep to, when locked
    clock_source: str = "estimated"  # "fixed" | "estimated" | "metronome" | "midi clock"
    variation: float = 0.5  # vary mode's σ (live/vary.py)
    complexity: float = 0.5  # note density of the model's answers (model/sampling.py)


def snapshot_of(engine: Engine, now: float) -> EngineSnapshot:
    """The view of `engine` at `now` (on the engine thread)."""
    e = engine
    steps = sorted(e.step_ms)
    a = e.answer
    if a is not None:
        beat = (now - a.start) / a.period
    elif e.call is not None and e.state is State.CALLING:
        beat = (now - e.call.t0) * e.bpm / 60
    else:
        beat = 0.0
    names = e.vocab.tokens
    return EngineSnapshot(
        state=e.state.value, bpm=e.bpm, beat=beat, temperature=e.temperature,
        length_ratio=e.length_ratio,
        call_tokens=tuple(names[t] for t in (e.call.tokens if e.call else [])[-48:]),
        answer_tokens=tuple(names[t] for t in (a.tokens if a else e.last_answer_tokens)[-48:]),
        calls=e.calls, answers=e.answers, player_notes=e.player_notes,
        answer_notes=e.answer_notes, step_p50_ms=summary_pct(steps, 50) or 0.0,
        step_p99_ms=summary_pct(steps, 99) or 0.0, warnings=tuple(e.warnings), mode=e.mode, lock=e.lock,
        variation=e.varier.sigma, complexity=e.complexity,
        clock_source=("midi clock" if e.grid.following_clock
                      else "metronome" if e.s.practice.metronome else "fixed" if e.grid_fixed
                      else "estimated"),
    )
