"""Live-session settings: dataclasses loaded from TOML (configs/live.toml), validated by name."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from liveduet.config import check_sections, load_toml, parse_section
from liveduet.errors import ConfigError


@dataclass(frozen=True)
class PhraseSettings:
    silence_beats: float = 1.5  # the call ends after this much silence (all keys and pedal up)
    end_gesture: str = "silence"  # "silence" | "pedal" (pedal released) | "cc" (end_cc pressed)
    end_cc: int = 20
    barge_in: bool = True  # a new call during the answer stops the answer at once
    early_entry: bool = True  # enter on the bar line when the call seems to end there (see live/entry.py)
    entry_silence_beats: float = 0.75  # elsewhere: enter on the first beat after this much silence


@dataclass(frozen=True)
class AnswerSettings:
    length_ratio: float = 1.0  # answer length / call length
    min_beats: float = 2.0
    max_beats: float = 16.0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.95
    channel: int = 1  # 0-based: channel 2, so the synth can give liveduet its own sound
    articulation: float = 0.92  # share of each duration a note sounds: repeated notes re-strike
    lookahead_s: float = 0.4  # tokens are generated this far ahead of the playhead, no further
    start_margin_s: float = 0.02  # the answer starts on the first beat at least this far ahead
    velocity_spread: int = 3  # ± random velocity around the call's contour
    memory: str = "auto"  # "call": each call from a fresh state | "session": one state | "auto" (live/memory.py)
    max_repeat: int = 4  # repetition guard: no more identical pitch tokens in a row than this (0: off)
    max_loop: int = 4  # ... and no figure of 2..8 pitch tokens repeated more often than this in a row (0: off)
    follow: float = 1.0  # bias toward the call's pitch classes (0: off); see model/sampling.py
    follow_rhythm: float = 1.0  # bias toward the call's note durations (0: off)
    follow_register: float = 1.0  # bias toward the call's register (0: off)
    mirror: bool = True  # velocity contour, articulation and swing follow the call's (live/expression.py)
    variation: float = 0.5  # vary mode: σ of z' = z + σ·ε (0: a near-copy); the mod wheel in vary mode
    complexity: float = 0.5  # note density of the model's answers, 0..1 (0.5: no bias); live on controls.complexity_cc
    vary_model: str = ""  # vary mode: the phrase VAE's folder ("": models/vary)
    candidates: int = 1  # > 1: sample this many continuations per stretch, play the critic's pick (live/candidates.py)


@dataclass(frozen=True)
class PracticeSettings:
    mode: str = "call"  # "call" (call and response) | "echo" (plays the call back) | "accompany" | "vary"
    metronome: bool = False  # clicks on every beat (needs a fixed tempo, or MIDI clock)
    count_in_bars: int = 0  # clicks before the session starts listening
    beats_per_bar: int = 4
    call_bars: int = 0  # >0: every call lasts this many bars, whatever the silences
    click_channel: int = 9  # channel 10: the GM drum channel
    click_accent: int = 76  # hi wood block on the bar's first beat
    click_note: int = 77  # low wood block on the others
    click_velocity: int = 90


@dataclass(frozen=True)
class TempoSettings:
    bpm: float = 0.0  # 0: estimate from each call's onsets
    initial_bpm: float = 100.0  # until the first call is heard
    min_bpm: float = 50.0
    max_bpm: float = 200.0
    follow_clock: bool = False  # take tempo and beat from incoming MIDI clock (0xF8, start/stop)


@dataclass(frozen=True)
class ControlSettings:
    temperature_cc: int = 1  # the mod wheel: 0..127 → 0.1..2.0
    length_cc: int = 74  # 0..127 → answer length ratio 0.25..2.0
    complexity_cc: int = 71  # 0..127 → note density 0..1 (CC 71, a "sound controller" knob beside 74)
    panic_cc: int = 123  # all notes off from the keyboard also silences liveduet
    lock_cc: int = 80  # >= 64: answers keep to the key of the last call; < 64: free
    keyswitches: bool = True  # keys below A0: 0..11 lock to that major scale (C..B), 12..20 unlock
    thru: bool = True


@dataclass(frozen=True)
class LiveSettings:
    phrase: PhraseSettings = field(default_factory=PhraseSettings)
    answer: AnswerSettings = field(default_factory=AnswerSettings)
    tempo: TempoSettings = field(default_factory=TempoSettings)
    controls: ControlSettings = field(default_factory=ControlSettings)
    practice: PracticeSettings = field(default_factory=PracticeSettings)

    def __post_init__(self) -> None:
        p, a, t, c, r = self.phrase, self.answer, self.tempo, self.controls, self.practice
        checks = [
            ("phrase.silence_beats", p.silence_beats, 0.25 <= p.silence_beats <= 16),
            ("phrase.end_gesture", p.end_gesture, p.end_gesture in ("silence", "pedal", "cc")),
            ("phrase.end_cc", p.end_cc, 0 <= p.end_cc <= 127),
            ("answer.length_ratio", a.length_ratio, 0.1 <= a.length_ratio <= 4),
            ("answer.min_beats", a.min_beats, 0.5 <= a.min_beats <= a.max_beats),
            ("answer.max_beats", a.max_beats, a.max_beats <= 128),
            ("answer.temperature", a.temperature, 0.1 <= a.temperature <= 2.0),
            ("answer.top_k", a.top_k, a.top_k >= 0),
            ("answer.top_p", a.top_p, 0 < a.top_p <= 1),
            ("answer.channel", a.channel, 0 <= a.channel <= 15 and a.channel != 9),
            ("answer.articulation", a.articulation, 0.1 <= a.articulation <= 1),
            ("answer.lookahead_s", a.lookahead_s, 0.05 <= a.lookahead_s <= 5),
            ("answer.start_margin_s", a.start_margin_s, 0 <= a.start_margin_s <= 2),
            ("answer.velocity_spread", a.velocity_spread, 0 <= a.velocity_spread <= 40),
            ("answer.memory", a.memory, a.memory in ("call", "session", "auto")),
            ("answer.max_repeat", a.max_repeat, 0 <= a.max_repeat <= 64),
            ("answer.max_loop", a.max_loop, 0 <= a.max_loop <= 64),
            ("answer.follow", a.follow, 0 <= a.follow <= 10),
            ("answer.follow_rhythm", a.follow_rhythm, 0 <= a.follow_rhythm <= 10),
            ("answer.follow_register", a.follow_register, 0 <= a.follow_register <= 10),
            ("answer.candidates", a.candidates, 1 <= a.candidates <= 16),
            ("phrase.entry_silence_beats", p.entry_silence_beats, 0.25 <= p.entry_silence_beats <= 16),
            ("tempo.bpm", t.bpm, t.bpm == 0 or 20 <= t.bpm <= 300),
            ("tempo.initial_bpm", t.initial_bpm, 20 <= t.initial_bpm <= 300),
            ("tempo.min_bpm", t.min_bpm, 20 <= t.min_bpm < t.max_bpm <= 300),
            ("controls.temperature_cc", c.temperature_cc, -1 <= c.temperature_cc <= 127),
            ("controls.length_cc", c.length_cc, -1 <= c.length_cc <= 127),
            ("controls.complexity_cc", c.complexity_cc, -1 <= c.complexity_cc <= 127),
            ("controls.panic_cc", c.panic_cc, -1 <= c.panic_cc <= 127),
            ("controls.lock_cc", c.lock_cc, -1 <= c.lock_cc <= 127),
            ("practice.mode", r.mode, r.mode in ("call", "echo", "accompany", "vary")),
            ("answer.variation", a.variation, 0 <= a.variation <= 2),
            ("answer.complexity", a.complexity, 0 <= a.complexity <= 1),
            ("practice.count_in_bars", r.count_in_bars, 0 <= r.count_in_bars <= 16),
            ("practice.beats_per_bar", r.beats_per_bar, 1 <= r.beats_per_bar <= 16),
            ("practice.call_bars", r.call_bars, 0 <= r.call_bars <= 64),
            ("practice.click_channel", r.click_channel, 0 <= r.click_channel <= 15),
            ("practice.click_accent", r.click_accent, 0 <= r.click_accent <= 127),
            ("practice.click_note", r.click_note, 0 <= r.click_note <= 127),
            ("practice.click_velocity", r.click_velocity, 1 <= r.click_velocity <= 127),
        ]
        for name, value, ok in checks:
            if not ok:
                raise ConfigError(f"{name} = {value!r} is out of range (see configs/live.toml)")

    def with_overrides(self, **sections: dict[str, Any]) -> LiveSettings:
        """A copy with some values changed, e.g. with_overrides(tempo={"bpm": 90})."""
        return _build(self, sections)


def _build(base: LiveSettings, data: dict[str, Any], source: str = "override") -> LiveSettings:
    """`base` with the given sections' values, each checked by the one loader (liveduet/config.py),
    then the whole validated by LiveSettings."""
    check_sections(data, tuple(f.name for f in fields(LiveSettings)), source)
    parts = {f.name: parse_section(f.name, data.get(f.name), type(getattr(base, f.name)), base=getattr(base, f.name))
             for f in fields(LiveSettings)}
    return LiveSettings(**parts)


def load_live_settings(path: str | Path | None) -> LiveSettings:
    """Defaults, overridden by a TOML file when one is given."""
    if path is None:
        return LiveSettings()
    return _build(LiveSettings(), load_toml(path), str(path))
