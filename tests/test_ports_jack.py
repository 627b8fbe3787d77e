"""Real MIDI ports on a JACK dummy server: opening by name, routing, the ports command, timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import mido
import pytest
from jack_util import have_jackd, jack_connect

from liveduet.cli import main
from liveduet.errors import MidiBackendError, PortNotFoundError
from liveduet.io.ports import PortWatcher, get_backend, list_ports, open_input, open_output, port_names
from liveduet.live.clock import MonotonicClock
from liveduet.live.listener import Listener
from liveduet.live.panic import send_paced
from liveduet.live.scheduler import Scheduler

RECEIVE_TIMEOUT = 5.0


def unique(stem: str) -> str:
    # Several sessions may share one JACK server: never collide with another test's ports.
    return f"{stem}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def backend(jack_server: None) -> mido.Backend:
    return get_backend("jack")


@pytest.fixture
def clock() -> MonotonicClock:
    return MonotonicClock()


@pytest.fixture
def loop(backend: mido.Backend, clock: MonotonicClock) -> Iterator[tuple[object, Listener]]:
    """Our virtual output wired by JACK to our own input: (output port, listener of the input)."""
    name = unique("lt-out")
    listener = Listener(clock, maxsize=10_000)
    out = open_output(backend, name, virtual=True)
    inp = open_input(backend, name, listener.callback)  # found by substring of "RtMidiOut Client:<name>"
    try:
        yield out, listener
    finally:
        inp.close()
        out.close()


def receive(listener: Listener, n: int) -> list[tuple[float, mido.Message]]:
    got = []
    while len(got) < n:
        item = listener.get(timeout=RECEIVE_TIMEOUT)
        if item is None:
            break
        got.append(item)
    return got


def test_virtual_output_is_found_by_substring_and_delivers(loop: tuple[object, Listener]) -> None:
    out, listener = loop
    out.send(mido.Message("note_on", note=60, velocity=99))
    out.send(mido.Message("clock"))  # dropped at the listener's door
    out.send(mido.Message("note_on", note=60, velocity=0))
    got = receive(listener, 2)
    assert [(m.type, m.note) for _, m in got] == [("note_on", 60), ("note_off", 60)]
    assert listener.filtered == 1


def test_jack_connect_routes_between_two_virtual_ports(backend: mido.Backend, clock: MonotonicClock) -> None:
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
        out.send(mido.Message("control_change", channel=3, control=64, value=127))
        [(_, msg)] = receive(listener, 1)
        assert (msg.channel, msg.control, msg.value) == (3, 64, 127)
    finally:
        inp.close()
        out.close()


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
def test_no_jack_server_is_a_one_line_backend_error() -> None:
    env = {**os.environ, "JACK_DEFAULT_SERVER": f"nonexistent-{uuid.uuid4().hex[:6]}", "JACK_NO_START_SERVER": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "liveduet", "ports", "--backend", "jack"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    ours = [line for line in done.stderr.splitlines() if line.startswith("liveduet ports:")]
    assert len(ours) == 1 and "JACK server not running" in ours[0] and "jackd" in ours[0]
    assert "Traceback" not in done.stderr


def test_backend_error_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JACK_DEFAULT_SERVER", f"nonexistent-{uuid.uuid4().hex[:6]}")
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    with pytest.raises(MidiBackendError, match="start a JACK server") as info:
        open_output(get_backend("jack"), "whatever")
    assert "\n" not in str(info.value)


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


def test_scheduler_timing_through_jack(loop: tuple[object, Listener], clock: MonotonicClock) -> None:
    out, listener = loop
    sched = Scheduler(out.send, clock)
    sched.start()
    start = clock.now() + 0.05
    n = 100
    for i in range(n):  # 100 notes on a 5 ms grid
        sched.schedule(start + i * 0.005, mido.Message("note_on", note=40 + i % 40, velocity=64))
        sched.schedule(start + i * 0.005 + 0.004, mido.Message("note_off", note=40 + i % 40))
    got = receive(listener, 2 * n)
    assert sched.stop(timeout=5.0)
    stats = sched.lateness_stats()
    assert len(got) == 2 * n and stats.count == 2 * n
    assert [m.note for _, m in got if m.type == "note_on"] == [40 + i % 40 for i in range(n)]
    # Lenient bound for a shared 2-core machine; typical p99 is well under 1 ms.
    assert stats.p99 < 0.010, stats
    arrival = [t - (start + i * 0.005) for i, (t, m) in enumerate(x for x in got if x[1].type == "note_on")]
    print(
        f"\nscheduler lateness: {stats}; arrival after due: p50 {sorted(arrival)[n // 2] * 1e3:.2f} ms, "
        f"max {max(arrival) * 1e3:.2f} ms"
    )


def test_paced_panic_arrives_complete_through_jack(loop: tuple[object, Listener], clock: MonotonicClock) -> None:
    out, listener = loop
    sched = Scheduler(out.send, clock)
    notes = [mido.Message("note_on", channel=ch, note=n, velocity=50) for ch in range(16) for n in range(36, 68)]
    send_paced(sched.send_now, notes, clock)  # 512 held notes, themselves paced
    assert len(receive(listener, len(notes))) == len(notes)
    sent = sched.panic()
    assert sent == 512 + 16 * 3
    got = receive(listener, sent)
    assert len(got) == sent  # unpaced, JACK drops and duplicates messages in bursts this size
    assert [m.type for _, m in got].count("note_off") == 512
    assert sched.stop(timeout=1.0)
