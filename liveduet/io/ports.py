"""Thin wrapper over mido's rtmidi backend: pick ALSA or JACK, open ports by the name a user types.

Everything that can be decided without hardware lives in `portnames.py`. Backend failures become
`MidiBackendError` with one line that says what to do; unknown names become `PortNotFoundError`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import mido

from liveduet.errors import MidiBackendError, PortNotFoundError
from liveduet.io.portnames import match_port
from liveduet.worker import Worker

log = logging.getLogger(__name__)

BACKENDS = {
    "alsa": "mido.backends.rtmidi/LINUX_ALSA",
    "jack": "mido.backends.rtmidi/UNIX_JACK",
}
DEFAULT_BACKEND = "mido.backends.rtmidi"  # rtmidi's own choice: ALSA on Linux

JACK_HINT = (
    "start a JACK server (e.g. `jackd --no-realtime -d dummy -r 48000 -p 128 &`) "
    "or choose another backend with --backend alsa"
)
ALSA_HINT = "there is no ALSA sequencer (/dev/snd/seq) on this machine; run a JACK server and use --backend jack"


def get_backend(name: str | None = None) -> mido.Backend:
    """The mido backend for "alsa", "jack", or None (env MIDO_BACKEND, else rtmidi's default)."""
    if name is None:
        module = os.environ.get("MIDO_BACKEND") or DEFAULT_BACKEND
    elif name in BACKENDS:
        module = BACKENDS[name]
    else:
        raise MidiBackendError(f"unknown MIDI backend {name!r}; use one of: {', '.join(BACKENDS)}")
    return get_backend_module(module)


@contextlib.contextmanager
def quiet_c_stderr():
    """Silence what libasound and libjack print on fd 2 while we probe them ("ALSA lib seq_hw.c...",
    "Cannot connect to server socket"): our own one-line error says it better. Only around
    opening and listing, never while playing."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            sys.stderr.flush()
            os.dup2(null.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def backend_module(backend: Any) -> str | None:
    """The module string that opens `backend` again in another process (`get_backend_module`), or
    None for a backend that is not rtmidi's (a fake)."""
    if not (isinstance(backend, mido.Backend) and backend.name.startswith(DEFAULT_BACKEND)):
        return None
    return f"{backend.name}/{backend.api}" if backend.api else backend.name


def get_backend_module(module: str) -> mido.Backend:
    """The mido backend named by its module string (`backend_module`'s)."""
    try:
        return mido.Backend(module, load=True)
    except (ImportError, ValueError) as err:
        raise MidiBackendError(f"cannot load MIDI backend {module!r}: {err}") from err


def backend_label(backend: mido.Backend) -> str:
    """A short name for messages: "jack", "alsa", or the mido module string."""
    for label, module in BACKENDS.items():
        if backend.api == module.split("/")[-1]:
            return label
    if backend.api is None:
        return "rtmidi" if backend.name == DEFAULT_BACKEND else backend.name
    return f"{backend.name}/{backend.api}"


def _backend_error(backend: mido.Backend, err: Exception) -> MidiBackendError:
    detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    label = backend_label(backend)
    if label == "jack" or "jack" in detail.lower():
        hint = JACK_HINT
    elif label == "alsa" or "alsa" in detail.lower():
        hint = ALSA_HINT
    else:
        hint = "check the MIDI backend, or pick one with --backend alsa|jack"
    return MidiBackendError(f"MIDI backend {label} is unavailable ({detail}): {hint}")


def list_ports(backend: mido.Backend) -> tuple[list[str], list[str]]:
    """(input names, output names). Slow on JACK (~50–120 ms): never call it on the hot path."""
    return port_names(backend, "input"), port_names(backend, "output")


class PortLister:
    """Lists ports through one persistent rtmidi client per direction, for polling.

    mido's `get_input_names` creates a new client every call: on JACK that costs ~16 ms of CPU, and a
    hot-plug poll every 1.5 s in two directions would alone cost over 2 % of a core. A kept client
    lists in ~0.05 ms and still sees ports come and go. A backend that is not rtmidi's (another mido
    backend, `io/fake.py`'s) is asked itself, every time.
    """

    def __init__(self, backend: mido.Backend) -> None:
        self._backend = backend
        self._clients: dict[str, Any] = {}
        if backend_module(backend) is None:
            return
        import rtmidi

        api = getattr(rtmidi, f"API_{backend.api}", rtmidi.API_UNSPECIFIED) if backend.api else rtmidi.API_UNSPECIFIED
        try:
            self._clients = {"input": rtmidi.MidiIn(api, name="liveduet-watch"),
                             "output": rtmidi.MidiOut(api, name="liveduet-watch")}
        except (OSError, ValueError) as err:
            raise _backend_error(backend, err) from err

    def names(self, kind: str) -> list[str]:
        if not self._clients:
            return port_names(self._backend, kind)
        return list(self._clients[kind].get_ports())

    def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            client.delete()


def port_names(backend: mido.Backend, kind: str) -> list[str]:
    """Names of the ports of one `kind` ("input" or "output")."""
    try:
        with quiet_c_stderr():
            names = backend.get_input_names() if kind == "input" else backend.get_output_names()
    except (OSError, ValueError) as err:  # rtmidi.SystemError is an OSError; ValueError: bad API name
        raise _backend_error(backend, err) from err
    return list(names)


def open_input(
    backend: mido.Backend,
    query: str,
    callback: Callable[[mido.Message], None] | None,
    virtual: bool = False,
) -> Any:
    """Open an input port by the name the user typed, or create our own port if `virtual`.

    `callback` runs on rtmidi's thread for every message: it must only stamp and enqueue.
    """
    if virtual:
        return _open(backend, "input", query, virtual=True, callback=callback)
    name = match_port(query, port_names(backend, "input"), "input")
    return _open(backend, "input", name, virtual=False, callback=callback)


def open_output(backend: mido.Backend, query: str, virtual: bool = False) -> Any:
    """Open an output port by the name the user typed, or create our own port if `virtual`."""
    if virtual:
        return _open(backend, "output", query, virtual=True)
    name = match_port(query, port_names(backend, "output"), "output")
    return _open(backend, "output", name, virtual=False)


def _open(backend: mido.Backend, kind: str, name: str, virtual: bool, **kwargs: Any) -> Any:
    opener = backend.open_input if kind == "input" else backend.open_output
    try:
        with quiet_c_stderr():
            return opener(name, virtual=virtual, **kwargs)
    except OSError as err:
        if not virtual and "unknown port" in str(err):
            # Listed a moment ago, gone now (unplugged between listing and opening).
            raise PortNotFoundError(f"MIDI {kind} port {name!r} disappeared before it could be opened") from err
        raise _backend_error(backend, err) from err


_UNRESOLVED = object()  # a query given without the name of the port opened for it


class PortWatcher(Worker):
    """Background poller that notices ports vanishing and coming back (rtmidi raises nothing on unplug).

    It watches the port it holds, not a name: while connected, the exact name of the port that was
    opened (`queries` as {query: opened name}) is lost only when that name leaves the list — another
    client opening a port of a similar name (which makes the query ambiguous) changes nothing. While
    lost it looks for the query again, since an ALSA device gets a new client number when replugged:
    `on_back` receives the one name the query matches now (an ambiguous query stays lost). A plain
    list of queries is resolved at the first poll. Listing ports is slow on JACK, hence a thread.
    """

    thread_name = "liveduet-portwatch"

    def __init__(
        self,
        list_names: Callable[[], list[str]],
        queries: Iterable[str] | Mapping[str, str],
        on_lost: Callable[[str], None],
        on_back: Callable[[str], None],
        interval: float = 1.5,
        kind: str = "input",
    ) -> None:
        self._list_names = list_names
        self._on_lost = on_lost
        self._on_back = on_back
        self._interval = interval
        self._kind = kind
        # query -> exact name of the port held, None while lost, or _UNRESOLVED. Present at start: the
        # session opened the ports just before starting the watcher.
        self._state: dict[str, object] = (
            dict(queries) if isinstance(queries, Mapping) else dict.fromkeys(queries, _UNRESOLVED)
        )
        self._last: dict[str, str] = {}  # query -> the name it held before it was lost
        Worker.__init__(self)

    def _match(self, query: str, names: list[str]) -> str | None:
        try:
            return match_port(query, names, self._kind)
        except PortNotFoundError:  # absent, or ambiguous: no port to call ours
            return None

    def poll_once(self, names: list[str] | None = None) -> list[tuple[str, str]]:
        """Compare the current port list with the last; fire callbacks; return [(event, name)]."""
        if names is None:
            try:
                names = self._list_names()
            except Exception as err:  # a dead JACK server: every port is gone
                log.warning("listing MIDI ports failed: %s", err)
                names = []
        events: list[tuple[str, str]] = []
        for query, held in list(self._state.items()):
            if held is None:  # lost: is the device back (under its old name, or a new client number)?
                last = self._last.get(query)
                now = last if last in names else self._match(query, names)
                if now is not None:
                    self._state[query] = now
                    events.append(("back", now))
                    self._on_back(now)
                continue
            if held is _UNRESOLVED:
                now = self._match(query, names)
                if now is None and any(query.strip().casefold() in n.casefold() for n in names):
                    continue  # ambiguous before we knew which port is ours: cannot tell
                held = self._state[query] = now or query
            if held not in names:
                self._state[query] = None
                self._last[query] = held
                events.append(("lost", held))
                self._on_lost(held)
        return events

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.poll_once()
            except Exception:  # a callback bug must not end hot-plug detection
                log.exception("port watcher callback failed")
