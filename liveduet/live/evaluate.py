"""The live evaluation: held-out calls played through the daemon's own Session in simulated time.

Each validation piece of a prepared folder gives a call (its first N beats) and the composer's
continuation (the next N beats). A simulated player plays the calls one after another, in one
session, with a dynamic contour, an articulation and sometimes a swing of its own, and waits for
each answer before the next call. Everything between the player's messages and the output port is
the code `liveduet run` uses — Listener, router, Engine, Scheduler, the model's sampler — driven by
a ManualClock (`Session.pump`), so a session of minutes takes seconds and is reproducible by seed.

Each answer is compared with its call (liveduet/music/listening.py), as are two references: the
composer's continuation and another piece's. `place` = 0 at another piece, 1 at the composer.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import mido

from liveduet.clock import ManualClock
from liveduet.io.fake import FakeOutput
from liveduet.live.expression import Expression
from liveduet.live.phrase import State
from liveduet.live.session import Session, answer_sampler
from liveduet.live.settings import LiveSettings
from liveduet.music import listening
from liveduet.music.dataset import Dataset
from liveduet.music.listening import Note
from liveduet.music.tokens import TICKS

TICK_S = 0.005  # the engine thread's wait while calling or answering (Engine.wait_hint)


@dataclass(frozen=True)
class LiveEvalOptions:
    calls: int = 50
    beats: int = 8  # call length, and the length of each reference continuation
    bpm: float = 100.0
    fixed_tempo: bool = True  # as `run --tempo`; False: liveduet estimates each call's tempo
    gap_beats: float = 2.0  # the player waits this long after an answer before the next call
    seed: int = 0


@dataclass
class Excerpt:
    name: str
    call: list[Note]
    composer: list[Note]  # the piece's own next N beats, from 0


def excerpts(data: Dataset, beats: int, limit: int) -> list[Excerpt]:
    """Calls and continuations from the untransposed validation pieces, in a stable order."""
    out: list[Excerpt] = []
    pieces = data.manifest.get("pieces") or []
    for i, (a, b, split) in enumerate(zip(data.offsets[:-1], data.offsets[1:], data.split)):
        meta = pieces[i] if i < len(pieces) else {}
        if split != 1 or meta.get("transpose", 0) != 0:
            continue
        notes: list[Note] = []
        pos = 0
        for pitches, dur in data.vocab.decode(data.tokens[a:b]):
            notes += [(pos / TICKS, (pos + dur) / TICKS, p, 0) for p in pitches]
            pos += dur
        call = [(s, min(e, beats), p, v) for s, e, p, v in notes if s < beats]
        cont = [(s - beats, min(e, 2 * beats) - beats, p, v) for s, e, p, v in notes if beats <= s < 2 * beats]
        if len(listening.onsets(call)) >= 6 and len(listening.onsets(cont)) >= 4 and call[0][0] == 0:
            out.append(Excerpt(meta.get("name", f"piece {i}"), call, cont))
        if len(out) >= limit:
            break
    return out


@dataclass
class Performance:
    """How the simulated player plays one call."""

    contour: str  # "crescendo" | "diminuendo" | "arch"
    base: int
    articulation: float
    swing: float

    @classmethod
    def draw(cls, rng: random.Random) -> Performance:
        return cls(rng.choice(("crescendo", "diminuendo", "arch")), rng.randint(55, 85),
                   rng.choice((0.95, 0.8, 0.6)), 1.3 if rng.random() < 1 / 3 else 1.0)

    def velocity(self, rel: float, beat: float, rng: random.Random) -> int:
        shape = {"crescendo": rel - 0.5, "diminuendo": 0.5 - rel, "arch": 0.5 - abs(rel - 0.5) * 2}[self.contour]
        accent = 5 if beat % 1 < 1e-6 else 0
        return max(1, min(127, round(self.base + 36 * shape + accent + rng.randint(-3, 3))))

    def warp(self, beat: float) -> float:
        """Straight time → this player's swung time (the same warp liveduet plays its answers with)."""
        return Expression(swing=self.swing).warp(beat)

    def play(self, notes: list[Note]) -> list[Note]:
        """The notes as this player plays them: swung, each held `articulation` of its length
        (velocities untouched). The references are compared in this form too: what the player
        would have played next."""
        out = []
        for on, end, p, v in notes:
            start = self.warp(on)
            out.append((start, start + max(1 / TICKS, (self.warp(end) - start) * self.articulation), p, v))
        return out

    def messages(self, call: list[Note], rng: random.Random) -> list[tuple[float, mido.Message]]:
        """(beats from the call's start, message) for the call as played, with this dynamic contour."""
        span = max(n[0] for n in call) or 1.0
        msgs: list[tuple[float, int, mido.Message]] = []
        for (on, _, p, _), (start, stop, _, _) in zip(call, self.play(call)):
            vel = self.velocity(on / span, on, rng)
            msgs.append((start, 1, mido.Message("note_on", note=p, velocity=vel)))
            msgs.append((stop, 0, mido.Message("note_off", note=p)))
        msgs.sort(key=lambda m: (m[0], m[1]))
        return [(t, m) for t, _, m in msgs]


def settings_for(base: LiveSettings, options: LiveEvalOptions) -> LiveSettings:
    return base.with_overrides(tempo={"bpm": options.bpm if options.fixed_tempo else 0.0,
                                      "initial_bpm": options.bpm})


def run_live_eval(runtime: Any, data: Dataset, base: LiveSettings, options: LiveEvalOptions,
                  log: Callable[[str], None] = lambda line: None) -> dict:
    """Play the calls through one session; the report (JSON-ready)."""
    items = excerpts(data, options.beats, options.calls)
    if len(items) < 2:
        from liveduet.errors import CorpusError

        raise CorpusError(f"{len(items)} validation pieces are at least {2 * options.beats} beats long with "
                          "enough notes; need 2 or more (a larger --val-percent, or another folder)")
    settings = settings_for(base, options)
    rng = random.Random(options.seed)
    clock = ManualClock(0.0)
    out = FakeOutput(clock, name="simulated synth")
    session = Session(settings, runtime.vocab, answer_sampler(runtime, settings.answer, seed=options.seed), clock,
                      seed=options.seed, input_name="simulated player", output_name=out.name)
    session.set_output(out)
    session.start(threads=False)
    started = time.perf_counter()
    period = 60.0 / options.bpm
    rows = []
    for i, ex in enumerate(items):
        perf = Performance.draw(rng)
        t0 = clock.now() + options.gap_beats * period
        first_sent = len(out.sent)
        played = [(t0 + b * period, m) for b, m in perf.messages(ex.call, rng)]
        for t, msg in played:
            _advance(session, clock, t)
            session.listener.callback(msg)
            session.pump()
        last_msg = played[-1][0]
        deadline = last_msg + (3 * options.beats + 8) * period
        while clock.now() < deadline and not (session.engine.state is State.LISTENING and
                                               session.engine.answers >= i + 1 and not session.scheduler.pending()):
            _advance(session, clock, min(deadline, clock.now() + 0.05))
        other = items[(i + len(items) // 2) % len(items)]  # far down the list: another file, as a rule
        rows.append(_score(ex, other, perf, played, out.sent[first_sent:], t0,
                           options.bpm, settings.answer.channel))  # the player's beats, whatever liveduet heard
        log(f"call {i + 1}/{len(items)}")
    wall = time.perf_counter() - started
    report = summarize(rows)
    report["options"] = asdict(options)
    report["settings"] = {"answer": asdict(settings.answer), "phrase": asdict(settings.phrase)}
    report["simulated_s"] = round(clock.now(), 1)
    report["wall_s"] = round(wall, 2)
    report["speed"] = round(clock.now() / wall, 1) if wall else None
    report["model"] = str(getattr(runtime, "path", ""))
    report["calls"] = rows
    return report


def _advance(session: Session, clock: ManualClock, t: float) -> None:
    """Move simulated time to `t` as the threads would see it: a turn every TICK_S while the
    engine is busy, one jump while it only listens."""
    while clock.now() < t - 1e-12:
        idle = session.engine.state is State.LISTENING and not session.scheduler.pending()
        step = t - clock.now() if idle else min(TICK_S, t - clock.now())
        nxt = session.scheduler.next_due()
        if nxt is not None and clock.now() < nxt < clock.now() + step:
            step = nxt - clock.now()
        clock.advance(max(step, 0.0))
        session.pump()


def _score(ex: Excerpt, other: Excerpt, perf: Performance, played: list[tuple[float, mido.Message]],
           sent: list[tuple[float, mido.Message]], t0: float, bpm: float, channel: int) -> dict:
    to_beats = bpm / 60.0
    call = _notes(played, None, t0, to_beats)
    last_msg = played[-1][0]
    last_release = max(t for t, m in played if m.type == "note_off")
    answer_msgs = [(t, m) for t, m in sent if m.type in ("note_on", "note_off") and m.channel == channel]
    false_end = any(m.type == "note_on" and m.velocity > 0 and t < last_msg for t, m in answer_msgs)
    answer = _notes([(t, m) for t, m in answer_msgs if t >= last_msg], channel, t0, to_beats)
    row: dict[str, Any] = {"piece": ex.name, "answered": bool(answer), "false_end": false_end,
                           "performance": asdict(perf), "answer_notes": len(answer)}
    if not answer:
        return row
    row["entry_beats"] = round((min(n[0] for n in answer) - (last_release - t0) * to_beats), 3)
    for name, cont in (("answer", answer), ("composer", perf.play(ex.composer)),
                       ("another", perf.play(other.composer))):
        row[name] = {k: round(v, 4) for k, v in listening.compare(call, cont).items()}
    row["expression"] = _expression(call, answer, perf)
    return row


def _notes(msgs: list[tuple[float, mido.Message]], channel: int | None, t0: float, to_beats: float) -> list[Note]:
    open_: dict[int, tuple[float, int]] = {}
    notes: list[Note] = []
    for t, m in msgs:
        if channel is not None and m.channel != channel:
            continue
        b = (t - t0) * to_beats
        if m.type == "note_on" and m.velocity > 0:
            open_[m.note] = (b, m.velocity)
        elif m.note in open_:
            on, vel = open_.pop(m.note)
            notes.append((on, b, m.note, vel))
    return sorted(notes)


def _expression(call: list[Note], answer: list[Note], perf: Performance) -> dict:
    """Velocity contour correlation (each answer note against the call note at the same relative
    place), swing ratios and articulations of both."""
    def rel(notes: list[Note]) -> list[tuple[float, int]]:
        lo, hi = notes[0][0], max(n[0] for n in notes)
        return [((n[0] - lo) / (hi - lo) if hi > lo else 0.0, n[3]) for n in notes]

    c, a = rel(call), rel(answer)
    reference = [min(c, key=lambda x: abs(x[0] - pos))[1] for pos, _ in a]
    corr = listening.pearson([float(v) for _, v in a], [float(v) for v in reference])
    return {
        "velocity_corr": None if corr is None else round(corr, 3),
        "swing_call": _r(listening.swing_ratio(call)), "swing_answer": _r(listening.swing_ratio(answer)),
        "swing_played": perf.swing,
        "articulation_call": _r(listening.articulation(call)),
        "articulation_answer": _r(listening.articulation(answer)),
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _mean(xs: list[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


def summarize(rows: list[dict]) -> dict:
    """Means over answered calls, each answer's place between the references, the entry and the
    expression figures."""
    answered = [r for r in rows if r["answered"]]
    out: dict[str, Any] = {"calls_played": len(rows), "answered": len(answered),
                           "answered_share": len(answered) / len(rows) if rows else 0.0,
                           "false_ends": sum(r["false_end"] for r in rows),
                           "false_end_share": sum(r["false_end"] for r in rows) / len(rows) if rows else 0.0}
    table: dict[str, dict] = {}
    for m in listening.MEASURES:
        means = {who: _mean([r[who][m] for r in answered]) for who in ("answer", "composer", "another")}
        table[m] = {**{k: None if v is None else round(v, 4) for k, v in means.items()},
                    "place": None if None in means.values() else _round(listening.place(
                        means["answer"], means["another"], means["composer"]))}
    out["measures"] = table
    entries = sorted(r["entry_beats"] for r in answered)
    out["entry_beats_median"] = round(statistics.median(entries), 3) if entries else None
    out["entry_beats_p90"] = round(entries[min(len(entries) - 1, math.ceil(0.9 * len(entries)) - 1)], 3) \
        if entries else None
    ex = [r["expression"] for r in answered]
    corr = [e["velocity_corr"] for e in ex if e["velocity_corr"] is not None]
    swung = [e for e in ex if e["swing_played"] > 1 and e["swing_call"] and e["swing_answer"]]
    arts = [e for e in ex if e["articulation_call"] and e["articulation_answer"]]
    out["expression"] = {
        "velocity_corr_mean": _round(_mean(corr)),
        "swing_within_0.05": _round(_mean([abs(e["swing_call"] - e["swing_answer"]) <= 0.05 for e in swung])),
        "swing_calls": len(swung),
        "articulation_within_10pct": _round(_mean([abs(e["articulation_answer"] / e["articulation_call"] - 1) <= 0.1
                                                   for e in arts])),
    }
    return out


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def targets_met(report: dict) -> dict[str, bool]:
    """The listening issue's targets, each true or false."""
    m = report["measures"]
    ok = {f"place {k} >= 0.8": (m[k]["place"] or 0) >= 0.8 for k in ("pc_cosine", "rhythm_overlap", "register_gap")}
    ok["in key >= 0.97"] = (m["in_key"]["answer"] or 0) >= 0.97
    ok["answered 100%"] = report["answered_share"] == 1.0
    ok["entry <= 1 beat (median)"] = (report["entry_beats_median"] or 99) <= 1.0
    ok["false ends <= 5%"] = report["false_end_share"] <= 0.05
    return ok


__all__ = ["LiveEvalOptions", "excerpts", "run_live_eval", "summarize", "targets_met"]
