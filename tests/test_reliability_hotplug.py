"""Hot-plug watches the connection it holds, not a name (issue #8, defect 7): a MIDI file as input
has no port to watch, and another client's port of a similar name is not our port going away."""

from __future__ import annotations

import argparse
import uuid
from types import SimpleNamespace

import pytest

from liveduet.io.ports import PortWatcher, get_backend, open_input, open_output, port_names
from liveduet.live.duet import watched_ports

OURS = "RtMidiOut Client:Keyboard"


def watcher(held: dict[str, str] | list[str]) -> tuple[PortWatcher, list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []
    w = PortWatcher(lambda: [], held, on_lost=lambda n: seen.append(("lost", n)),
                    on_back=lambda n: seen.append(("back", n)))
    return w, seen


def args(inp: str, out: str | None, virtual: bool = False) -> argparse.Namespace:
    return argparse.Namespace(inp=inp, out=out, virtual=virtual)


def test_a_file_input_has_no_port_to_watch() -> None:
    synth = SimpleNamespace(name="FLUID Synth (123):Synth input port (123:0)")
    assert watched_ports(args("take.mid", "Synth"), None, synth) == [("output", "Synth", synth)]
    assert watched_ports(args("take.mid", None), None, None) == []


def test_ports_are_watched_by_the_name_they_were_opened_as() -> None:
    kb, synth = SimpleNamespace(name=OURS), SimpleNamespace(name="FLUID Synth:in")
    assert watched_ports(args("Keyboard", "Synth"), kb, synth) == [("input", "Keyboard", kb),
                                                                   ("output", "Synth", synth)]
    assert watched_ports(args("liveduet-in", "liveduet-out", virtual=True), kb, synth) == []  # our own ports


def test_another_port_of_the_same_name_is_not_a_loss() -> None:
    w, seen = watcher({"Keyboard": OURS})
    assert w.poll_once([OURS]) == []
    assert w.poll_once([OURS, "Other:Keyboard"]) == []  # "Keyboard" is ambiguous now: still ours
    assert w.poll_once(["Other:Keyboard"]) == [("lost", OURS)]  # ours went away
    assert w.poll_once(["Other:Keyboard", "RtMidiOut Client-01:Keyboard"]) == []  # which one? neither
    assert w.poll_once([OURS, "Other:Keyboard"]) == [("back", OURS)]  # the very port again
    assert seen == [("lost", OURS), ("back", OURS)]


def test_a_replugged_device_with_a_new_client_number_comes_back() -> None:
    old, new = "Keyboard:Keyboard MIDI 1 20:0", "Keyboard:Keyboard MIDI 1 24:0"
    w, seen = watcher({"Keyboard": old})
    w.poll_once([])
    w.poll_once([new])
    assert seen == [("lost", old), ("back", new)]


def test_a_plain_query_is_resolved_once_and_ambiguity_at_start_reports_nothing() -> None:
    w, seen = watcher(["Keyboard"])
    assert w.poll_once([OURS, "Other:Keyboard"]) == []  # cannot tell which is ours: no false alarm
    assert w.poll_once([OURS]) == []  # resolved now
    assert w.poll_once([OURS, "Other:Keyboard"]) == []
    assert w.poll_once(["Other:Keyboard"]) == [("lost", OURS)]


def test_on_jack_a_second_client_opening_our_ports_name_changes_nothing(jack_server) -> None:
    backend = get_backend("jack")
    name = f"kb-{uuid.uuid4().hex[:6]}"
    keyboard = open_output(backend, name, virtual=True)
    inp = open_input(backend, name, lambda msg: None)
    seen: list[tuple[str, str]] = []
    w = PortWatcher(lambda: port_names(backend, "input"), {name: inp.name},
                    on_lost=lambda n: seen.append(("lost", n)), on_back=lambda n: seen.append(("back", n)))
    other = None
    try:
        w.poll_once()
        other = open_output(backend, name, virtual=True)  # another client, a port of the same name
        names = port_names(backend, "input")
        if sum(n.endswith(f":{name}") for n in names) < 2:
            pytest.skip(f"JACK did not list two ports named {name}: {names}")
        w.poll_once()
        assert seen == []
        keyboard.close()
        w.poll_once()
        assert seen == [("lost", inp.name)]
    finally:
        inp.close()
        if other is not None:
            other.close()
        if not keyboard.closed:
            keyboard.close()


