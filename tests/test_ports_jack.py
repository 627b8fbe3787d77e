"""Real MIDI ports on a JACK dummy server: opening by name, routing, the ports command, timing."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import mido
import pytest
from jack_util import JackServer, check_delivery, have_jackd, jack_connect

from liveduet.cli import main
from liveduet.clock import MonotonicClock
from liveduet.errors import MidiBackendError, PortNotFoundError
from liveduet.io.ports import PortWatcher, get_backend, list_ports, open_input, open_output, port_names
from liveduet.live.listener import Listener
from liveduet.live.panic import send_paced
from liveduet.live.scheduler import LatenessStats, Scheduler

RECEIVE_TIMEOUT = 5.0
T = TypeVar("T")


def unique(stem: str) -> str:
    # Several sessions may share one JACK server: never collide with another test's ports.
    return f"{stem}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def backend(jack_server: JackServer) -> mido.Backend:
    return get_backend("jack")


@pytest.fixture
def clock() -> MonotonicClock:
    return MonotonicClock()


@contextmanager
def loopback(backend: mido.Backend, clock: MonotonicClock) -> Iterator[tuple[Any, Listener]]:
    """Our virtual output, opened by our input through its substring name: (output port, listener)."""
    name = unique("lt-out")
    listener = Listener(clock, maxsize=10_000)
    out = open_output(backend, name, virtual=True)
    inp = open_input(backend, name, listener.callback)  # "lt-out-…" finds "RtMidiOut Client:lt-out-…"
    try:
        warm_up(out, listener)
        yield out, listener
    finally:
        inp.close()
        out.close()


def warm_up(out: Any, listener: Listener) -> None:
    """Send probes until one arrives (the new connection is live), then discard the probes."""
    probe = mido.Message("control_change", channel=15, control=119, value=0)
    deadline = time.monotonic() + RECEIVE_TIMEOUT
    while listener.get(timeout=0.02) is None:
        assert time.monotonic() < deadline, "the JACK connection never delivered a message"
        out.send(probe)
    while listener.get(timeout=0.05) is not None:
        pass


def receive(listener: Listener, n: int, timeout: float = RECEIVE_TIMEOUT) -> list[tuple[float, mido.Message]]:
    got = []
    while len(got) < n:
        item = listener.get(timeout=timeout)
        if item is None:
            break
        got.append(item)
    return got


def test_virtual_output_is_found_by_substring_and_delivers(
    backend: mido.Backend, clock: MonotonicClock, jack_server: JackServer
) -> None:
    def attempt() -> tuple[list[tuple[str, int]], int]:
        with loopback(backend, clock) as (out, listener):
            out.send(mido.Message("note_on", note=60, velocity=99))
            out.send(mido.Message("clock"))  # dropped at the listener's door
            out.send(mido.Message("note_on", note=60, velocity=0))
            got = receive(listener, 2) + receive(listener, 1, timeout=0.05)
            return [(m.type, m.note, m.velocity) for _, m in got], listener.filtered

    def check(result: tuple[list[tuple[str, int, int]], int]) -> None:
        got, filtered = result
        assert got == [("note_on", 60, 99), ("note_on", 60, 0)]  # as played: thru keeps the bytes
        assert filtered == 1

    check_delivery(jack_server, attempt, check)


def test_jack_connect_routes_between_two_virtual_ports(
    backend: mido.Backend, clock: MonotonicClock, jack_server: JackServer
) -> None:
    def attempt() -> tuple[tuple[str, str], list[mido.Message]]:
        src_name, dst_name = unique("lt-src"), unique("lt-dst")
        listener = Listener(clock)
        out = open_output(backend, src_name, virtual=True)
        inp = open_input(backend, dst_name, listener.callback, virtual=True)
        try:
            inputs, outputs = list_ports(backend)
            src = next(n for n in inputs if n.endswith(":" + src_name))
            dst = next(n for n in outputs if n.endswith(":" + dst_name))
            assert (src, dst) == (f"RtMidiOut Client:{src_name}", f"RtMidiIn Client:{dst_name}")
            jack_connect(src, dst)
            warm_up(out, listener)
            out.send(mido.Message("control_change", channel=3, control=64, value=127))
            return (src, dst), [m for _, m in receive(listener, 1)]
        finally:
            inp.close()
            out.close()

    def check(result: tuple[tuple[str, str], list[mido.Message]]) -> None:
        assert [(m.channel, m.control, m.value) for m in result[1]] == [(3, 64, 127)]

    check_delivery(jack_server, attempt, check)


def test_ports_command_lists_our_port_as_json(backend: mido.Backend, capsys: pytest.CaptureFixture[str]) -> None:
    name = unique("lt-json")
    out = open_output(backend, name, virtual=True)
    try:
        assert main(["ports", "--backend", "jack", "--json", "--input", name]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["backend"] == "jack"
        assert f"RtMidiOut Client:{name}" in doc["inputs"]  # an output of ours is an input to others
        assert doc["resolved"] == {"input": f"RtMidiOut Client:{name}"}
        assert main(["ports", "--backend", "jack"]) == 0
        assert f"  RtMidiOut Client:{name}" in capsys.readouterr().out
    finally:
        out.close()


def test_unknown_port_name_fails_listing_candidates_and_opens_nothing(
    backend: mido.Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    name = unique("lt-cand")
    out = open_output(backend, name, virtual=True)
    try:
        assert main(["ports", "--backend", "jack", "--input", "no-such-keyboard"]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "'no-such-keyboard'" in err and f"'RtMidiOut Client:{name}'" in err
        before = list_ports(backend)
        with pytest.raises(PortNotFoundError):
            open_input(backend, "no-such-keyboard", callback=None)
        with pytest.raises(PortNotFoundError):
            open_output(backend, "no-such-synth")
        assert list_ports(backend) == before  # no virtual port was created on the typo
    finally:
        out.close()


@pytest.mark.skipif(not have_jackd(), reason="jackd not installed: apt-get install jackd2")
def test_no_jack_server_is_a_one_line_backend_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # libjack reads the server name at each client open: point it at a server that does not exist.
    monkeypatch.setenv("JACK_DEFAULT_SERVER", f"nonexistent-{uuid.uuid4().hex[:6]}")
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    with pytest.raises(MidiBackendError, match="start a JACK server") as info:
        open_output(get_backend("jack"), "whatever")
    assert "\n" not in str(info.value)
    assert main(["ports", "--backend", "jack"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "JACK server not running" in err and "jackd" in err


def test_port_watcher_sees_a_port_vanish_and_return(backend: mido.Backend) -> None:
    name = unique("lt-watch")
    events: list[tuple[str, str]] = []
    watcher = PortWatcher(
        lambda: port_names(backend, "input"),
        [name],
        on_lost=lambda n: events.append(("lost", n)),
        on_back=lambda n: events.append(("back", n)),
    )
    out = open_output(backend, name, virtual=True)
    watcher.poll_once()
    out.close()  # "unplug": rtmidi itself reports nothing
    watcher.poll_once()
    out = open_output(backend, name, virtual=True)
    try:
        watcher.poll_once()
    finally:
        out.close()
    full = f"RtMidiOut Client:{name}"
    assert events == [("lost", full), ("back", full)]


def test_scheduler_timing_through_jack(backend: mido.Backend, clock: MonotonicClock, jack_server: JackServer) -> None:
    n = 100
    expected = [40 + i % 40 for i in range(n)]

    def attempt() -> tuple[LatenessStats, list[int], list[float]]:
        with loopback(backend, clock) as (out, listener):
            sched = Scheduler(out.send, clock)
            sched.start()
            try:
                start = clock.now() + 0.05
                for i, note in enumerate(expected):  # 100 notes on a 5 ms grid
                    sched.schedule(start + i * 0.005, mido.Message("note_on", note=note, velocity=64))
                    sched.schedule(start + i * 0.005 + 0.004, mido.Message("note_off", note=note))
                got = receive(listener, 2 * n, timeout=1.0)
            finally:
                assert sched.stop(timeout=5.0)  # before the port closes: a send after close segfaults
        ons = [(t, m.note) for t, m in got if m.type == "note_on"]
        arrival = [t - (start + i * 0.005) for i, (t, _) in enumerate(ons)]
        return sched.lateness_stats(), [note for _, note in ons], arrival

    def check(result: tuple[LatenessStats, list[int], list[float]]) -> None:
        stats, notes, _ = result
        assert stats.count == 2 * n
        # Lenient bound for a shared 2-core machine; measured p99 well under 1 ms when idle.
        assert stats.p99 < 0.010, stats
        assert notes == expected

    results: list[tuple[LatenessStats, list[int], list[float]]] = []
    check_delivery(jack_server, lambda: results.append(attempt()) or results[-1], check)
    stats, _, arrival = results[-1]
    print(
        f"\nscheduler lateness p50 {stats.p50 * 1e3:.3f} ms, p99 {stats.p99 * 1e3:.3f} ms, "
        f"max {stats.max * 1e3:.3f} ms; arrival after due p50 {sorted(arrival)[n // 2] * 1e3:.2f} ms, "
        f"max {max(arrival) * 1e3:.2f} ms"
    )


def test_paced_panic_arrives_complete_through_jack(
    backend: mido.Backend, clock: MonotonicClock, jack_server: JackServer
) -> None:
    held = [mido.Message("note_on", channel=ch, note=n, velocity=50) for ch in range(16) for n in range(36, 68)]

    def attempt() -> tuple[int, list[mido.Message]]:
        with loopback(backend, clock) as (out, listener):
            sched = Scheduler(out.send, clock)
            try:
                send_paced(sched.send_now, held, clock)  # 512 held notes, themselves paced
                receive(listener, len(held))
                sent = sched.panic()
                got = receive(listener, sent) + receive(listener, 1, timeout=0.05)
            finally:
                sched.stop(timeout=1.0)
        return sent, [m for _, m in got]

    def check(result: tuple[int, list[mido.Message]]) -> None:
        sent, got = result
        assert sent == 512 + 16 * 3
        # Unpaced, JACK drops and repeats messages in bursts this size; paced, every one arrives once.
        assert len(got) == sent
        assert sorted((m.channel, m.note) for m in got if m.type == "note_off") == sorted(
            (m.channel, m.note) for m in held
        )
        assert [(m.channel, m.control) for m in got if m.type == "control_change"] == [
            (ch, cc) for ch in range(16) for cc in (64, 123, 120)
        ]

    check_delivery(jack_server, attempt, check)


def test_port_lister_keeps_one_client_and_sees_ports_come_and_go(backend: mido.Backend) -> None:
    from liveduet.io.ports import PortLister

    lister = PortLister(backend)
    try:
        port = backend.open_output(f"lister-{os.getpid()}", virtual=True)
        assert any(n.endswith(f":lister-{os.getpid()}") for n in lister.names("input"))
        port.close()
        deadline = time.monotonic() + 2
        while any(n.endswith(f":lister-{os.getpid()}") for n in lister.names("input")):
            assert time.monotonic() < deadline, "a closed port vanishes from the listing"
            time.sleep(0.05)
    finally:
        lister.close()
