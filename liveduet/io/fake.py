"""Fake MIDI ports for tests: an output that records what it was sent, an input the test pushes into."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import mido

from liveduet.live.clock import Clock, ManualClock


class SendAfterCloseError(RuntimeError):
    """A message was sent on a closed port: a lifecycle bug (the real rtmidi JACK port segfaults)."""


class FakeOutput:
    """Records `(clock.now(), message)` for every send; refuses sends after `close()`."""

    def __init__(self, clock: Clock | None = None, name: str = "fake output") -> None:
        self.name = name
        self.clock: Clock = clock if clock is not None else ManualClock()
        self.sent: list[tuple[float, mido.Message]] = []
        self.closed = False

    def send(self, msg: mido.Message) -> None:
        if self.closed:
            raise SendAfterCloseError(f"send() on closed port {self.name!r}: {msg}")
        self.sent.append((self.clock.now(), msg))

    @property
    def messages(self) -> list[mido.Message]:
        return [m for _, m in self.sent]

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> FakeOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FakeInput:
    """Delivers pushed messages to the callback on the caller's thread, like rtmidi's callback thread."""

    def __init__(self, callback: Callable[[mido.Message], None] | None = None, name: str = "fake input") -> None:
        self.name = name
        self.callback = callback
        self.closed = False
        self.pending: list[mido.Message] = []  # held while no callback is set, as mido does

    def push(self, msgs: mido.Message | Iterable[mido.Message]) -> None:
        if self.closed:
            return  # a closed real port just stops delivering
        for msg in [msgs] if isinstance(msgs, mido.Message) else msgs:
            if self.callback is None:
                self.pending.append(msg)
            else:
                self.callback(msg)

    def close(self) -> None:
        self.callback = None
        self.closed = True

    def __enter__(self) -> FakeInput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
