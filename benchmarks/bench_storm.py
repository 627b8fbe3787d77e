"""Storm and soak: `liveduet run` on real JACK ports against hostile input and a long session; writes JSON.

Storm (one daemon, `--virtual`, recording; a keyboard client plays into it, a synth client hears it):
- 5,000 note-on/off pairs, unpaced (most never leave the sender's rtmidi ring buffer), then again at
  the rate JACK carries without loss (64 messages per 3 ms, ~21 k/s: 20× a MIDI cable);
- 1 MB of random channel messages (every status 0x80..0xEF, random data) at that rate — then the
  keys the flood left down are released, as a player would;
- MIDI clock, 24 ppqn at 300 bpm (start … stop), while calls are played;
- floods of active sensing (0xFE) and reset (0xFF) while a call is played;
then: a normal call must still be answered; thru latency by jack_midi_latency_test; stuck notes at
the synth, strictly (every note-on needs its note-off: CC 123 closes nothing), before SIGTERM and
after; the recording must open in mido and hold no reset / active sensing / clock.

Soak (a fresh daemon): a call every 6 s, answered; RSS sampled every 10 s; the RSS slope in MB/h
(target < 5). The issue asks for 30 minutes (`--soak-minutes`); the JSON says when it ran shorter.

Both run on a JACK server of their own (dummy driver, named `liveduet-bench`), so tests or other
benchmarks starting and stopping the default server cannot pull it away mid-run.

Usage: python benchmarks/bench_storm.py [--soak-minutes 30] [--out benchmarks/results/storm.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import mido

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "benchmarks")]
os.environ["JACK_DEFAULT_SERVER"] = SERVER = "liveduet-bench"  # before any JACK client opens
import jack_util  # noqa: E402
from bench_live import latency_run, merge, port_ending, rss_mb  # noqa: E402
from jack_util import corpus_phrase  # noqa: E402

PAIRS = 5000
RANDOM_BYTES = 1 << 20
CLOCK_BPM, PPQN = 300, 24
CLOCK_S = 12.0
FLOOD = 20000  # of each of 0xFE and 0xFF
FORBIDDEN = {"reset", "active_sensing", "clock", "start", "stop", "continue", "sysex", "songpos"}


class Synth:
    """A JACK MIDI input standing for the synth: every message that arrives, raw, with its time.

    Polled from a thread of ours: with a callback, rtmidi would call into Python from JACK's process
    thread, which then waits for the interpreter while the keyboard floods (and JACK stops serving
    it). Polled, JACK only fills rtmidi's queue, made large enough for a whole storm."""

    def __init__(self, name: str) -> None:
        import rtmidi

        self.got: list[tuple[float, list[int]]] = []
        self.port = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name=name, queue_size_limit=1 << 20)
        self.port.ignore_types(sysex=False, timing=False, active_sense=False)  # see all of it if it comes
        self.port.open_virtual_port("in")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        get = self.port.get_message
        while not self._stop.is_set():
            item = get()
            if item is None:
                time.sleep(0.0005)
            else:
                self.got.append((time.monotonic(), item[0]))

    def close(self) -> None:
        time.sleep(0.2)
        self._stop.set()
        self._thread.join(2)
        self.port.close_port()

    def messages(self) -> list[mido.Message]:
        out = []
        for _, data in list(self.got):
            try:
                out.append(mido.Message.from_bytes(data))
            except ValueError:
                pass
        return out


class Keyboard:
    """A JACK MIDI output standing for the player; counts what it sends and what it leaves down."""

    def __init__(self, name: str) -> None:
        import rtmidi

        self.port = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=name)
        self.port.open_virtual_port("out")
        self.down: Counter[tuple[int, int]] = Counter()
        self.sent = 0

    def send(self, data: list[int]) -> None:
        self.port.send_message(data)
        self.sent += 1
        kind, ch = data[0] & 0xF0, data[0] & 0x0F
        if kind == 0x90 and len(data) == 3 and data[2] > 0:
            self.down[(ch, data[1])] += 1
        elif (kind == 0x80 or (kind == 0x90 and len(data) == 3)) and self.down[(ch, data[1])] > 0:
            self.down[(ch, data[1])] -= 1

    def release_all(self) -> int:
        """Note-offs for every note-on still without one (a player lifting their hands), paced."""
        n = 0
        for (ch, note), count in sorted(self.down.items()):
            for _ in range(count):
                self.send([0x80 | ch, note, 0])
                n += 1
                if n % 64 == 0:
                    time.sleep(0.003)
        return n

    def play(self, events: list[tuple[float, mido.Message]], between=None) -> None:
        t0 = time.monotonic()
        for t, msg in events:
            while True:
                left = t0 + t - time.monotonic()
                if left <= 0:
                    break
                if between is not None:
                    between()
                else:
                    time.sleep(left)
            self.send(msg.bytes())


def stuck(msgs: list[mido.Message]) -> dict[str, int]:
    """Notes left sounding, strictly: each note-on needs a note-off of its own (CC 123 closes none)."""
    on: Counter[tuple[int, int]] = Counter()
    for m in msgs:
        if m.type == "note_on" and m.velocity > 0:
            on[(m.channel, m.note)] += 1
        elif m.type in ("note_on", "note_off") and on[(m.channel, m.note)] > 0:
            on[(m.channel, m.note)] -= 1
    return {f"{ch}:{note}": n for (ch, note), n in sorted(on.items()) if n}


def pedals_down(msgs: list[mido.Message]) -> list[int]:
    down: dict[int, bool] = {}
    for m in msgs:
        if m.type == "control_change" and m.control == 64:
            down[m.channel] = m.value >= 64
    return sorted(ch for ch, d in down.items() if d)


class Daemon:
    """`liveduet run --virtual` in a process; its output lines drained (a full pipe would block its log)."""

    def __init__(self, tmp: Path, name: str, *extra: str, model: str) -> None:
        self.name = name
        cmd = [sys.executable, "-m", "liveduet", "run", "--backend", "jack", "--virtual", "--in", f"{name}-in",
               "--out", f"{name}-out", "--model", model, "--no-dashboard", "--tempo", "120", "--seed", "1",
               "--stats", str(tmp / f"{name}.jsonl"), *extra]
        self.stats = tmp / f"{name}.jsonl"
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.t0 = time.monotonic()
        ready = threading.Event()

        def drain() -> None:
            for line in self.proc.stdout:
                self.lines.append(line)
                if "listening on" in line:
                    self.t0 = time.monotonic()  # ~ the recording's time 0
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(120) or self.proc.poll() is not None:
            raise RuntimeError("daemon did not start:\n" + "".join(self.lines))
        self.into, self.back = port_ending(f":{name}-in"), port_ending(f":{name}-out")

    def answers(self) -> int:
        return len(self.stats.read_text().splitlines()) if self.stats.exists() else 0

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        time.sleep(0.3)
        return code

    def summary(self) -> dict[str, str]:
        out = {}
        for line in self.lines:
            m = re.match(r"\s*(input events dropped|calls|answers|notes heard|notes played)\s+(\S+)\s*$", line)
            if m:
                out[m.group(1)] = m.group(2)
        return out


def wait_answers(daemon: Daemon, n: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while daemon.answers() < n:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def send_all(kb: Keyboard, msgs: list[list[int]], burst: int | None) -> None:
    """Unpaced (`burst` None), or `burst` messages then 3 ms: as fast as JACK carries MIDI without
    losing any (NOTES.md). Unpaced, most of a flood is lost in the sender's own rtmidi ring buffer."""
    for i, data in enumerate(msgs):
        kb.send(data)
        if burst and i % burst == burst - 1:
            time.sleep(0.003)


def heard_by_phase(record: Path, windows: dict[str, tuple[float, float]]) -> dict[str, int]:
    """How many channel messages the daemon recorded from the player in each phase's window (+1 s)."""
    try:
        mid = mido.MidiFile(record)
    except Exception:
        return {}
    tempo = next((m.tempo for m in mid.tracks[0] if m.type == "set_tempo"), 500000)
    player = next((t for t in mid.tracks if t.name == "Player"), [])
    times, tick = [], 0
    for m in player:
        tick += m.time
        if not m.is_meta:
            times.append(mido.tick2second(tick, mid.ticks_per_beat, tempo))
    return {name: sum(a <= t <= b + 1.0 for t in times) for name, (a, b) in windows.items()}


def random_messages(rng: random.Random, size: int) -> list[list[int]]:
    msgs, total = [], 0
    while total < size:
        status = rng.randrange(0x80, 0xF0)
        data = [status] + [rng.randrange(128) for _ in range(1 if 0xC0 <= status < 0xE0 else 2)]
        msgs.append(data)
        total += len(data)
    return msgs


def storm(tmp: Path, model: str, probes: int, xruns) -> dict:
    rng = random.Random(8)
    xruns0 = xruns()
    record = tmp / "storm.mid"
    daemon = Daemon(tmp, "storm", "--record", str(record), model=model)
    kb, synth = Keyboard("storm-kb"), Synth("storm-synth")
    jack_util.jack_connect(port_ending("storm-kb:out"), daemon.into)
    jack_util.jack_connect(daemon.back, port_ending("storm-synth:in"))
    time.sleep(1.0)
    result: dict = {}
    phrase = corpus_phrase()

    phases: dict[str, tuple[float, float]] = {}  # name -> (start, end), monotonic
    notes: list[list[int]] = []
    for i in range(PAIRS):
        notes += [[0x90, 36 + i % 61, rng.randrange(1, 128)], [0x80, 36 + i % 61, 0]]
    for name, burst in (("notes_unpaced", None), ("notes_at_jack_rate", 64)):
        t0 = time.monotonic()
        send_all(kb, notes, burst)
        phases[name] = (t0, time.monotonic())
        result[name] = {"pairs": PAIRS, "send_s": round(time.monotonic() - t0, 3)}
        time.sleep(4.0)

    flood = random_messages(rng, RANDOM_BYTES)
    t0 = time.monotonic()
    send_all(kb, flood, 64)
    released = kb.release_all()
    phases["random_at_jack_rate"] = (t0, time.monotonic())
    result["random_at_jack_rate"] = {"bytes": RANDOM_BYTES, "messages": len(flood),
                                     "send_s": round(time.monotonic() - t0, 3), "note_offs_to_release_keys": released}
    time.sleep(4.0)

    answers = daemon.answers()
    phases["clock"] = (time.monotonic(), 0.0)
    period = 60.0 / (CLOCK_BPM * PPQN)
    kb.send([0xFA])
    t0, ticks, calls = time.monotonic(), 0, 0
    tick_at = t0

    def tick() -> None:
        nonlocal ticks, tick_at
        now = time.monotonic()
        if now >= tick_at:
            kb.send([0xF8])
            ticks += 1
            tick_at = t0 + ticks * period  # an absolute grid, no drift
        time.sleep(max(0.0, min(tick_at, time.monotonic() + 0.001) - time.monotonic()))

    while time.monotonic() - t0 < CLOCK_S:
        kb.play(phrase, between=tick)
        calls += 1
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            tick()
    kb.send([0xFC])
    time.sleep(1.0)
    phases["clock"] = (phases["clock"][0], time.monotonic())
    result["clock"] = {"bpm": CLOCK_BPM, "ppqn": PPQN, "ticks": ticks, "seconds": round(time.monotonic() - t0, 1),
                       "calls": calls, "answers": daemon.answers() - answers}

    answers = daemon.answers()
    sent: Counter[str] = Counter()

    def burst() -> None:  # 100 of each, then 2 ms for the call's own notes
        if sent["fe"] < FLOOD:
            for _ in range(100):
                kb.send([0xFE])
                kb.send([0xFF])
            sent["fe"] += 100
            sent["ff"] += 100
        time.sleep(0.002)

    t0 = time.monotonic()
    kb.play(phrase, between=burst)
    while sent["fe"] < FLOOD:
        burst()
    phases["realtime_floods"] = (t0, time.monotonic())
    result["realtime_floods"] = {"active_sensing": sent["fe"], "reset": sent["ff"],
                                 "answered": wait_answers(daemon, answers + 1, 10)}

    answers = daemon.answers()
    time.sleep(2.0)
    kb.play(phrase)
    result["answered_after_storm"] = wait_answers(daemon, daemon.answers() + 1, 10)
    time.sleep(6.0)
    result["stuck_notes_before_latency_test"] = sum(stuck(synth.messages()).values())

    # The tester's probes are note-ons without note-offs (thru passes them as they come): stuck
    # notes at the synth from here on include them; `unexplained` below sets them apart.
    runs = [latency_run(daemon.into, daemon.back, probes) for _ in range(2)]
    result["thru_latency"] = merge(runs)
    time.sleep(2.0)

    before = synth.messages()
    result["stuck_notes_before_stop"] = sum(stuck(before).values())
    result["daemon_rss_mb"] = round(rss_mb(daemon.proc.pid), 1)
    result["daemon_exit_code"] = daemon.stop()
    after = synth.messages()
    result["stuck_notes_after_stop"] = sum(stuck(after).values())
    result["stuck_notes_after_stop_by_key"] = top(stuck(after))
    result["stuck_notes_after_stop_unexplained_by_input"] = unexplained(stuck(after), record)
    result["pedals_down_after_stop"] = pedals_down(after)
    result["synth_received"] = len(after)
    result["synth_note_ons"] = sum(m.type == "note_on" and m.velocity > 0 for m in after)
    result["synth_note_offs"] = sum(m.type == "note_off" or (m.type == "note_on" and m.velocity == 0) for m in after)
    result["jack_xruns_during_storm"] = xruns() - xruns0
    result["forbidden_at_synth"] = sum(m.type in FORBIDDEN for m in after)
    result["keyboard_sent"] = kb.sent
    result["daemon_summary"] = daemon.summary()
    result["daemon_traceback"] = any("Traceback" in line for line in daemon.lines)
    result["recording"] = check_recording(record)
    heard = heard_by_phase(record, {k: (a - daemon.t0, b - daemon.t0) for k, (a, b) in phases.items()})
    for name, count in heard.items():
        result[name]["daemon_heard"] = count
    kb.port.close_port()
    synth.close()
    (tmp / "storm-daemon.log").write_text("".join(daemon.lines))
    return result


def recorded(mid: mido.MidiFile, name: str) -> list[mido.Message]:
    """A track's channel messages as recorded, without the note-offs the recorder adds at the end
    to close what was still open (they sit on the last tick)."""
    track = next((t for t in mid.tracks if t.name == name), [])
    end, tick, out = sum(m.time for m in track), 0, []
    for m in track:
        tick += m.time
        if not m.is_meta and tick < end:
            out.append(m)
    return out


def check_recording(path: Path) -> dict:
    """Readable by mido, free of what must never be in a file. The Player track is what the daemon
    heard: note-ons that arrived without their note-off lost it on the way in (JACK, the sender).
    The liveduet track is what it played: every note-on there should have its note-off."""
    try:
        mid = mido.MidiFile(path)
    except Exception as err:  # the point of the check: any failure to read is a finding
        return {"readable": False, "error": f"{type(err).__name__}: {err}"}
    msgs = [m for t in mid.tracks for m in t]
    heard, played = recorded(mid, "Player"), recorded(mid, "liveduet")
    return {"readable": True, "tracks": {t.name: sum(not m.is_meta for m in t) for t in mid.tracks if t.name},
            "forbidden": sum(m.type in FORBIDDEN for m in msgs),
            "player_note_ons": sum(m.type == "note_on" and m.velocity > 0 for m in heard),
            "player_notes_unclosed_on_arrival": sum(stuck(heard).values()),
            "liveduet_notes_unclosed": sum(stuck(played).values()), "seconds": round(mid.length, 1)}


def unexplained(at_synth: dict[str, int], path: Path) -> int:
    """Stuck notes at the synth beyond those the daemon itself heard without a note-off (key by key):
    note-offs lost between the daemon and the synth, or by liveduet."""
    try:
        heard = stuck(recorded(mido.MidiFile(path), "Player"))
    except Exception:
        return -1
    return sum(max(0, n - heard.get(key, 0)) for key, n in at_synth.items())


def top(counts: dict[str, int], n: int = 10) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:n])


def soak(tmp: Path, model: str, minutes: float) -> dict:
    daemon = Daemon(tmp, "soak", model=model)
    kb = Keyboard("soak-kb")
    jack_util.jack_connect(port_ending("soak-kb:out"), daemon.into)
    time.sleep(1.0)
    phrase = corpus_phrase()
    t0 = time.monotonic()
    samples: list[tuple[float, float]] = []
    calls = 0
    next_sample = t0
    while time.monotonic() - t0 < minutes * 60:
        start = t0 + calls * 6.0
        time.sleep(max(0.0, start - time.monotonic()))
        kb.play(phrase)
        calls += 1
        while time.monotonic() < t0 + calls * 6.0:
            if time.monotonic() >= next_sample:
                samples.append((round(time.monotonic() - t0, 1), round(rss_mb(daemon.proc.pid), 2)))
                next_sample += 10.0
            time.sleep(0.05)
    time.sleep(6.0)
    answered = daemon.answers()
    code = daemon.stop()
    kb.port.close_port()
    minutes_run = (time.monotonic() - t0) / 60
    warm = [s for s in samples if s[0] >= 120]
    return {
        "minutes": round(minutes_run, 1), "asked_minutes": 30, "shorter_than_asked": minutes_run < 30,
        "calls": calls, "answers": answered, "exit_code": code,
        "rss_mb_first": samples[0][1] if samples else None, "rss_mb_last": samples[-1][1] if samples else None,
        "rss_slope_mb_per_h": slope(samples), "rss_slope_after_2_min_mb_per_h": slope(warm),
        "target_mb_per_h": 5.0, "rss_samples": samples, "summary": daemon.summary(),
    }


def slope(samples: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of RSS (MB) over time, per hour."""
    if len(samples) < 3:
        return None
    xs, ys = [s[0] / 3600 for s in samples], [s[1] for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return round(sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den, 2) if den else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "default"))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--soak-minutes", type=float, default=30.0)
    ap.add_argument("--probes", type=int, default=300, help="probes per latency run")
    ap.add_argument("--skip-storm", action="store_true")
    args = ap.parse_args()
    if not jack_util.have_jackd():
        sys.exit("jackd not installed: apt-get install --no-install-recommends jackd2")
    tmp = Path(tempfile.mkdtemp(prefix="bench-storm-"))
    server = None
    if not jack_util.jack_running():
        log = open(tmp / "jackd.log", "wb")  # noqa: SIM115 - lives with the server
        server = subprocess.Popen(["jackd", "-n", SERVER, *jack_util.JACKD_CMD[1:]], stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 15
        while not jack_util.jack_running():
            if time.monotonic() > deadline or server.poll() is not None:
                sys.exit(f"jackd -n {SERVER} did not come up")
            time.sleep(0.2)
    jack = jack_util.JackServer(server, tmp / "jackd.log" if server else None)
    result: dict = {"jack_server": SERVER, "jack_period_ms": round(128 / 48000 * 1000, 3)}
    try:
        if not args.skip_storm:
            result["storm"] = storm(tmp, args.model, args.probes, lambda: jack.xruns() or 0)
        if args.soak_minutes > 0:
            result["soak"] = soak(tmp, args.model, args.soak_minutes)
        result["jack_xruns"] = jack.xruns()
        result["load_average"] = os.getloadavg()
    finally:
        if server is not None:
            jack_util.stop_jackd(server)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
