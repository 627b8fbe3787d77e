"""The web studio through the ASGI test client: the live websocket over a fake session, the one
command bus, recordings by id, uploads, generation, and every refusal as a one-line JSON error."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections import deque
from dataclasses import replace
from pathlib import Path

import mido
import pytest
from starlette.websockets import WebSocketDisconnect

from liveduet import cli
from liveduet.clock import ManualClock
from liveduet.live import commands
from liveduet.live.scheduler import Scheduler
from liveduet.live.session import SessionSnapshot
from liveduet.live.sessionfile import build_midi
from liveduet.live.settings import load_live_settings
from liveduet.live.snapshot import EngineSnapshot
from liveduet.model.sampling import complexity_weights
from liveduet.web.app import Studio, create_app
from liveduet.web.generation import MAX_UPLOAD_BYTES
from liveduet.web.guard import host_name, origin_host
from liveduet.web.live import call_notes, diff, queued_notes
from liveduet.web.server import StudioError, check_exposure

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette >= 1 prefers httpx2 to httpx for its test client; both work
    from starlette.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]
MODEL = Path(os.environ.get("LIVEDUET_MODEL") or ROOT / "models" / "default")
VAE = ROOT / "models" / "vary"
HOST = "testserver"  # the test client's Host header
ORIGIN = "http://127.0.0.1:8765"


class FakeSession:
    """What the live page reads and drives: snapshot(), send(cmd), a scheduler's queue, settings, clock."""

    def __init__(self) -> None:
        self.clock = ManualClock(100.0)
        self.settings = load_live_settings(None)
        self.scheduler = Scheduler(lambda m: None, self.clock)
        self.sent: list[commands.Command] = []
        self.played: deque = deque(maxlen=256)  # (number, time, message), as Session.route keeps them
        self.engine = EngineSnapshot(
            state="answering", bpm=120.0, beat=1.5, temperature=0.9, length_ratio=1.0,
            call_tokens=("C4", "d1", "E4", "d1", "G4", "d1"), answer_tokens=("E4", "d1"), calls=1, answers=1,
            player_notes=3, answer_notes=1, step_p50_ms=0.4, step_p99_ms=1.1, warnings=("output port lost: Synth",))

    def snapshot(self) -> SessionSnapshot:
        return SessionSnapshot(engine=self.engine, input_name="Keyboard", output_name="Synth", input_ok=True,
                               output_ok=True, recording=None, recorded_s=0.0, late_p99_ms=0.5, dropped=0,
                               elapsed_s=12.0)

    def send(self, cmd: commands.Command) -> str | None:
        self.sent.append(cmd)
        return "recording to x.mid" if isinstance(cmd, commands.Record) else None


def write_recording(path: Path) -> Path:
    events = [(0.0, "player", mido.Message("note_on", note=60, velocity=80)),
              (0.5, "player", mido.Message("note_off", note=60)),
              (1.0, "liveduet", mido.Message("note_on", channel=1, note=64, velocity=70)),
              (1.5, "liveduet", mido.Message("note_off", channel=1, note=64))]
    build_midi(events, 120.0, end_time=2.0).save(path)
    return path


@pytest.fixture
def studio(tmp_path: Path) -> Studio:
    rec = tmp_path / "rec"
    rec.mkdir()
    write_recording(rec / "liveduet-20261130-120000.mid")
    models = {"default": MODEL} if (MODEL / "card.json").exists() else {}
    return Studio(recordings=rec, models=models, extra_hosts=(HOST,))


@pytest.fixture
def client(studio: Studio) -> TestClient:
    return TestClient(create_app(studio), raise_server_exceptions=False)


# ---- the JSON → command mapping (pure) ------------------------------------------------------------


@pytest.mark.parametrize(("data", "cmd"), [
    ({"type": "temperature", "value": 0.5}, commands.SetTemperature(0.5)),
    ({"type": "length", "value": 2}, commands.SetLength(2.0)),
    ({"type": "complexity", "value": 0.75}, commands.SetComplexity(0.75)),
    ({"type": "mode", "value": "echo"}, commands.SetMode("echo")),
    ({"type": "lock", "value": None}, commands.LockScale(None)),
    ({"type": "lock", "value": "call"}, commands.LockScale(commands.CALL_KEY)),
    ({"type": "lock", "value": 7}, commands.LockScale(7)),
    ({"type": "panic"}, commands.Panic()),
    ({"type": "record"}, commands.Record()),
    ({"type": "end_call"}, commands.EndCall()),
])
def test_json_commands(data: dict, cmd: commands.Command) -> None:
    assert commands.from_json(data) == cmd


@pytest.mark.parametrize("data", [
    [], "panic", {"type": "quit"}, {"type": "temperature"}, {"type": "temperature", "value": 9},
    {"type": "temperature", "value": True}, {"type": "temperature", "value": float("nan")},
    {"type": "mode", "value": "karaoke"}, {"type": "lock", "value": 12}, {"type": "lock", "value": "C"},
    {"type": "complexity", "value": 1.5}, {"type": "complexity", "value": "dense"},
])
def test_bad_json_commands_say_why(data: object) -> None:
    with pytest.raises(commands.CommandError) as err:
        commands.from_json(data)
    assert "\n" not in str(err.value)


def test_modes_come_from_the_caller() -> None:
    assert commands.from_json({"type": "mode", "value": "vary"}, (*commands.MODES, "vary")) == commands.SetMode("vary")


# ---- the live feed (pure parts) ---------------------------------------------------------------------


def test_queued_answer_notes_pair_on_and_off_and_skip_thru_and_clicks() -> None:
    on = mido.Message("note_on", channel=1, note=64, velocity=90)
    off = mido.Message("note_off", channel=1, note=64)
    heap = [(10.5, 2, off, "answer-1"), (10.0, 1, on, "answer-1"),
            (10.0, 3, mido.Message("note_on", note=60, velocity=80), "thru"),
            (10.2, 4, mido.Message("note_on", channel=9, note=76, velocity=90), "click")]
    notes, ids = queued_notes(heap, t0=9.0, click_channel=9)
    assert notes == [{"id": 1, "on": 1.0, "off": 1.5, "pitch": 64, "vel": 90, "ch": 1}]
    assert ids == {1}


def test_call_notes_end_where_the_call_is_now() -> None:
    notes = call_notes(("C4", "d1", "E4+G4", "d1/2"), end_t=10.0, bpm=120.0)
    assert notes == [[9.25, 9.75, 60], [9.75, 10.0, 64], [9.75, 10.0, 67]]


def test_diff_keeps_only_changes() -> None:
    assert diff({"a": 1, "b": [1]}, {"a": 1, "b": [1, 2], "c": None}) == {"b": [1, 2], "c": None}


# ---- the live websocket -------------------------------------------------------------------------------


def test_live_frames_are_diffs_with_queued_notes_and_commands_reach_the_bus(studio: Studio) -> None:
    session = FakeSession()
    session.scheduler.schedule(100.5, mido.Message("note_on", channel=1, note=67, velocity=80))
    session.scheduler.schedule(101.0, mido.Message("note_off", channel=1, note=67))
    session.played.append((0, 95.0, mido.Message("note_on", note=50, velocity=70)))  # long ago: not replayed
    session.played.append((1, 100.0, mido.Message("note_on", note=60, velocity=90)))
    client = TestClient(create_app(replace(studio, live=session)))
    with client.websocket_connect("/ws/live", headers={"origin": ORIGIN}) as ws:
        first = ws.receive_json()
        assert first["state"] == "answering" and first["temperature"] == 0.9 and first["modes"] == list(commands.MODES)
        assert first["warnings"] == ["output port lost: Synth"] and first["variation"] == 0.5
        assert first["complexity"] == 0.5
        assert [n["pitch"] for n in first["notes"]] == [67] and first["notes"][0]["on"] == pytest.approx(0.5)
        assert [p for _, _, p in first["call"]] == [60, 64, 67]
        assert first["player"] == [[1, 0.0, 60, 90, 0]]  # the player's notes as played: sounded on arrival
        session.engine = replace(session.engine, beat=2.0)
        session.played.append((2, 100.0, mido.Message("note_off", note=60)))
        second = ws.receive_json()
        assert "notes" not in second and "state" not in second and second["beat"] == 2.0  # a diff
        assert second["player"] == [[2, 0.0, 60, 0, 0]]  # the note-off: velocity 0
        session.engine = replace(session.engine, state="calling", call_tokens=("A4", "d1"))  # a new call
        third = ws.receive_json()
        assert [p for _, _, p in third["call"]] == [69] and [p for _, _, p in third["past_calls"]] == [60, 64, 67]
        ws.send_text(json.dumps({"type": "panic"}))
        ws.send_text(json.dumps({"type": "temperature", "value": 1.3}))
        ws.send_text(json.dumps({"type": "complexity", "value": 0.8}))
        ws.send_text(json.dumps({"type": "record"}))
        ws.send_text(json.dumps({"type": "temperature", "value": 7}))
        ws.send_text("not json")
        replies = []
        while len(replies) < 6:
            msg = ws.receive_json()
            if "ack" in msg or "error" in msg:
                replies.append(msg)
    assert session.sent == [commands.Panic(), commands.SetTemperature(1.3), commands.SetComplexity(0.8),
                            commands.Record()]
    assert replies[3] == {"ack": "Record", "said": "recording to x.mid"}
    assert "0.1..2" in replies[4]["error"] and "JSON" in replies[5]["error"]


def test_websocket_from_another_origin_is_refused(studio: Studio) -> None:
    client = TestClient(create_app(replace(studio, live=FakeSession())))
    with pytest.raises(WebSocketDisconnect) as err, \
            client.websocket_connect("/ws/live", headers={"origin": "https://evil.example"}):
        pass
    assert err.value.code == 1008


def test_without_a_session_the_live_socket_says_so(client: TestClient) -> None:
    with client.websocket_connect("/ws/live", headers={"origin": ORIGIN}) as ws:
        assert ws.receive_json() == {"live": False}


# ---- security ----------------------------------------------------------------------------------------


def test_other_hosts_and_foreign_posts_are_refused(client: TestClient) -> None:
    res = client.get("/api/info", headers={"host": "evil.example:8765"})
    assert res.status_code == 403 and "host" in res.json()["error"]
    res = client.post("/api/generate", content=b"{}", headers={"origin": "https://evil.example"})
    assert res.status_code == 403 and "origin" in res.json()["error"]
    res = client.get("/api/sessions/x/audio", headers={"sec-fetch-site": "cross-site"})  # an <audio> elsewhere
    assert res.status_code == 403 and "cross-site" in res.json()["error"]
    assert client.get("/api/info", headers={"sec-fetch-site": "same-origin"}).status_code == 200
    assert client.get("/api/info", headers={"host": "localhost:41234"}).status_code == 200  # any port
    for origin in ("http://127.0.0.1.evil.example", "null", "file://", "http://evil.example:8765"):
        res = client.post("/api/generate", content=b"{}", headers={"origin": origin})
        assert res.status_code == 403, origin


def test_host_names() -> None:
    assert [host_name(h) for h in ("127.0.0.1:8765", "[::1]:80", "localhost", "[::1]")] == \
        ["127.0.0.1", "[::1]", "localhost", "[::1]"]
    assert origin_host("http://localhost:3000") == "localhost" and origin_host("null") is None


def test_a_token_is_required_when_set(studio: Studio) -> None:
    client = TestClient(create_app(replace(studio, token="s3cret")))
    assert client.get("/api/info").status_code == 403
    assert client.get("/static/app.js").status_code == 200  # the page's code is no secret
    assert client.get("/api/info", headers={"x-liveduet-token": "wrong"}).status_code == 403
    page = client.get("/?token=s3cret")
    assert page.status_code == 200 and "liveduet_token" in page.headers["set-cookie"]
    assert client.get("/api/info").status_code == 200  # the cookie the page got


def test_exposed_host_needs_a_token(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(StudioError):
        check_exposure("0.0.0.0", None)
    check_exposure("0.0.0.0", "t")
    check_exposure("::1", None)
    assert cli.main(["studio", "--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("liveduet studio: error: --host 0.0.0.0") and err.count("\n") == 1
    assert cli.main(["run", "--in", str(ROOT / "examples/call-and-response.mid"), "--web", "0",
                     "--web-host", "192.168.1.2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("liveduet run: error: --web-host 192.168.1.2") and "--web-token" in err


def test_a_port_in_use_is_one_line() -> None:
    from liveduet.web.server import bind

    with bind("127.0.0.1", 0) as taken, pytest.raises(StudioError, match="cannot listen on 127.0.0.1:"):
        bind("127.0.0.1", taken.getsockname()[1]).close()


def test_errors_are_json_never_a_traceback_page(client: TestClient) -> None:
    for path, status in (("/nothing", 404), ("/api/sessions/nope", 404), ("/api/sessions/..%2F..%2Fetc%2Fpasswd", 404),
                         ("/api/sessions/liveduet-20261130-120000/exe", 404), ("/api/results/abc/midi", 404)):
        res = client.get(path)
        assert res.status_code == status and res.headers["content-type"] == "application/json", path
        assert "Traceback" not in res.text and res.json()["error"]
    assert client.post("/api/info").status_code == 405


# ---- sessions ------------------------------------------------------------------------------------------


def test_sessions_list_and_open(client: TestClient, studio: Studio) -> None:
    (studio.recordings / "notes.txt").write_text("not a recording")
    (studio.recordings / "broken.mid").write_bytes(b"MThd garbage")
    listing = client.get("/api/sessions").json()["sessions"]
    by_id = {s["id"]: s for s in listing}
    assert set(by_id) == {"liveduet-20261130-120000", "broken"}
    good = by_id["liveduet-20261130-120000"]
    assert (good["calls"], good["answers"], good["error"]) == (1, 1, None) and good["seconds"] == pytest.approx(2.0)
    assert by_id["broken"]["error"]
    one = client.get("/api/sessions/liveduet-20261130-120000").json()
    assert [(n[2], n[4]) for n in one["notes"]] == [(60, 0), (64, 1)]
    assert one["notes"][1][0] == pytest.approx(1.0, abs=0.01)
    midi = client.get("/api/sessions/liveduet-20261130-120000/midi")
    assert midi.status_code == 200 and midi.content[:4] == b"MThd"
    assert "attachment" in midi.headers["content-disposition"]
    assert client.get("/api/sessions/broken").status_code == 422


@pytest.mark.skipif(shutil.which("fluidsynth") is None, reason="fluidsynth not installed")
def test_session_audio_is_rendered_once_and_cached(client: TestClient, studio: Studio, tmp_path: Path) -> None:
    from liveduet.web.media import Media

    client = TestClient(create_app(replace(studio, media=Media(tmp_path / "cache"))))
    res = client.get("/api/sessions/liveduet-20261130-120000/audio")
    assert res.status_code == 200 and res.headers["content-type"] == "audio/wav" and res.content[:4] == b"RIFF"
    wavs = list((tmp_path / "cache").glob("*.wav"))
    assert len(wavs) == 1
    mtime = wavs[0].stat().st_mtime_ns
    assert client.get("/api/sessions/liveduet-20261130-120000/audio").status_code == 200
    assert wavs[0].stat().st_mtime_ns == mtime


# ---- generate ------------------------------------------------------------------------------------------


def test_uploads_are_capped_and_checked(client: TestClient, studio: Studio) -> None:
    if not studio.models:
        pytest.skip(f"no model at {MODEL}")
    res = client.post("/api/primers", content=b"x" * (MAX_UPLOAD_BYTES + 1))
    assert res.status_code == 413 and res.json()["error"]
    res = client.post("/api/primers", content=b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\xff\xff")
    assert res.status_code == 422 and res.json()["error"]
    ok = client.post("/api/primers", content=(studio.recordings / "liveduet-20261130-120000.mid").read_bytes())
    assert ok.status_code == 200 and ok.json()["notes"] == 2


def test_generate_bad_requests_name_the_field(client: TestClient, studio: Studio) -> None:
    if not studio.models:
        pytest.skip(f"no model at {MODEL}")
    for body, word in (({"model": "default", "temperature": 5}, "temperature"), ({"model": "nope"}, "nope"),
                       ({"model": "default", "tokens": 1.5}, "tokens"), ({"model": "default", "x": 1}, "x"),
                       ({"model": "default", "primer": "gone"}, "primer")):
        res = client.post("/api/generate", json=body)
        assert 400 <= res.status_code < 500 and word in res.json()["error"], body
    assert client.post("/api/generate", content=b"{").status_code == 400


@pytest.mark.skipif(not (MODEL / "card.json").exists(), reason=f"no model at {MODEL}")
def test_generate_from_a_recording_primer(client: TestClient) -> None:
    body = {"model": "default", "tokens": 24, "temperature": 1.0, "seed": 3, "bpm": 100,
            "recording": "liveduet-20261130-120000"}
    res = client.post("/api/generate", json=body)
    assert res.status_code == 200, res.text
    out = res.json()
    assert out["tokens"] == 24 and out["bpm"] == 100
    parts = [n[4] for n in out["notes"]]
    assert parts[:2] == [0, 0] and parts.count(1) >= 1  # the primer's two notes, then the generated ones
    assert client.post("/api/generate", json=body).json()["notes"] == out["notes"]  # same seed, same piece
    midi = client.get(f"/api/results/{out['id']}/midi")
    assert midi.status_code == 200 and midi.content[:4] == b"MThd"


def test_complexity_is_neutral_at_half_and_favours_short_notes_above() -> None:
    flat = complexity_weights(0.5, 48)
    assert len(set(flat.values())) == 1
    dense, sparse = complexity_weights(0.9, 48), complexity_weights(0.1, 48)
    assert dense[3] > dense[12] > dense[48] and sparse[3] < sparse[12] < sparse[48]


def test_scores_musicxml_by_music21_and_svg_by_lilypond(client: TestClient, studio: Studio, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from liveduet.web.media import Media

    media = Media(tmp_path / "cache")
    client = TestClient(create_app(replace(studio, media=media)), raise_server_exceptions=False)
    base = "/api/sessions/liveduet-20261130-120000"
    monkeypatch.setenv("PATH", str(tmp_path / "nobin"))  # no LilyPond: a 503 that says what to do
    res = client.get(f"{base}/svg")
    assert res.status_code == 503 and "MusicXML" in res.json()["error"]
    monkeypatch.undo()
    try:
        xml = client.get(f"{base}/musicxml")
        assert xml.status_code == 200 and b"<score-partwise" in xml.content
        # LilyPond's two steps, faked: musicxml2ly writes the .ly, lilypond the SVG beside it.
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "musicxml2ly").write_text('#!/bin/sh\n[ "$1" = --output ] && echo "{ c4 }" > "$2"\n')
        (bin_dir / "lilypond").write_text('#!/bin/sh\nfor a; do out=$prev; prev=$a; done\n'
                                          'for a; do case $p in --output) o=$a;; esac; p=$a; done\n'
                                          'echo "<svg xmlns=\\"http://www.w3.org/2000/svg\\"/>" > "$o.svg"\n')
        for tool in ("musicxml2ly", "lilypond"):
            (bin_dir / tool).chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
        svg = client.get(f"{base}/svg")
        assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml"), svg.text
    finally:
        media.close()


# ---- vary and morph (the phrase VAE) -------------------------------------------------------------------

needs_vae = pytest.mark.skipif(not (VAE / "card.json").exists() or not (MODEL / "card.json").exists(),
                               reason="no shipped VAE or model")


@pytest.fixture
def lab(studio: Studio) -> TestClient:
    return TestClient(create_app(replace(studio, models={"default": MODEL, "vary": VAE})),
                      raise_server_exceptions=False)


@needs_vae
def test_vary_a_recording_and_an_upload_with_the_cli_functions(lab: TestClient) -> None:
    from liveduet.commands.vary import phrase_events, variations
    from liveduet.model.vae_export import load_vae
    from liveduet.music.midifile import read_midi

    assert lab.get("/api/models").json()["families"] == {"default": "lm", "vary": "vae"}
    body = {"vae": "vary", "recording": "liveduet-20261130-120000", "sigma": 0.7, "n": 3, "seed": 5}
    res = lab.post("/api/vary", json=body)
    assert res.status_code == 200, res.text
    out = res.json()
    # The primer (part 0), then three variations each exactly as long (the VAE's invariant), back to back.
    spans = [round(b - a, 4) for a, b in out["phrases"]]
    assert len(spans) == 4 and len(set(spans)) == 1 and out["bpm"] == 120.0
    assert [n[2] for n in out["notes"] if n[4] == 0] == [60, 64] and any(n[4] == 1 for n in out["notes"])
    # The same notes `liveduet vary` would write: its functions, same seed.
    vae = load_vae(VAE)
    primer = phrase_events(read_midi(lab.app.app.state.generator.recordings / "liveduet-20261130-120000.mid"), vae)
    expected = variations(vae, primer, 0.7, 3, 5)
    got = sorted((round(n[0] * 24), n[2]) for n in out["notes"] if n[4] == 1)  # twelfths at 120 bpm
    from liveduet.music.tokens import events_to_notes

    pos, want = sum(d for _, d in primer), []
    for phrase in expected:
        want += [(on, p) for on, _, p in events_to_notes(phrase, pos)]
        pos += sum(d for _, d in phrase)
    assert got == sorted(want)
    midi = lab.get(f"/api/results/{out['id']}/midi")
    assert midi.status_code == 200 and midi.content[:4] == b"MThd"
    upload = lab.post("/api/primers", content=(ROOT / "examples/call-and-response.mid").read_bytes()).json()
    res = lab.post("/api/vary", json={"vae": "vary", "primer": upload["id"], "sigma": 0, "n": 1})
    assert res.status_code == 200 and len(res.json()["phrases"]) == 2


@needs_vae
def test_morph_between_two_primers(lab: TestClient) -> None:
    upload = lab.post("/api/primers", content=(ROOT / "examples/call-and-response.mid").read_bytes()).json()
    body = {"vae": "vary", "a": {"recording": "liveduet-20261130-120000"}, "b": {"primer": upload["id"]}, "steps": 4}
    res = lab.post("/api/morph", json=body)
    assert res.status_code == 200, res.text
    out = res.json()
    window = 8 * 0.5  # the shipped VAE's window: 8 beats, at A's 120 bpm
    assert [round(b - a, 3) for a, b in out["phrases"]] == [window] * 4
    assert {n[4] for n in out["notes"]} == {1} and out["notes"][-1][1] <= 4 * window + 1e-6
    assert lab.get(f"/api/results/{out['id']}/midi").content[:4] == b"MThd"


@needs_vae
def test_vary_and_morph_refusals_are_one_line_4xx_json(lab: TestClient, studio: Studio) -> None:
    empty = mido.MidiFile()  # a valid file without a note
    empty.tracks.append(mido.MidiTrack())
    empty.save(studio.recordings / "empty.mid")
    (studio.recordings / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\xff\xff")
    rec = "liveduet-20261130-120000"
    cases = [
        ("/api/vary", {"vae": "vary", "recording": rec, "sigma": -0.5}, 400, "sigma"),
        ("/api/vary", {"vae": "vary", "recording": rec, "sigma": 11}, 400, "sigma"),
        ("/api/vary", {"vae": "vary", "recording": rec, "n": 0}, 400, "n must"),
        ("/api/vary", {"vae": "default", "recording": rec}, 400, "not a VAE"),  # a language model's folder
        ("/api/morph", {"vae": "default", "a": {"recording": rec}, "b": {"recording": rec}}, 400, "not a VAE"),
        ("/api/vary", {"vae": "nope", "recording": rec}, 404, "nope"),
        ("/api/vary", {"vae": "vary"}, 400, "primer is required"),
        ("/api/vary", {"vae": "vary", "recording": "empty"}, 422, "no notes"),
        ("/api/vary", {"vae": "vary", "recording": "broken"}, 422, "the primer"),
        ("/api/vary", {"vae": "vary", "primer": "gone"}, 404, "gone"),
        ("/api/morph", {"vae": "vary", "a": {"recording": rec}, "steps": 3}, 400, "b: a primer"),
        ("/api/morph", {"vae": "vary", "a": {"recording": rec}, "b": {"recording": "empty"}}, 422, "B has no notes"),
        ("/api/morph", {"vae": "vary", "a": {"recording": rec}, "b": {"recording": rec}, "steps": 1}, 400, "steps"),
        ("/api/morph", {"vae": "vary", "a": {"recording": rec, "path": "/etc"}, "b": {}}, 400, "a: unknown"),
    ]
    for path, body, status, words in cases:
        res = lab.post(path, json=body)
        assert res.status_code == status and words in res.json()["error"], (body, res.status_code, res.text)
        assert "\n" not in res.json()["error"] and "Traceback" not in res.text
    assert lab.post("/api/vary", content=b"{").status_code == 400
