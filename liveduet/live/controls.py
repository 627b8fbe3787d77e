"""The engine's side of the command bus (live/commands.py): what each command changes, on the engine thread.

`Controls` is a part of the Engine (live/engine.py, which inherits it): the values a control sets
(temperature, answer length, complexity, vary mode's σ, mode, scale lock) live on the engine, where
the answer and the snapshot read them; this module is the one place commands change them. Panic and
the end gesture are state-machine inputs, handed to the engine's `_apply`.
Invariant: every value reaches the sampler clamped to its range in commands.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import mido

from liveduet.live import commands
from liveduet.live.phrase import Input, State
from liveduet.music.theory import best_major, major_scale, scale_name

if TYPE_CHECKING:
    from liveduet.live.answer import Call, LiveSampler
    from liveduet.live.vary import Varier


class Controls:
    """Command handling, mixed into Engine (it sets these attributes in its __init__)."""

    sampler: LiveSampler
    state: State
    call: Call | None
    varier: Varier
    log: Callable[[str], None]
    mode: str
    temperature: float
    length_ratio: float
    complexity: float
    lock: str | None

    if TYPE_CHECKING:
        def _apply(self, event: Input, t: float, msg: mido.Message | None) -> None: ...

    def command(self, cmd: commands.Command, t: float) -> None:
        """A command from any control surface (live/commands.py), on the engine thread."""
        if isinstance(cmd, commands.SetTemperature):
            self.set_temperature(cmd.value)
        elif isinstance(cmd, commands.SetLength):
            self.length_ratio = commands.clamp(cmd.ratio, commands.LENGTH_RANGE)
        elif isinstance(cmd, commands.SetComplexity):
            self.set_complexity(cmd.value)
        elif isinstance(cmd, commands.SetVariation):
            self.varier.sigma = commands.clamp(cmd.value, commands.VARIATION_RANGE)
        elif isinstance(cmd, commands.SetMode):
            if cmd.mode in commands.MODES:
                self.mode = cmd.mode  # from the next call on
        elif isinstance(cmd, commands.LockScale):
            self._lock(self._call_key() if cmd.tonic == commands.CALL_KEY else cmd.tonic)
        elif isinstance(cmd, commands.Panic):
            self._apply(Input.PANIC, t, None)
        elif isinstance(cmd, commands.EndCall) and self.state is State.CALLING:
            self._apply(Input.END_GESTURE, t, None)

    def set_temperature(self, value: float) -> None:
        self.temperature = commands.clamp(value, commands.TEMPERATURE_RANGE)
        self.sampler.temperature = self.temperature

    def set_complexity(self, value: float) -> None:
        """Note density of the model's answers from the next event sampled on (echo and vary mode
        answers are the call's own events, untouched): the sampler's duration bias (model/sampling.py)."""
        value = commands.clamp(value, commands.COMPLEXITY_RANGE)
        if value != self.complexity:  # the sampler rebuilds its duration mask: only on a change
            self.sampler.set_complexity(value)
        self.complexity = value

    def panic(self, t: float) -> None:
        self.command(commands.Panic(), t)

    def _call_key(self) -> int | None:
        """The key of the current (or last) call, from every note struck in it."""
        messages = self.call.messages if self.call else []
        return best_major(m.note for _, m in messages if m.type == "note_on")

    def _lock(self, tonic: int | None) -> None:
        self.sampler.set_pitch_classes(None if tonic is None else set(major_scale(tonic)))
        self.lock = None if tonic is None else scale_name(tonic)
        self.log(f"scale lock: {self.lock or 'off'}")
