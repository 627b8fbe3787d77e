"""The studio's web app (Starlette): routes only; what they serve comes injected.

    create_app(Studio(live=session?, recordings=DIR, models={name: DIR}, ...))

- Live (`/ws/live`, when a session is given): frames from web/live.py at ≤ 10 Hz as diffs; control
  messages back as JSON → `commands.from_json` → `session.send`: the one command bus the MIDI
  controls and the terminal keys use.
- Sessions (`/api/sessions…`): the recordings folder by id (web/library.py): notes, .mid, audio
  (fluidsynth, cached), MusicXML (music21), SVG (LilyPond when installed).
- Generate (`/api/models`, `/api/primers`, `/api/generate`, `/api/vary`, `/api/morph`, `/api/results…`,
  when models are given): web/generation.py over `liveduet generate`'s core, web/variations.py over
  `liveduet vary` / `morph`'s.
Every refusal or failure is a JSON `{"error": "..."}` with a 4xx (5xx only for a bug), never a
traceback page; web/guard.py checks host, origin and token before any route runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from liveduet.errors import ConfigError, LiveduetError, MidiFileError
from liveduet.live import commands
from liveduet.web import library
from liveduet.web.generation import MAX_UPLOAD_BYTES, Generator, parse_request
from liveduet.web.guard import COOKIE, Guard, allowed_hosts
from liveduet.web.live import HZ, LiveFeed
from liveduet.web.media import Media, MediaError
from liveduet.web.variations import PhraseLab, parse_morph, parse_vary

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
MEDIA_TYPES = {"audio": ("audio/wav", ".wav"), "musicxml": ("application/vnd.recordare.musicxml+xml", ".musicxml"),
               "svg": ("image/svg+xml", ".svg"), "midi": ("audio/midi", ".mid")}


@dataclass
class Studio:
    """What the app serves (injected: tests pass fakes)."""

    live: Any = None  # a running Session (snapshot(), send(cmd), scheduler, settings, clock), or None
    recordings: Path = Path(".")
    models: dict[str, Path] = field(default_factory=dict)  # empty: no Generate tab
    host: str = "127.0.0.1"  # the name the guard lets in besides the loopback ones
    token: str | None = None
    extra_hosts: tuple[str, ...] = ()  # e.g. "testserver" for the ASGI test client
    media: Media | None = None
    modes: tuple[str, ...] = commands.MODES
    harmony: Any = None  # a shared HarmonyCache (with a music21 worker process) for the live pages


def create_app(studio: Studio) -> Guard:
    """The ASGI app for `studio`, wrapped in its guard."""
    media = studio.media or Media()
    generator = Generator(studio.models, studio.recordings) if studio.models else None
    lab = PhraseLab(generator) if generator is not None else None

    async def index(request: Request) -> Response:
        response = FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})
        if studio.token is not None:
            response.set_cookie(COOKIE, studio.token, httponly=True, samesite="strict")
        return response

    async def info(request: Request) -> Response:
        return JSONResponse({
            "live": studio.live is not None, "generate": generator is not None, "modes": list(studio.modes),
            "temperature_range": commands.TEMPERATURE_RANGE, "length_range": commands.LENGTH_RANGE,
            "variation_range": commands.VARIATION_RANGE, "complexity_range": commands.COMPLEXITY_RANGE,
            "fluidsynth": shutil.which("fluidsynth") is not None,
            "lilypond": shutil.which("lilypond") is not None and shutil.which("musicxml2ly") is not None,
            "upload_limit": MAX_UPLOAD_BYTES,
        })

    # ---- sessions ---------------------------------------------------------------------------------

    async def sessions(request: Request) -> Response:
        recs = await run_in_threadpool(library.list_recordings, studio.recordings)
        return JSONResponse({"folder": str(studio.recordings.resolve()),
                             "sessions": await run_in_threadpool(lambda: [library.describe(r) for r in recs.values()])})

    def _recording(request: Request) -> library.Recording:
        return library.find_recording(studio.recordings, request.path_params["rid"])

    async def session(request: Request) -> Response:
        rec = _recording(request)
        notes, seconds = await run_in_threadpool(library.track_notes, rec.path)
        calls, answers = library.phrases(notes)
        return JSONResponse({"id": rec.id, "seconds": round(seconds, 3), "notes": notes, "calls": calls,
                             "answers": answers, "parts": ["player", "liveduet"]})

    async def session_media(request: Request) -> Response:
        rec = _recording(request)
        data = await run_in_threadpool(rec.path.read_bytes)
        notes, _ = await run_in_threadpool(library.track_notes, rec.path)  # the capped reader first
        return await _media(request.path_params["kind"], data, len(notes), rec.id)

    async def _media(kind: str, data: bytes, notes: int, name: str) -> Response:
        if kind not in MEDIA_TYPES:
            raise HTTPException(404, f"no {kind!r}: one of {', '.join(MEDIA_TYPES)}")
        media_type, suffix = MEDIA_TYPES[kind]
        if kind == "midi":
            return Response(data, media_type=media_type,
                            headers={"content-disposition": f'attachment; filename="{name}{suffix}"'})
        make = {"audio": lambda: media.audio(data), "musicxml": lambda: media.musicxml(data, notes),
                "svg": lambda: media.svg(data, notes)}[kind]
        path = await run_in_threadpool(make)
        disposition = "attachment" if kind == "musicxml" else "inline"
        return FileResponse(path, media_type=media_type, filename=f"{name}{suffix}",
                            content_disposition_type=disposition)

    # ---- generate ---------------------------------------------------------------------------------

    def _generator() -> Generator:
        if generator is None:
            raise HTTPException(404, "generation is off here (liveduet studio serves it, not run --web)")
        return generator

    async def models(request: Request) -> Response:
        families = await run_in_threadpool(lambda: {n: library.family_of(p) for n, p in studio.models.items()})
        return JSONResponse({"models": sorted(studio.models), "families": families})

    async def primers(request: Request) -> Response:
        gen = _generator()
        data = await _capped_body(request, MAX_UPLOAD_BYTES)
        return JSONResponse(await run_in_threadpool(gen.add_primer, data))

    async def _json(request: Request) -> object:
        _generator()
        body = await _capped_body(request, 16 * 1024)
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as err:
            raise ConfigError(f"the request is not JSON: {err}") from err

    async def generate(request: Request) -> Response:
        req = parse_request(await _json(request))
        return JSONResponse(await run_in_threadpool(_generator().generate, req))

    async def vary(request: Request) -> Response:
        req = parse_vary(await _json(request))
        assert lab is not None  # _json checked that generation is on
        return JSONResponse(await run_in_threadpool(lab.vary, req))

    async def morph(request: Request) -> Response:
        req = parse_morph(await _json(request))
        assert lab is not None
        return JSONResponse(await run_in_threadpool(lab.morph, req))

    async def result_media(request: Request) -> Response:
        result = _generator().result(request.path_params["gid"])
        return await _media(request.path_params["kind"], result["midi"], len(result["notes"]),
                            f"liveduet-{request.path_params['gid']}")

    # ---- live ---------------------------------------------------------------------------------------

    async def live_ws(ws: WebSocket) -> None:
        session = studio.live
        await ws.accept()
        if session is None:
            await ws.send_json({"live": False})
            await ws.close(1000)
            return
        feed = LiveFeed(session, studio.harmony, studio.modes)

        async def push() -> None:
            while True:
                await ws.send_json(feed.update())
                await asyncio.sleep(1 / HZ)

        pusher = asyncio.create_task(push())
        try:
            while True:
                text = await ws.receive_text()
                try:
                    cmd = commands.from_json(json.loads(text), studio.modes)
                except ValueError:
                    await ws.send_json({"error": "a command is one JSON object"})
                    continue
                except commands.CommandError as err:
                    await ws.send_json({"error": str(err)})
                    continue
                said = await run_in_threadpool(session.send, cmd)  # Record opens or finishes a file
                await ws.send_json({"ack": type(cmd).__name__, "said": said})
        except WebSocketDisconnect:
            pass
        except LiveduetError as err:  # a recording could not start (a full disk): say it, end this page's link
            with contextlib.suppress(Exception):
                await ws.send_json({"error": str(err)})
                await ws.close(1011)
        finally:
            pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pusher

    routes = [
        Route("/", index),
        Route("/api/info", info),
        Route("/api/sessions", sessions),
        Route("/api/sessions/{rid}", session),
        Route("/api/sessions/{rid}/{kind}", session_media),
        Route("/api/models", models),
        Route("/api/primers", primers, methods=["POST"]),
        Route("/api/generate", generate, methods=["POST"]),
        Route("/api/vary", vary, methods=["POST"]),
        Route("/api/morph", morph, methods=["POST"]),
        Route("/api/results/{gid}/{kind}", result_media),
        WebSocketRoute("/ws/live", live_ws),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={LiveduetError: _error, HTTPException: _error, Exception: _error})
    app.state.media, app.state.generator = media, generator
    return Guard(app, allowed_hosts(studio.host, studio.extra_hosts), studio.token)


async def _capped_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) once it passes `limit` bytes, whatever Content-Length claims."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"{declared} bytes is over the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _status(err: Exception) -> int:
    if isinstance(err, HTTPException):
        return err.status_code
    if isinstance(err, library.NotFoundError):
        return 404
    if isinstance(err, MediaError):
        return 503 if err.missing_tool else 422
    if isinstance(err, ConfigError | MidiFileError | commands.CommandError):
        return 400 if isinstance(err, ConfigError) else 422
    if isinstance(err, LiveduetError):
        return 400
    return 500


async def _error(request: Request, err: Exception) -> Response:
    status = _status(err)
    if status >= 500 and not isinstance(err, HTTPException | MediaError):
        log.exception("studio: %s %s", request.method, request.url.path, exc_info=err)
        message = f"internal error ({type(err).__name__}); the studio's log has the details"
    else:
        message = str(err.detail) if isinstance(err, HTTPException) else str(err)
    return JSONResponse({"error": message}, status_code=status)
