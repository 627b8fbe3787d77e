"""The studio's HTTP server: uvicorn on its own thread and event loop, so the engine never waits on it.

`WebServer.start()` binds the socket first (a port in use, or a host that is not ours, is one line:
StudioError), then serves on a daemon thread; `stop()` asks uvicorn to finish and joins. As a duet
view (`liveduet run --web`) it has the dashboard's lifecycle (start/stop), made from the session.

Binding anywhere but the loopback needs a token (`check_exposure`): the page can drive the synth and
read the recordings, so on a network it must not be open to whoever finds the port.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import socket
import threading
import time
from typing import Any

from liveduet.errors import LiveduetError

DEFAULT_PORT = 8765
START_TIMEOUT_S = 10.0


class StudioError(LiveduetError):
    """The studio cannot start as asked (a port in use, an exposed host without a token)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None, flags: tuple[str, str] = ("--host", "--token")) -> None:
    """Refuse a non-loopback host without a token, in one line naming the command's own `flags`."""
    if not is_loopback(host) and not token:
        h, t = flags
        raise StudioError(f"{h} {host} exposes the studio beyond this machine: add {t} SECRET "
                          f"(e.g. {t} {secrets.token_urlsafe(12)}), or leave {h} at 127.0.0.1")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one); StudioError in one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(64)
    except OSError as err:
        sock.close()
        raise StudioError(f"cannot listen on {host}:{port}: {err.strerror or err}") from err
    sock.set_inheritable(True)
    return sock


class WebServer:
    """Serves an ASGI app on a thread; see the module doc."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = DEFAULT_PORT, token: str | None = None) -> None:
        self.app, self.host, self.port, self.token = app, host, port, token
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def start(self) -> None:
        import uvicorn

        check_exposure(self.host, self.token)
        self._sock = bind(self.host, self.port)
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, ws="websockets-sansio",
                                lifespan="off", ws_ping_interval=None)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="liveduet-web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise StudioError(f"the web server did not start on {self.host}:{self.port}")
            time.sleep(0.02)

    def stop(self, timeout: float = 3.0) -> None:
        server, thread = self._server, self._thread
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                server.force_exit = True
                thread.join(timeout)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._server = self._thread = None


def quiet_uvicorn() -> None:
    """uvicorn's own error lines would land in the dashboard's log: only warnings and worse."""
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
