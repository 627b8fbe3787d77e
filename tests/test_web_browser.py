"""The studio in a real browser (Debian's chromium through chromedriver, no browser download), beside a
real duet: `liveduet run --in FILE.mid --out SYNTH --web PORT` on a JACK dummy server. The live
page's piano roll fills, WebAudio plays the answers and (second toggle) the player's notes, its
panic button reaches the synth as all-notes-off, a recording opens with its audio loaded; the
Generate tab generates, and varies an uploaded primer with the shipped VAE. Screenshots go to
tests/artifacts/ (gitignored), kept for a look after CI."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import mido
import pytest

from liveduet.live.sessionfile import build_midi

ROOT = Path(__file__).resolve().parents[1]
MODEL = Path(os.environ.get("LIVEDUET_MODEL") or ROOT / "models" / "default")
VAE = ROOT / "models" / "vary"
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
JACK = "mido.backends.rtmidi/UNIX_JACK"

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                       reason="chromium and chromium-driver not installed (apt-get install chromium chromium-driver)"),
    pytest.mark.skipif(not (MODEL / "card.json").exists(), reason=f"no model at {MODEL}"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Synth:
    def __init__(self, backend: mido.Backend, name: str) -> None:
        self.received: list[mido.Message] = []
        self.lock = threading.Lock()
        self.port = backend.open_input(name, virtual=True, callback=self._on)

    def _on(self, msg: mido.Message) -> None:
        with self.lock:
            self.received.append(msg)

    def all_notes_off(self) -> int:
        with self.lock:
            return sum(m.type == "control_change" and m.control == 123 for m in self.received)


# Canvas pixels that belong to notes (either colour), not to the background, the grid or the playhead.
NOTE_PIXELS = """
const c = document.getElementById(arguments[0]), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let n = 0;
for (let i = 0; i < d.length; i += 4) if (d[i + 2] > 80 && !(d[i] > 200 && d[i + 1] > 200)) n++;
return n;
"""


def test_live_page_during_a_jack_duet(jack_server, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    rec = tmp_path / "rec"
    rec.mkdir()
    earlier = rec / "liveduet-20261130-090000.mid"
    build_midi([(0.0, "player", mido.Message("note_on", note=60, velocity=80)),
                (0.5, "player", mido.Message("note_off", note=60)),
                (0.6, "liveduet", mido.Message("note_on", channel=1, note=67, velocity=80)),
                (1.2, "liveduet", mido.Message("note_off", channel=1, note=67))], 120.0).save(earlier)
    backend = mido.Backend(JACK)
    synth_name = f"web{os.getpid()}-Synth"
    synth = Synth(backend, synth_name)
    port = free_port()
    cmd = [sys.executable, "-m", "liveduet", "run", "--backend", "jack",
           "--in", str(ROOT / "examples/call-and-response.mid"),
           "--out", synth_name, "--record", str(rec / "session.mid"), "--no-dashboard", "--tempo", "120",
           "--seed", "1", "--web", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "MIDO_BACKEND": JACK})
    lines: list[str] = []
    driver = None
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "live page: " in line:
                url = line.split("live page: ")[1].strip()
        assert url == f"http://127.0.0.1:{port}/", "".join(lines)
        threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()

        driver = browser()
        driver.get(url)
        wait_for(lambda: driver.execute_script("return live.offset !== null"), 15, "the first live frame")
        driver.find_element("id", "sound").click()  # WebAudio on: answer notes get scheduled in the page
        driver.find_element("id", "sound-player").click()  # and the player's, on arrival
        wait_for(lambda: driver.execute_script("return live.notes.size") > 0, 30, "answer notes on the page")
        time.sleep(0.5)  # the roll draws on the next animation frames
        assert driver.execute_script(NOTE_PIXELS, "roll") > 50, "the piano roll shows notes"
        state = driver.execute_script("return live.state")
        assert state["answers"] >= 1 and state["bpm"] == 120.0 and state["modes"][0] == "call"
        wait_for(lambda: driver.execute_script("return live.played") > 0, 10, "answer notes scheduled in WebAudio")
        wait_for(lambda: driver.execute_script("return live.playerPlayed") > 0, 20, "the player's notes in WebAudio")
        driver.save_screenshot(str(ARTIFACTS / "studio-live.png"))

        before = synth.all_notes_off()
        driver.find_element("id", "panic").click()
        wait_for(lambda: synth.all_notes_off() > before, 5, "all-notes-off at the synth after panic")
        wait_for(lambda: "panic" in "".join(lines), 5, "the daemon's log line for the panic")

        driver.find_element("id", "tab-sessions").click()
        row = wait_for(lambda: driver.find_elements("css selector", f"tr[data-id='{earlier.stem}']"), 10,
                       "the recording in the list")
        row[0].click()
        wait_for(lambda: driver.execute_script(NOTE_PIXELS, "session-roll") > 20, 10, "the recording's roll")
        if shutil.which("fluidsynth"):
            wait_for(lambda: driver.execute_script("return document.getElementById('session-audio').readyState") >= 1,
                     30, "the recording's audio to load")
            assert driver.execute_script("return document.getElementById('session-audio').duration") > 1.0
        driver.save_screenshot(str(ARTIFACTS / "studio-sessions.png"))
    finally:
        if driver is not None:
            driver.quit()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = None
        synth.port.close()
    assert code == 0, "".join(lines)


def test_generate_tab_in_the_browser(tmp_path: Path) -> None:
    """`liveduet studio`'s Generate tab: a piece from the shipped model, drawn, with its audio."""
    from liveduet.web.app import Studio, create_app
    from liveduet.web.media import Media
    from liveduet.web.server import WebServer

    ARTIFACTS.mkdir(exist_ok=True)
    models = {"default": MODEL, **({"vary": VAE} if (VAE / "card.json").exists() else {})}
    studio = Studio(recordings=tmp_path, models=models, media=Media(tmp_path / "cache"))
    server = WebServer(create_app(studio), port=0)
    server.start()
    driver = None
    try:
        driver = browser()
        driver.get(server.url + "#generate")
        wait_for(lambda: driver.find_elements("css selector", "#gen-model option"), 10, "the model list")
        tokens = driver.find_element("id", "gen-tokens")
        tokens.clear()
        tokens.send_keys("48")
        driver.find_element("id", "gen-go").click()
        wait_for(lambda: driver.find_element("id", "gen-result").is_displayed(), 30, "the generated piece")
        wait_for(lambda: driver.execute_script(NOTE_PIXELS, "gen-roll") > 20, 10, "the piece's roll")
        assert "48 tokens" in driver.find_element("id", "gen-said").text
        if shutil.which("fluidsynth"):
            wait_for(lambda: driver.execute_script("return document.getElementById('gen-audio').readyState") >= 1,
                     30, "the piece's audio to load")
        driver.save_screenshot(str(ARTIFACTS / "studio-generate.png"))
        if "vary" in models:  # the same primer, varied by the phrase VAE
            driver.find_element("id", "gen-primer").send_keys(str(ROOT / "examples/call-and-response.mid"))
            wait_for(lambda: "primer:" in driver.find_element("id", "gen-said").text, 10, "the primer uploaded")
            n = driver.find_element("id", "vae-n")
            n.clear()
            n.send_keys("2")
            driver.find_element("id", "vary-go").click()
            wait_for(lambda: "3 phrases" in driver.find_element("id", "gen-said").text, 30, "the variations")
            wait_for(lambda: driver.execute_script(NOTE_PIXELS, "gen-roll") > 20, 10, "the variations' roll")
            driver.save_screenshot(str(ARTIFACTS / "studio-vary.png"))
    finally:
        if driver is not None:
            driver.quit()
        server.stop()
