"""Who may talk to the studio: an ASGI middleware in front of every route.

- Host: only the names the server was started for (127.0.0.1, localhost, the --host) pass, so a page
  on another site cannot reach it through DNS rebinding.
- Origin: a websocket or a POST that carries an Origin header must come from the studio's own
  origin: a web page elsewhere cannot drive the user's synth or make the machine generate.
- Fetch metadata: a browser request to the API that says it comes from another site
  (Sec-Fetch-Site: cross-site / same-site) is refused, so an <audio> or <img> elsewhere cannot
  make the studio render or read.
- Token (required off localhost): a `token` query parameter (the URL the studio prints), the
  `X-Liveduet-Token` header, or the cookie the page gets once it was opened with the token.
Refusals are one-line JSON errors (403), never a page.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Iterable
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

COOKIE = "liveduet_token"
HEADER = b"x-liveduet-token"
LOCAL_NAMES = ("127.0.0.1", "localhost", "[::1]")
PUBLIC_PREFIXES = ("/static/",)  # the page's own code and style: nothing private, no token needed
API_PREFIXES = ("/api/", "/ws/")

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


def allowed_hosts(host: str, extra: Iterable[str] = ()) -> set[str]:
    """The host names the studio answers to. Rebinding puts the attacker's name in Host and Origin,
    so the name is what is checked; the port may be any (port 0 picks one at start)."""
    return {*LOCAL_NAMES, host.lower() if ":" not in host else f"[{host.lower()}]", *extra}


def host_name(value: str) -> str:
    """"127.0.0.1:8765" → "127.0.0.1", "[::1]:80" → "[::1]", "localhost" → "localhost"."""
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if ":" in value else value


def origin_host(origin: str) -> str | None:
    """The host name of an Origin header ("http://127.0.0.1:8765" → "127.0.0.1"); None if not http(s)."""
    scheme, sep, rest = origin.partition("://")
    if not sep or scheme not in ("http", "https"):
        return None
    return host_name(rest.split("/", 1)[0])


class Guard:
    """Wraps the app; see the module doc. `token` None: no token asked (localhost only)."""

    def __init__(self, app: ASGIApp, hosts: set[str], token: str | None = None) -> None:
        self.app = app
        self.hosts = hosts
        self.token = token

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        why = self.refusal(scope, headers)
        if why is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await receive()  # the websocket.connect message, then the refusal (an HTTP 403 to the client)
            await send({"type": "websocket.close", "code": 1008, "reason": why})
        else:
            await _json_error(send, 403, why)

    def refusal(self, scope: dict, headers: dict[bytes, bytes]) -> str | None:
        """Why this request is refused, or None."""
        host = headers.get(b"host", b"").decode("latin-1").lower()
        if host_name(host) not in self.hosts:
            return f"host {host!r} is not this studio's"
        origin = headers.get(b"origin")
        checks_origin = scope["type"] == "websocket" or scope.get("method") not in ("GET", "HEAD", "OPTIONS")
        if checks_origin and origin is not None and origin_host(origin.decode("latin-1").lower()) not in self.hosts:
            return f"origin {origin.decode('latin-1')!r} may not use this studio"
        # A page elsewhere may still make the browser GET from here (an <img>, an <audio>): browsers
        # say so (Fetch Metadata), and only the studio's own page may use the API.
        site = headers.get(b"sec-fetch-site", b"").decode("latin-1")
        if site in ("cross-site", "same-site") and scope.get("path", "").startswith(API_PREFIXES):
            return f"a {site} request may not use this studio's API"
        if self.token is None or scope.get("path", "").startswith(PUBLIC_PREFIXES):
            return None
        if any(hmac.compare_digest(given.encode(), self.token.encode()) for given in self._tokens(scope, headers)):
            return None
        return "a token is required: open the URL the studio printed (…/?token=…)"

    @staticmethod
    def _tokens(scope: dict, headers: dict[bytes, bytes]) -> list[str]:
        given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [])
        if HEADER in headers:
            given.append(headers[HEADER].decode("latin-1"))
        if b"cookie" in headers:
            cookie = SimpleCookie()
            try:
                cookie.load(headers[b"cookie"].decode("latin-1"))
            except Exception:  # a malformed cookie header is no token
                return given
            if COOKIE in cookie:
                given.append(cookie[COOKIE].value)
        return given


async def _json_error(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
