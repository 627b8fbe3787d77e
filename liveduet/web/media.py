"""Audio and scores of a MIDI file for the studio, cached by content: WAV by fluidsynth (the `render`
command's own path), MusicXML by music21, SVG by LilyPond when it is installed.

music21 can hang for minutes on a hostile file (see NOTES) and is pure Python (it would hold the GIL
of a process that may be playing a duet): it runs in one worker process, with a timeout. LilyPond and
fluidsynth run as processes with argument lists (never a shell) and timeouts.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from liveduet.errors import LiveduetError

SCORE_TIMEOUT_S = 60.0
LILYPOND_TIMEOUT_S = 120.0
MAX_SCORE_NOTES = 4000  # a score of more is unreadable anyway, and music21 takes minutes over it


class MediaError(LiveduetError):
    """Audio or a score could not be made (a 503 when a tool is missing, else a 422)."""

    def __init__(self, message: str, missing_tool: bool = False) -> None:
        super().__init__(message)
        self.missing_tool = missing_tool


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "liveduet" / "studio"


def _to_musicxml(midi_path: str, out_path: str) -> None:
    """In the worker process: a MIDI file (one part per track) → MusicXML."""
    from music21 import converter

    score = converter.parse(midi_path, quantizePost=True)
    score.write("musicxml", fp=out_path)


class Media:
    """Makes and caches the WAV, MusicXML and SVG of MIDI bytes; every method returns a file path."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir or default_cache_dir()
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def _path(self, data: bytes, suffix: str) -> Path:
        return self.cache_dir / f"{hashlib.sha256(data).hexdigest()[:32]}{suffix}"

    def _source(self, data: bytes) -> Path:
        path = self._path(data, ".mid")
        if not path.exists():
            from liveduet.fsutil import write_atomic

            self.cache_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(path, data)
        return path

    def audio(self, data: bytes) -> Path:
        """The WAV of a MIDI file (fluidsynth, General MIDI soundfont); rendered once, then cached."""
        from liveduet.commands.render import render_wav

        out = self._path(data, ".wav")
        with self._lock:  # one render at a time: two clicks on "play" render once
            if not out.exists():
                try:
                    render_wav(self._source(data), out)
                except LiveduetError as err:
                    raise MediaError(str(err), missing_tool="not found" in str(err)) from err
        return out

    def musicxml(self, data: bytes, notes: int) -> Path:
        """The MusicXML score (music21, in a worker process with a timeout)."""
        if notes > MAX_SCORE_NOTES:
            raise MediaError(f"{notes} notes: over the score cap of {MAX_SCORE_NOTES}; download the .mid instead")
        out = self._path(data, ".musicxml")
        if out.exists():
            return out
        src = self._source(data)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"))
            future = self._pool.submit(_to_musicxml, str(src), str(tmp))
            try:
                future.result(timeout=SCORE_TIMEOUT_S)
            except FutureTimeout as err:
                self._kill_pool()
                raise MediaError(f"music21 took more than {SCORE_TIMEOUT_S:.0f} s over this file") from err
            except Exception as err:  # music21 raises assorted errors on odd input: one line
                tmp.unlink(missing_ok=True)
                raise MediaError(f"music21 could not make a score: {type(err).__name__}: {err}") from err
        os.replace(tmp, out)
        return out

    def svg(self, data: bytes, notes: int) -> Path:
        """The first page of the score as SVG by LilyPond (musicxml2ly, then lilypond); MediaError with
        missing_tool when LilyPond is not installed (the page then offers the MusicXML)."""
        ly, lily = shutil.which("musicxml2ly"), shutil.which("lilypond")
        if not ly or not lily:
            raise MediaError("LilyPond is not installed (apt-get install lilypond): download the MusicXML",
                             missing_tool=True)
        out = self._path(data, ".svg")
        if out.exists():
            return out
        xml = self.musicxml(data, notes)
        with tempfile.TemporaryDirectory(dir=self.cache_dir) as tmp:
            try:
                subprocess.run([ly, "--output", f"{tmp}/score.ly", str(xml)], capture_output=True, check=True,
                               timeout=LILYPOND_TIMEOUT_S, stdin=subprocess.DEVNULL)
                subprocess.run([lily, "-dbackend=svg", "-dno-point-and-click", "--output", f"{tmp}/score",
                                f"{tmp}/score.ly"], capture_output=True, check=True, timeout=LILYPOND_TIMEOUT_S,
                               stdin=subprocess.DEVNULL, cwd=tmp)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
                raise MediaError(f"LilyPond failed: {type(err).__name__}") from err
            pages = sorted(Path(tmp).glob("score*.svg"))
            if not pages:
                raise MediaError("LilyPond wrote no SVG")
            os.replace(pages[0], out)
        return out

    def _kill_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.kill()  # a hung music21 never returns: shutdown(wait) alone would wait forever
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
