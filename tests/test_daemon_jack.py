"""`liveduet run` as a user runs it, on real JACK MIDI ports: a keyboard port plays a real corpus
phrase into the daemon, the answer arrives at a synth port, and the recording holds exactly that."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mido
import pytest
from jack_util import Synth, corpus_phrase

from liveduet.live.recorder import journal_path

ROOT = Path(__file__).resolve().parents[1]
MODEL = Path(os.environ.get("LIVEDUET_MODEL") or ROOT / "models" / "default")
JACK = "mido.backends.rtmidi/UNIX_JACK"

pytestmark = pytest.mark.skipif(not (MODEL / "card.json").exists(), reason=f"no model at {MODEL}")


def start_daemon(tmp: Path, keyboard: str, synth: str, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "liveduet", "run", "--backend", "jack", "--in", keyboard, "--out", synth,
           "--record", str(tmp / "session.mid"), "--stats", str(tmp / "stats.jsonl"), "--no-dashboard",
           "--tempo", "120", "--seed", "3", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "MIDO_BACKEND": JACK})
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "listening on" in line:
            proc.log = lines  # type: ignore[attr-defined]
            threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
            return proc
    proc.kill()
    raise AssertionError("daemon did not start:\n" + "".join(lines))


def play(port, events, t0: float) -> None:
    for t, msg in events:
        delay = t0 + t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        port.send(msg)


def notes(msgs) -> list[tuple[str, int]]:
    return sorted((m.type, m.note) for m in msgs)


def open_notes(msgs: list[mido.Message]) -> set[tuple[int, int]]:
    sounding: set[tuple[int, int]] = set()
    for m in msgs:
        if m.type == "note_on" and m.velocity > 0:
            sounding.add((m.channel, m.note))
        elif m.type in ("note_off", "note_on"):
            sounding.discard((m.channel, m.note))
        elif m.type == "control_change" and m.control in (120, 123):
            sounding = {k for k in sounding if k[0] != m.channel}
    return sounding


@pytest.fixture
def ports(jack_server):
    backend = mido.Backend(JACK)
    name = f"kb{os.getpid()}"
    keyboard = backend.open_output(f"{name}-Keyboard", virtual=True)
    synth = Synth(backend, f"{name}-Synth")
    yield keyboard, synth, f"{name}-Keyboard", f"{name}-Synth"
    keyboard.close()
    synth.port.close()


def test_duet_answers_on_the_synth_and_records_exactly(ports, tmp_path):
    keyboard, synth, kb_name, synth_name = ports
    proc = start_daemon(tmp_path, kb_name, synth_name)
    try:
        events = corpus_phrase()
        play(keyboard, events, time.monotonic() + 0.3)
        deadline = time.monotonic() + 15
        stats_file = tmp_path / "stats.jsonl"  # one line per answer, written when it is done
        while time.monotonic() < deadline and not (stats_file.exists() and stats_file.read_text().strip()):
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, "".join(proc.log)
    log = "".join(proc.log)
    player = [m for m in synth.messages(0) if m.type in ("note_on", "note_off")]
    answer = [m for m in synth.messages(1) if m.type in ("note_on", "note_off")]
    sent = [m for _, m in events]
    # JACK orders events within one period by frame, so compare what arrived, not the order of ties.
    assert notes(player) == notes(sent), "thru passed the call"
    assert sum(m.type == "note_on" for m in answer) >= 2, f"no answer arrived:\n{log}"
    assert not open_notes(synth.messages()), "every note-on has its note-off"

    stats = [json.loads(line) for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert stats[0]["tokens"] > 0 and stats[0]["first_late_ms"] is not None
    assert stats[0]["first_late_ms"] <= 5.0

    mid = mido.MidiFile(tmp_path / "session.mid")
    assert mid.type == 1 and mid.ticks_per_beat == 480
    names = {t.name for t in mid.tracks}
    assert {"Player", "liveduet"} <= names
    by_name = {t.name: t for t in mid.tracks}
    rec_player = [(m.type, m.note) for m in by_name["Player"] if m.type in ("note_on", "note_off")]
    rec_answer = [(m.type, m.note) for m in by_name["liveduet"] if m.type in ("note_on", "note_off")]
    assert sorted(rec_player) == notes(sent), "the recording holds what the player played"
    assert sorted(rec_answer) == notes(answer), "the recording holds exactly what liveduet played"
    assert not journal_path(tmp_path / "session.mid").exists()


def test_sigterm_mid_answer_leaves_no_stuck_notes(ports, tmp_path):
    keyboard, synth, kb_name, synth_name = ports
    proc = start_daemon(tmp_path, kb_name, synth_name, "--config", str(write_long_answer(tmp_path)))
    try:
        play(keyboard, corpus_phrase(), time.monotonic() + 0.3)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(m.type == "note_on" for m in synth.messages(1)):
            time.sleep(0.02)
        time.sleep(0.4)  # well inside a 16-beat answer
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, "".join(proc.log)
    time.sleep(0.2)
    msgs = synth.messages()
    assert any(m.type == "note_on" for m in synth.messages(1)), "the answer had started"
    assert not open_notes([m for m in msgs if m.type != "control_change"]), "note-offs for every open note"
    ccs = [(m.channel, m.control, m.value) for m in msgs if m.type == "control_change"]
    assert (1, 64, 0) in ccs and (1, 123, 0) in ccs and (1, 120, 0) in ccs
    assert mido.MidiFile(tmp_path / "session.mid").tracks


def test_kill_9_then_recover_gives_a_readable_file(ports, tmp_path):
    keyboard, synth, kb_name, synth_name = ports
    proc = start_daemon(tmp_path, kb_name, synth_name)
    play(keyboard, corpus_phrase(), time.monotonic() + 0.3)
    time.sleep(1.5)  # the journal is flushed at least every second
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    # The sender process outlives the daemon by a moment and closes every note it opened.
    deadline = time.monotonic() + 5
    while open_notes(synth.messages()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not open_notes(synth.messages()), "a killed daemon leaves no stuck note"
    journal = journal_path(tmp_path / "session.mid")
    assert journal.exists() and not (tmp_path / "session.mid").exists()
    out = tmp_path / "recovered.mid"
    done = subprocess.run([sys.executable, "-m", "liveduet", "recover", str(journal), "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    mid = mido.MidiFile(out)
    player = next(t for t in mid.tracks if t.name == "Player")
    assert sum(m.type == "note_on" for m in player) == sum(m.type == "note_on" for _, m in corpus_phrase())


def write_long_answer(tmp: Path) -> Path:
    cfg = tmp / "long.toml"
    cfg.write_text("[answer]\nmin_beats = 16.0\nmax_beats = 16.0\n")
    return cfg


def test_unplugged_keyboard_and_synth_reconnect(jack_server, tmp_path):
    backend = mido.Backend(JACK)
    name = f"hp{os.getpid()}"
    keyboard = backend.open_output(f"{name}-Keyboard", virtual=True)
    synth = Synth(backend, f"{name}-Synth")
    proc = start_daemon(tmp_path, f"{name}-Keyboard", f"{name}-Synth")
    try:
        keyboard.close()
        synth.port.close()  # both devices unplugged
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "".join(proc.log).count("port lost") < 2:
            time.sleep(0.1)
        assert proc.poll() is None, "still running"
        keyboard = backend.open_output(f"{name}-Keyboard", virtual=True)
        synth = Synth(backend, f"{name}-Synth")  # plugged back in
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "".join(proc.log).count("port back") < 2:
            time.sleep(0.1)
        time.sleep(0.3)
        play(keyboard, corpus_phrase(), time.monotonic() + 0.2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(m.type == "note_on" for m in synth.messages(1)):
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, "".join(proc.log)
        keyboard.close()
        synth.port.close()
    log = "".join(proc.log)
    assert "input port lost" in log and "output port lost" in log, log
    assert "input port back" in log and "output port back" in log, log
    assert any(m.type == "note_on" for m in synth.messages(0)), "thru works again after replugging"
    assert any(m.type == "note_on" for m in synth.messages(1)), "and the answer arrives at the new synth port"
