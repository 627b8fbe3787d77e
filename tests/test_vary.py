"""Vary mode and the `vary` / `morph` commands (live/vary.py, commands/vary.py, commands/morph.py):
windows and the padding rule, the length invariant, morph endpoints, the engine in vary mode on the
manual clock, the mod wheel as σ, and bad input as one line with exit 2."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import mido
import numpy as np
import pytest
import torch
from test_live_engine import ScriptedSampler, balanced, play, run_until

from liveduet.cli import main
from liveduet.clock import ManualClock
from liveduet.io.fake import FakeOutput
from liveduet.live import commands
from liveduet.live.engine import Engine
from liveduet.live.phrase import Action, Input, State, transition
from liveduet.live.scheduler import Scheduler
from liveduet.live.settings import LiveSettings
from liveduet.live.vary import (
    Variation,
    fill_window,
    key_pitch_classes,
    monotone_path,
    morph_events,
    slerp,
    sounding_runs,
    split_windows,
    vary_events,
)
from liveduet.model.config import TrainConfig
from liveduet.model.phrases import duration_table, pack_phrases
from liveduet.model.vae import PhraseVAE, VAEConfig
from liveduet.model.vae_eval import reconstruction_metrics
from liveduet.model.vae_export import VAEModel, export_vae, load_vae
from liveduet.music.midifile import notes_to_midi, save_atomic
from liveduet.music.tokens import TICKS, TokenizerSettings, Vocabulary

VOCAB = Vocabulary(TokenizerSettings())
SCALE = [60, 62, 64, 65, 67, 69, 71, 72]


@pytest.fixture(scope="module", params=["phrase", "beats"])
def vae_dir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """A small untrained VAE, exported through the real export (its encoder made to use z); one z for
    the phrase, or a slice of z per beat (VAEConfig.latent)."""
    root = tmp_path_factory.mktemp("vae")
    torch.manual_seed(0)
    cfg = VAEConfig(vocab_size=len(VOCAB), embed=16, enc_hidden=16, dec_hidden=24, head_dim=0,
                    z_dim=8 if request.param == "phrase" else 16, position_embed=8, latent=request.param)
    model = PhraseVAE(cfg).eval()
    model.set_durations(duration_table(VOCAB))
    with torch.no_grad():
        model.to_posterior.weight.mul_(30)
    phrases = [np.array(VOCAB.encode([((SCALE[(k + i) % 8],), 6) for i in range(16)])) for k in range(8)]
    masks = torch.from_numpy(VOCAB.pitch_mask), torch.from_numpy(VOCAB.duration_mask)
    figures = reconstruction_metrics(model, pack_phrases(phrases, cfg.max_tokens), *masks, cfg.active_threshold,
                                     torch.device("cpu"), duration_table(VOCAB))
    run = root / "run"
    run.mkdir()
    VOCAB.save(run / "vocab.json")
    (run / "history.json").write_text(json.dumps([{"step": 1, **figures}]))
    ckpt = {"config": {"model": asdict(cfg), "train": asdict(TrainConfig())}, "model": model.state_dict(),
            "vocab_fingerprint": VOCAB.fingerprint()}
    export_vae(run, ckpt, root / "vary", False, None, None)
    return root / "vary"


@pytest.fixture(scope="module")
def vae(vae_dir: Path) -> VAEModel:
    return load_vae(vae_dir)


def phrase(beats: int, chords: bool = False) -> list:
    out = []
    for i in range(beats * 2):
        p = (SCALE[i % 8],) if not chords or i % 3 else (SCALE[i % 8], SCALE[i % 8] + 4)
        out.append((p, 6))
    return out


def length(events: list) -> int:
    return sum(d for _, d in events)


# ---- windows and the padding rule ---------------------------------------------------------------

def test_split_windows_strikes_a_held_note_again_after_the_cut():
    events = [((60,), 84), ((62,), 24), ((64,), 12)]  # 7 beats, 2, 1: the 62 crosses beat 8
    windows = split_windows(events, 96)
    assert windows == [[((60,), 84), ((62,), 12)], [((62,), 12), ((64,), 12)]]
    assert split_windows(events, 96, min_tail=48) == [events], "a tail under a bar joins the window before"
    assert len(split_windows(events + [((65,), 24)], 96, min_tail=48)) == 2
    struck_again = [((60,), 96), ((60,), 12)]  # a new note on the cut, not a held one
    assert split_windows(struck_again, 96, min_tail=48) == [struck_again]
    assert split_windows([], 96) == []


def test_a_pause_of_a_bar_or_more_splits_the_phrase():
    call, answer, gap = [((60,), 24), ((62,), 24)], [((64,), 12)], [((), 48), ((), 24)]
    assert sounding_runs(call + gap + answer, 48) == [(call, True), (gap, False), (answer, True)]
    short = [((), 36)]  # under a bar: part of the phrase, as in the VAE's training windows
    assert sounding_runs(call + short + answer + short, 48) == [(call + short + answer + short, True)]
    lead = [((), 6)]
    assert sounding_runs(lead + call + gap, 48) == [(lead, False), (call, True), (gap, False)]
    assert sounding_runs(gap, 48) == [(gap, False)] and sounding_runs([], 48) == []


def test_a_variation_plays_the_pauses_as_they_are(vae: VAEModel):
    gap = [((), 48), ((), 48)]
    events = phrase(4) + gap + phrase(3)
    for sigma in (0.0, 1.5):
        varied = vary_events(vae, events, sigma, seed=1)
        assert length(varied) == length(events)
        start = length(phrase(4))
        at, out = 0, []
        for pitches, dur in varied:  # what sounds between the two stretches
            if start <= at < start + 96:
                out.append((pitches, dur))
            at += dur
        assert out == gap


def test_fill_window_repeats_a_short_phrase_and_cuts_it():
    events = [((60,), 12), ((62,), 24)]  # 3 beats
    filled = fill_window(events, 96)
    assert length(filled) == 96
    assert filled[:4] == events * 2 and filled[-1] == ((62,), 12)
    assert fill_window(phrase(8), 96) == phrase(8), "a full window is left alone"


def test_slerp_endpoints():
    a, b = torch.randn(8), torch.randn(8)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-6) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-6)


# ---- variations -----------------------------------------------------------------------------------

@pytest.mark.parametrize("beats", [1, 3, 8, 13, 24])
def test_a_variation_lasts_exactly_as_long_as_its_phrase(vae: VAEModel, beats: int):
    events = phrase(beats, chords=True)
    for sigma in (0.0, 1.0):
        varied = vary_events(vae, events, sigma, seed=1)
        assert length(varied) == length(events) == beats * TICKS
        assert all(d > 0 for _, d in varied)


def test_a_tail_past_the_window_is_its_own_window_with_a_slice_per_beat(vae: VAEModel):
    """A 10-beat call: with one z per phrase the last 2 beats join the first window; with a slice per
    beat they are a window of their own (there is no slice for beats 9 and 10)."""
    variation = Variation(vae, phrase(10), 0.0, seed=0)
    assert len(variation.plans) == (1 if vae.cfg.latent == "beats" else 0)  # after the first, started
    assert length(variation.events()) == 10 * TICKS


def test_variations_are_repeatable_and_sigma_zero_ignores_the_seed(vae: VAEModel):
    events = phrase(8)
    assert vary_events(vae, events, 0.0, seed=1) == vary_events(vae, events, 0.0, seed=2)
    assert vary_events(vae, events, 2.0, seed=3) == vary_events(vae, events, 2.0, seed=3)
    with pytest.raises(ValueError):
        vary_events(vae, events, -0.1, seed=0)


def pitch_classes(events: list) -> set[int]:
    return {p % 12 for ps, _ in events for p in ps}


def test_keep_key_keeps_a_variation_in_the_calls_key_and_its_own_accidentals(vae: VAEModel):
    call = phrase(8) + [((61,), 6)]  # C major with one C sharp
    allowed = key_pitch_classes(call)
    assert allowed is not None and {0, 2, 4, 5, 7, 9, 11, 1} <= allowed and 3 not in allowed
    free = [e for seed in range(6) for e in vary_events(vae, call, 2.0, seed=seed, keep_key=False)]
    kept = [e for seed in range(6) for e in vary_events(vae, call, 2.0, seed=seed)]
    assert not pitch_classes(free) <= allowed, "the untrained model alone wanders out of the key"
    assert pitch_classes(kept) <= allowed
    assert length(kept) == length(free)
    assert key_pitch_classes([((), 24)]) is None, "a rest has no key: nothing is kept"


def test_morph_steps_keep_the_nearer_ends_key(vae: VAEModel):
    a = phrase(8)  # C major
    b = [((p[0] + 1,), d) for p, d in phrase(8)]  # D flat major
    ka, kb = key_pitch_classes(a), key_pitch_classes(b)
    assert ka is not None and kb is not None
    for k, step in enumerate(morph_events(vae, a, b, 5)):
        assert pitch_classes(step) <= (ka if k / 4 < 0.5 else kb), k


def test_morph_starts_at_a_and_ends_at_b(vae: VAEModel):
    a, b = phrase(8), [((p[0] - 12,), d) for p, d in phrase(8)][::-1]
    steps = morph_events(vae, a, b, 4)
    assert len(steps) == 4 and all(length(s) == 8 * TICKS for s in steps)
    assert steps[0] == a and steps[-1] == b, "the player's own phrases at the ends"
    nominal = morph_events(vae, a, b, 4, nominal=True)
    assert nominal[0] == vary_events(vae, a, 0.0, seed=0), "the model alone: t = 0 decodes A's μ"
    assert nominal[-1] == vary_events(vae, b, 0.0, seed=0), "t = 1 decodes B's μ"


def test_the_morph_path_only_moves_away_from_a_and_towards_b():
    # steps: A, three inner steps with options (distance to A, distance to B), B; A and B 0.8 apart
    dist = [[(0.0, 0.8)],
            [(0.5, 0.4), (0.2, 0.7)],  # nominal option overshoots; the second keeps the path monotone
            [(0.3, 0.6), (0.45, 0.5)],
            [(0.7, 0.1), (0.6, 0.3)],
            [(0.8, 0.0)]]
    path = monotone_path(dist, [0.0, 0.25, 0.5, 0.75, 1.0])
    assert path == [0, 1, 1, 1, 0]  # step 3: both options keep the order; (0.6, 0.3) sits at 3/4 of the way
    chosen = [dist[k][i] for k, i in enumerate(path)]
    assert all(x[0] <= y[0] and x[1] >= y[1] for x, y in zip(chosen, chosen[1:]))
    # no monotone path: the fewest breaks
    assert monotone_path([[(0.0, 1.0)], [(0.9, 0.2)], [(0.3, 0.8)], [(1.0, 0.0)]], [0, 1 / 3, 2 / 3, 1]) == [0, 0, 0, 0]


# ---- the engine in vary mode, on the manual clock -------------------------------------------------

def vary_engine(vae_dir: Path, sigma: float = 0.0):
    clock = ManualClock(50.0)
    out = FakeOutput(clock)
    sched = Scheduler(out.send, clock)
    sampler = ScriptedSampler()
    settings = LiveSettings().with_overrides(tempo={"bpm": 120.0}, practice={"mode": "vary"},
                                             answer={"variation": sigma, "vary_model": str(vae_dir)})
    engine = Engine(settings, VOCAB, sampler, sched, seed=2, clock=clock)
    sched._on_sent = engine.on_sent
    return clock, out, sched, engine, sampler


def test_the_engine_answers_with_a_variation_of_the_call(vae_dir: Path, vae: VAEModel):
    clock, out, sched, engine, sampler = vary_engine(vae_dir)
    call = [(i * 0.5, 0.45, SCALE[i % 8]) for i in range(8)]  # four beats of eighths
    play(engine, clock, sched, call)
    run_until(engine, clock, sched, clock.now() + 8)
    call_tokens = list(engine.call.tokens)  # as heard at its end (flushed, at the estimated tempo)
    assert engine.state is State.LISTENING and engine.answers == 1
    assert sampler.i == 0, "the language model samples nothing in vary mode"
    answer = [(t, m) for t, m in out.sent if m.channel == 1]
    assert answer and balanced([m for _, m in out.sent])
    expected = vary_events(vae, list(VOCAB.decode(call_tokens)), 0.0, seed=0)
    struck = [m.note for _, m in answer if m.type == "note_on"]
    assert struck == [p for ps, _ in expected for p in ps], "σ = 0: the call as the VAE decodes it"
    assert length(expected) == length(list(VOCAB.decode(call_tokens))), "as long as the call"
    v = engine.varier.current
    assert v is not None and v.first_beat_ms is not None and v.encode_ms > 0


def test_the_mod_wheel_is_sigma_in_vary_mode(vae_dir: Path):
    _, _, _, engine, _ = vary_engine(vae_dir, sigma=0.5)
    wheel = mido.Message("control_change", control=1, value=127)
    cmd = commands.from_control(wheel, engine.s, 21)
    assert cmd == commands.SetVariation(2.0)
    engine.command(cmd, 0.0)
    assert engine.varier.sigma == 2.0 and engine.temperature == 1.0
    assert engine.snapshot(0.0).variation == 2.0, "the dashboard and the web page see σ"
    assert commands.from_control(wheel, LiveSettings(), 21) == commands.SetTemperature(2.0), "call mode: temperature"
    assert commands.from_json({"type": "variation", "value": 0.25}) == commands.SetVariation(0.25)


def test_the_dashboard_shows_sigma_in_vary_mode():
    from test_dashboard import snap, text

    from liveduet.ui.dashboard import render

    assert "mode vary  σ 1.25" in text(render(snap(mode="vary", variation=1.25), 100))
    assert "σ" not in text(render(snap(mode="call", variation=1.25), 100))


def test_vary_mode_is_an_action_of_the_state_machine():
    assert transition(State.CALLING, Input.SILENCE, vary=True).actions == (Action.VARY_CALL,)
    assert transition(State.CALLING, Input.LIKELY_END, vary=True).actions == (Action.VARY_CALL,)
    assert transition(State.CALLING, Input.SILENCE).actions == (Action.END_CALL,)


# ---- the commands -------------------------------------------------------------------------------

def write_call(path: Path, notes: list[tuple[float, float, int]], bpm: float = 90.0) -> Path:
    save_atomic(notes_to_midi([(a, b, p, 80) for a, b, p in notes], bpm=bpm), path)
    return path


def test_vary_and_morph_write_midi(tmp_path: Path, vae_dir: Path, capsys: pytest.CaptureFixture):
    call = write_call(tmp_path / "call.mid", [(i * 0.5, i * 0.5 + 0.5, SCALE[i % 8]) for i in range(12)])
    other = write_call(tmp_path / "b.mid", [(i, i + 1.0, SCALE[-1 - i % 8]) for i in range(8)])
    assert main(["vary", str(call), "--sigma", "0.5", "--n", "3", "--out", str(tmp_path / "var"),
                 "--model", str(vae_dir)]) == 0
    files = sorted((tmp_path / "var").glob("call-var*.mid"))
    assert len(files) == 3
    for f in files:
        mid = mido.MidiFile(f)
        assert abs(mid.length - 6 * 60 / 90) < 0.05, "6 beats at the call's 90 bpm"
    assert main(["morph", str(call), str(other), "--steps", "3", "--out", str(tmp_path / "m.mid"),
                 "--model", str(vae_dir)]) == 0
    assert abs(mido.MidiFile(tmp_path / "m.mid").length - 3 * 8 * 60 / 90) < 0.05
    capsys.readouterr()


@pytest.mark.parametrize("case", ["missing", "corrupt", "negative sigma", "language model", "empty call"])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, vae_dir: Path, capsys: pytest.CaptureFixture,
                                          case: str):
    call = write_call(tmp_path / "call.mid", [(0, 1, 60), (1, 2, 62)])
    args = {"missing": [str(tmp_path / "nope.mid"), "--model", str(vae_dir)],
            "corrupt": [str(tmp_path / "bad.mid"), "--model", str(vae_dir)],
            "negative sigma": [str(call), "--sigma", "-0.5", "--model", str(vae_dir)],
            "language model": [str(call), "--model", "models/default"],
            "empty call": [str(tmp_path / "empty.mid"), "--model", str(vae_dir)]}[case]
    (tmp_path / "bad.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    save_atomic(notes_to_midi([], bpm=100.0), tmp_path / "empty.mid")
    capsys.readouterr()
    assert main(["vary", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("liveduet vary: error:"), err
    if case == "language model":
        assert main(["morph", str(call), str(call), "--out", str(tmp_path / "m.mid"), "--model", "models/default"]) == 2
        assert "not a VAE" in capsys.readouterr().err
