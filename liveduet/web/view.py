"""`liveduet run --web [PORT]`: the live page of a running session, as a duet view beside the dashboard.

Made from the session and the duet's stop event like the dashboard; `start()` serves, `stop()` ends
the server (a producer of commands: the duet stops it before the session, see live/duet.py).
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from liveduet.web.server import DEFAULT_PORT, WebServer


class LiveView:
    """Serves the studio (Live and Sessions; no Generate: sampling would compete with the engine)."""

    def __init__(self, session: Any, stop_event: threading.Event, port: int = DEFAULT_PORT,
                 host: str = "127.0.0.1", token: str | None = None, recordings: Path = Path(".")) -> None:
        self.session, self.stop_event = session, stop_event
        self.port, self.host, self.token, self.recordings = port, host, token, recordings
        self.server: WebServer | None = None
        self._executor: ProcessPoolExecutor | None = None

    def start(self) -> None:
        from liveduet.ui.harmony import HarmonyCache, import_music21
        from liveduet.web.app import Studio, create_app

        # Key and chord by music21 in a worker process, as the dashboard does: never on a daemon thread.
        self._executor = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), initializer=import_music21)
        studio = Studio(live=self.session, recordings=self.recordings, host=self.host, token=self.token,
                        harmony=HarmonyCache(executor=self._executor))
        self.server = WebServer(create_app(studio), self.host, self.port, self.token)
        try:
            self.server.start()
        except BaseException:
            self._executor.shutdown(wait=False, cancel_futures=True)
            raise
        self.session.log(f"live page: {self.server.url}")

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def live_view(port: int, host: str = "127.0.0.1", token: str | None = None, recordings: Path = Path(".")):
    """A view maker for the Duet: (session, stop_event) → LiveView."""
    return lambda session, stop_event: LiveView(session, stop_event, port, host, token, recordings)
