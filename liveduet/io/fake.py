"""Fake MIDI ports for tests: an output that records what it was sent, an input the test pushes into."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import mido

from liveduet.clock import Clock, ManualClock


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


class FakeBackend:
    """Stands in for a `mido.Backend` wherever `io/ports.py` uses one: port names per direction,
    `open_input(name, virtual, callback)`, `open_output(name, virtual)`; the `PortWatcher` polls the
    same name lists. Tests plug and unplug devices and play into the inputs:

        backend = FakeBackend(clock, inputs=["Keyboard"], outputs=["Synth"])
        backend.play("Keyboard", msg)      # the player: into every live input opened on Keyboard
        backend.unplug("Synth")            # gone from the lists; what is sent to it is lost
        backend.plug("Synth")              # back; a port opened on it now delivers again
        backend.received("Synth")          # (time, message) the synth got, across reconnects

    As with rtmidi, unplugging raises nothing: an input opened on the device stops delivering for
    good (the connection died with it), an output's sends go nowhere. Opening a name that is not
    listed raises OSError("unknown port ..."), as mido does.
    """

    name = "fake"
    api = None

    def __init__(self, clock: Clock | None = None, inputs: Iterable[str] = (), outputs: Iterable[str] = ()) -> None:
        self.clock: Clock = clock if clock is not None else ManualClock()
        self._names = {"input": list(inputs), "output": list(outputs)}
        self.inputs: list[FakeInput] = []  # every input port opened, in order
        self.outputs: list[FakeOutput] = []  # every output port opened, in order
        self._unplugged: dict[str, set[str]] = {"input": set(), "output": set()}
        self._dead: set[object] = set()  # ports whose device was unplugged while they were open
        self.lost: list[tuple[float, mido.Message]] = []  # sent to an unplugged device

    # -- what ports.py calls ----------------------------------------------------------------------

    def get_input_names(self) -> list[str]:
        return list(self._names["input"])

    def get_output_names(self) -> list[str]:
        return list(self._names["output"])

    def open_input(self, name: str, virtual: bool = False, callback: Callable[[mido.Message], None] | None = None,
                   **_: object) -> FakeInput:
        self._check(name, "input", virtual)
        port = FakeInput(callback, name=name)
        self.inputs.append(port)
        return port

    def open_output(self, name: str, virtual: bool = False, **_: object) -> FakeOutput:
        self._check(name, "output", virtual)
        port = _BackendOutput(self, self.clock, name=name)
        self.outputs.append(port)
        return port

    def _check(self, name: str, kind: str, virtual: bool) -> None:
        if not virtual and name not in self._names[kind]:
            raise OSError(f"unknown port {name!r}")

    # -- what a test does -------------------------------------------------------------------------

    def plug(self, name: str, kind: str | None = None) -> None:
        """A device appears (again): its ports are listed. `kind` ("input" or "output") says which;
        by default the ones it had when it was unplugged, or both for a new device."""
        had = [k for k in ("input", "output") if name in self._unplugged[k]]
        kinds = [kind] if kind else had or ["input", "output"]
        for k in kinds:
            self._unplugged[k].discard(name)
            if name not in self._names[k]:
                self._names[k].append(name)

    def unplug(self, name: str) -> None:
        """A device goes away: its ports leave the lists; the ports opened on it go dead."""
        for kind, names in self._names.items():
            if name in names:
                names.remove(name)
                self._unplugged[kind].add(name)
        for port in [*self.inputs, *self.outputs]:
            if port.name == name and not port.closed:
                self._dead.add(port)

    def alive(self, port: FakeInput | FakeOutput) -> bool:
        return not port.closed and port not in self._dead

    def play(self, name: str, msgs: mido.Message | Iterable[mido.Message]) -> int:
        """The device `name` sends `msgs`: every live input opened on it receives them. Returns how
        many ports got them (0: nobody listens, or the connection is dead)."""
        ports = [p for p in self.inputs if p.name == name and self.alive(p)]
        batch = [msgs] if isinstance(msgs, mido.Message) else list(msgs)
        for port in ports:
            port.push(batch)
        return len(ports)

    def received(self, name: str) -> list[tuple[float, mido.Message]]:
        """What the device `name` received from the output ports opened on it, in order."""
        return [item for port in self.outputs if port.name == name for item in port.sent]

    def open_ports(self) -> list[FakeInput | FakeOutput]:
        """Ports opened and not closed: after a clean shutdown, none."""
        return [p for p in [*self.inputs, *self.outputs] if not p.closed]


class _BackendOutput(FakeOutput):
    """An output opened through a FakeBackend: delivers while its device is plugged in."""

    def __init__(self, backend: FakeBackend, clock: Clock, name: str) -> None:
        super().__init__(clock, name)
        self._backend = backend

    def send(self, msg: mido.Message) -> None:
        if self.closed or self._backend.alive(self):
            super().send(msg)  # closed: raises SendAfterCloseError
        else:
            self._backend.lost.append((self.clock.now(), msg))
