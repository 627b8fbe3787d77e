"""Typed commands: one bus for every control surface — MIDI controls, terminal keys, the web page.

Surfaces produce commands; the engine thread consumes the musical ones (`Engine.command`), the
session the ones about files and the process (`Record`, `Quit`). The MIDI control map is a pure
function of a message and the settings (`from_control`), tested with plain messages; so is the web
page's JSON (`from_json`). Every range a
control can set is defined here once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mido

from liveduet.errors import LiveduetError
from liveduet.live.settings import LiveSettings

TEMPERATURE_RANGE = (0.1, 2.0)  # safe .. wild
LENGTH_RANGE = (0.25, 2.0)  # answer length as a share of the call
VARIATION_RANGE = (0.0, 2.0)  # vary mode's σ: a near-copy .. far from the call
COMPLEXITY_RANGE = (0.0, 1.0)  # note density: sparse .. dense (model/sampling.py)
COMPLEXITY_NEUTRAL = 0.5  # as the model plays: no bias
MODES = ("call", "echo", "accompany", "vary")
CALL_KEY = -1  # LockScale(CALL_KEY): the key of the current (or last) call


@dataclass(frozen=True)
class SetTemperature:
    value: float


@dataclass(frozen=True)
class SetLength:
    ratio: float


@dataclass(frozen=True)
class SetVariation:
    value: float  # vary mode's σ


@dataclass(frozen=True)
class SetComplexity:
    value: float  # note density of the model's answers: a bias on their durations


@dataclass(frozen=True)
class SetMode:
    mode: str


@dataclass(frozen=True)
class LockScale:
    tonic: int | None  # 0..11 (C..B) major scale, CALL_KEY for the call's, None to unlock


@dataclass(frozen=True)
class Panic:
    pass


@dataclass(frozen=True)
class EndCall:
    """The player's end gesture (a controller): the call ends now."""


@dataclass(frozen=True)
class Record:
    """Start a new timestamped recording, or finish the one running."""


@dataclass(frozen=True)
class Quit:
    pass


Command = (SetTemperature | SetLength | SetVariation | SetComplexity | SetMode | LockScale | Panic | EndCall | Record
           | Quit)


def clamp(value: float, bounds: tuple[float, float]) -> float:
    return round(min(bounds[1], max(bounds[0], value)), 2)


def scaled(value: int, bounds: tuple[float, float]) -> float:
    """A 0..127 controller value onto a range."""
    lo, hi = bounds
    return round(lo + (hi - lo) * value / 127, 2)


def from_control(msg: mido.Message, settings: LiveSettings, min_pitch: int) -> Command | None:
    """The command a controller or keyswitch message means, or None when it is music (or nothing).

    Control changes: temperature, answer length, complexity, panic, scale lock, the end gesture's controller.
    Keyswitches (note-ons below the instrument's range): 0..11 lock that major scale, 12.. unlock."""
    c = settings.controls
    if msg.type == "control_change":
        if msg.control == c.lock_cc:
            return LockScale(CALL_KEY if msg.value >= 64 else None)
        if msg.control == c.temperature_cc and settings.practice.mode == "vary":
            return SetVariation(scaled(msg.value, VARIATION_RANGE))  # vary mode: the mod wheel is σ
        if msg.control == c.temperature_cc:
            return SetTemperature(scaled(msg.value, TEMPERATURE_RANGE))
        if msg.control == c.length_cc:
            return SetLength(scaled(msg.value, LENGTH_RANGE))
        if msg.control == c.complexity_cc:
            return SetComplexity(scaled(msg.value, COMPLEXITY_RANGE))
        if msg.control == c.panic_cc:
            return Panic()
        if settings.phrase.end_gesture == "cc" and msg.control == settings.phrase.end_cc and msg.value >= 64:
            return EndCall()
        return None
    if msg.type == "note_on" and c.keyswitches and msg.note < min_pitch:
        return LockScale(msg.note if msg.note < 12 else None)
    return None


def is_control(msg: mido.Message, settings: LiveSettings) -> bool:
    """Controller messages that steer liveduet (kept out of thru and the recording)."""
    c = settings.controls
    return msg.type == "control_change" and msg.control in {
        x for x in (c.temperature_cc, c.length_cc, c.complexity_cc, c.panic_cc) if x >= 0}


class CommandError(LiveduetError):
    """A control message from a client (the web page) that means no command; the reason in one line."""


JSON_TYPES = ("temperature", "length", "variation", "complexity", "mode", "lock", "panic", "record", "end_call")


def _number(data: dict, bounds: tuple[float, float]) -> float:
    value = data.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CommandError(f"{data.get('type')}: value must be a number, got {value!r}")
    if not bounds[0] <= value <= bounds[1]:
        raise CommandError(f"{data.get('type')}: value must lie in {bounds[0]:g}..{bounds[1]:g}, got {value:g}")
    return round(float(value), 2)


def from_json(data: object, modes: tuple[str, ...] = MODES) -> Command:
    """The command a JSON control message means (the web page's controls), or CommandError.

    {"type": "temperature" | "length" | "variation" | "complexity", "value": number in its range},
    {"type": "mode", "value": one of `modes`}, {"type": "lock", "value": null (unlock) | "call" | 0..11},
    {"type": "panic" | "record" | "end_call"}. Quit is not among them: a page steers the duet, never ends it."""
    if not isinstance(data, dict):
        raise CommandError(f"a command is a JSON object, got {type(data).__name__}")
    kind = data.get("type")
    if kind == "temperature":
        return SetTemperature(_number(data, TEMPERATURE_RANGE))
    if kind == "length":
        return SetLength(_number(data, LENGTH_RANGE))
    if kind == "variation":
        return SetVariation(_number(data, VARIATION_RANGE))
    if kind == "complexity":
        return SetComplexity(_number(data, COMPLEXITY_RANGE))
    if kind == "mode":
        if data.get("value") not in modes:
            raise CommandError(f"mode: value must be one of {', '.join(modes)}, got {data.get('value')!r}")
        return SetMode(str(data["value"]))
    if kind == "lock":
        value = data.get("value")
        if value is None:
            return LockScale(None)
        if value == "call":
            return LockScale(CALL_KEY)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 12:
            return LockScale(value)
        raise CommandError(f"lock: value must be null, \"call\" or a tonic 0..11, got {value!r}")
    simple = {"panic": Panic, "record": Record, "end_call": EndCall}
    if kind in simple:
        return simple[kind]()
    raise CommandError(f"unknown command type {kind!r} (one of {', '.join(JSON_TYPES)})")
