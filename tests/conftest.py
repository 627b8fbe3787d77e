"""Shared fixtures: a JACK server for tests that need real MIDI ports, and generic helpers."""

from __future__ import annotations

from collections.abc import Iterator

import jack_util
import pytest


@pytest.fixture(scope="session")
def jack_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[jack_util.JackServer]:
    """A running JACK server (dummy driver): reuses one already running, else starts and later stops one."""
    if not jack_util.have_jackd():
        pytest.skip("jackd not installed: apt-get install jackd2")
    if jack_util.jack_running():
        yield jack_util.JackServer()
        return
    log_path = tmp_path_factory.mktemp("jack") / "jackd.log"
    proc = jack_util.start_jackd(log_path)
    try:
        yield jack_util.JackServer(proc, log_path)
    finally:
        jack_util.stop_jackd(proc)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every test that uses the JACK server carries the `jack` marker (`-m "not jack"` skips them).
    for item in items:
        if "jack_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.jack)
