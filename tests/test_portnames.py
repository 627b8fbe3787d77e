"""Port-name matching and hot-plug detection, with plain strings (no MIDI backend)."""

from __future__ import annotations

import pytest

from liveduet.errors import MidiBackendError, PortNotFoundError
from liveduet.io.portnames import match_port, short_names
from liveduet.io.ports import PortWatcher, get_backend

JACK = ["RtMidiOut Client:Keyboard", "RtMidiOut Client:Drum Pad", "a2j:Midi Through [14] (capture)"]
ALSA = ["Midi Through:Midi Through Port-0 14:0", "Keyboard:Keyboard MIDI 1 20:0", "Keyboard:Keyboard MIDI 2 20:1"]


@pytest.mark.parametrize(
    ("query", "names", "expected"),
    [
        ("RtMidiOut Client:Keyboard", JACK, "RtMidiOut Client:Keyboard"),  # exact
        ("Keyboard", JACK, "RtMidiOut Client:Keyboard"),  # port part
        ("keyboard", JACK, "RtMidiOut Client:Keyboard"),  # case-insensitive
        ("drum", JACK, "RtMidiOut Client:Drum Pad"),  # substring
        ("MIDI 1", ALSA, "Keyboard:Keyboard MIDI 1 20:0"),
        ("keyboard midi 2", ALSA, "Keyboard:Keyboard MIDI 2 20:1"),  # ALSA numbers not needed
        ("through", ALSA, "Midi Through:Midi Through Port-0 14:0"),
    ],
)
def test_match_port_finds_the_one_meant(query: str, names: list[str], expected: str) -> None:
    assert match_port(query, names, "input") == expected


def test_exact_name_wins_over_substring_matches() -> None:
    names = ["Synth", "Synth 2", "Big Synth"]
    assert match_port("Synth", names, "output") == "Synth"


def test_short_name_tier_breaks_a_substring_tie() -> None:
    # "Keyboard" is a substring of both, but only one has a port part that is exactly "Keyboard".
    names = ["RtMidiOut Client:Keyboard", "RtMidiOut Client:Keyboard Extra"]
    assert match_port("keyboard", names, "input") == "RtMidiOut Client:Keyboard"


def test_short_names_strip_alsa_client_numbers() -> None:
    assert short_names("Keyboard:Keyboard MIDI 1 20:0") == {"keyboard", "keyboard midi 1"}
    assert short_names("RtMidiOut Client:Keyboard") == {"rtmidiout client", "keyboard"}


def test_ambiguous_query_lists_the_candidates_on_one_line() -> None:
    with pytest.raises(PortNotFoundError) as info:
        match_port("Keyboard", ALSA, "input")
    text = str(info.value)
    assert "ambiguous" in text and "\n" not in text
    assert "'Keyboard:Keyboard MIDI 1 20:0'" in text and "'Keyboard:Keyboard MIDI 2 20:1'" in text


def test_no_match_lists_what_is_available() -> None:
    with pytest.raises(PortNotFoundError) as info:
        match_port("Keybaord", JACK, "output")
    text = str(info.value)
    assert "'Keybaord'" in text and "\n" not in text
    assert all(repr(n) in text for n in JACK)


def test_no_ports_at_all_says_so() -> None:
    with pytest.raises(PortNotFoundError, match="no MIDI input ports"):
        match_port("Keyboard", [], "input")


def test_empty_query_is_refused_even_with_one_port() -> None:
    with pytest.raises(PortNotFoundError, match="empty"):
        match_port("  ", ["Only"], "input")


def test_duplicate_listing_is_not_ambiguous() -> None:
    assert match_port("pad", ["X:Pad", "X:Pad"], "input") == "X:Pad"


def test_unknown_backend_name_is_a_backend_error() -> None:
    with pytest.raises(MidiBackendError, match="alsa, jack"):
        get_backend("coreaudio")


def test_bad_mido_backend_env_is_a_backend_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIDO_BACKEND", "no.such.backend")
    with pytest.raises(MidiBackendError, match="cannot load"):
        get_backend(None)


class TestPortWatcher:
    def make(self, queries: list[str]) -> tuple[PortWatcher, list[tuple[str, str]]]:
        seen: list[tuple[str, str]] = []
        watcher = PortWatcher(
            list_names=lambda: [],
            queries=queries,
            on_lost=lambda n: seen.append(("lost", n)),
            on_back=lambda n: seen.append(("back", n)),
        )
        return watcher, seen

    def test_reports_loss_and_return_once_each(self) -> None:
        watcher, seen = self.make(["Keyboard"])
        watcher.poll_once(ALSA[:2])  # present: nothing to report
        watcher.poll_once(ALSA[:1])  # unplugged
        watcher.poll_once(ALSA[:1])  # still gone: no repeat
        watcher.poll_once(["Keyboard:Keyboard MIDI 1 24:0"])  # replugged with a new client number
        assert seen == [("lost", "Keyboard:Keyboard MIDI 1 20:0"), ("back", "Keyboard:Keyboard MIDI 1 24:0")]

    def test_listing_failure_counts_as_everything_lost(self) -> None:
        def broken() -> list[str]:
            raise OSError("JACK server died")

        seen: list[tuple[str, str]] = []
        watcher = PortWatcher(broken, ["Pad"], lambda n: seen.append(("lost", n)), lambda n: None)
        watcher.poll_once(["X:Pad"])
        assert watcher.poll_once() == [("lost", "X:Pad")]

    def test_lifecycle_without_starting_and_after_stop(self) -> None:
        watcher, _ = self.make(["Keyboard"])
        assert watcher.stop(timeout=1.0)  # never started: nothing to join
        watcher2, _ = self.make(["Keyboard"])
        watcher2.start()
        assert watcher2.stop(timeout=2.0)
        with pytest.raises(RuntimeError):
            watcher2.start()
