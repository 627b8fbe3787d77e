"""Does a view disturb the duet's timing? `liveduet run` on JACK, answering, with: no view
(--no-dashboard), the web page open (--web, a websocket client pulling every frame and sending a
control now and then, as the page does), the Rich dashboard drawing on a terminal (a pty of 120x40),
and both; `dashboard-thread` is the dashboard drawn on a thread of the daemon, as before
ui/screen.py (LIVEDUET_DRAW=thread); `--modes call,vary` runs each in those practice modes too. Each
view runs with each `--senders` choice of `run --sender`:
`process` (the notes go out from the sender process, live/sender_child.py) and `thread` (from a
thread of the daemon, as before), side by side in one run. Writes JSON.

For each view: the scheduler's answer lateness (p50/p99/max per answer, from the daemon's --stats)
and thru latency probed during the answers by `jack_midi_latency_test` (as bench_live does). The
views run in order, the whole order `--repeats` times, so a load change on a shared machine spreads
over all of them. Target: answer lateness p99 ≤ 1 ms with any view; thru unchanged.

Usage: python benchmarks/bench_studio.py [--rounds 4] [--repeats 2] [--out benchmarks/results/studio.json]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import pty
import shlex
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

import mido

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_live  # noqa: E402
from bench_live import (  # noqa: E402
    JACK,
    ROOT,
    corpus_phrase,
    jack_util,
    latency_run,
    merge,
    play,
    port_ending,
    sender_choice,
)

VIEWS = ("none", "web", "dashboard", "dashboard-thread", "both")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """`liveduet run` with virtual JACK ports and the view asked for; the dashboard draws on a pty."""

    def __init__(self, view: str, model: str, tmp: Path, stats: Path, nice: int = 0, sender: str = "process",
                 extra: tuple[str, ...] = ()) -> None:
        cfg = tmp / "bench.toml"
        cfg.write_text("[answer]\nmin_beats = 12.0\nmax_beats = 12.0\n")
        sender_args, sender_env = sender_choice(sender)
        cmd = [sys.executable, "-m", "liveduet", "run", "--backend", "jack", "--virtual", "--in", "liveduet-in",
               "--out", "liveduet-out", "--model", model, "--tempo", "120", "--config", str(cfg),
               "--stats", str(stats), "--seed", "1", *sender_args, *extra]
        self.port = None
        if view in ("web", "both"):
            self.port = free_port()
            cmd += ["--web", str(self.port)]
        if view in ("none", "web"):
            cmd.append("--no-dashboard")
        env = {**os.environ, "MIDO_BACKEND": JACK, **sender_env}
        if nice:
            cmd = ["nice", "-n", str(nice), *cmd]  # above the shared machine's other jobs (root may lower it)
        self.master = None
        if view == "dashboard-thread":
            env["LIVEDUET_DRAW"] = "thread"  # the dashboard as it drew before: Rich on a thread of the daemon
        if view in ("dashboard", "dashboard-thread", "both"):
            self.master, slave = pty.openpty()
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
            self.proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=subprocess.PIPE, text=True, env=env)
            os.close(slave)
            threading.Thread(target=self._drain, daemon=True).start()
            out = self.proc.stderr
        else:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
            out = self.proc.stdout
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = out.readline()
            if "listening on" in line:
                break
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"daemon did not start ({view})")
        threading.Thread(target=lambda: [None for _ in out], daemon=True).start()

    def _drain(self) -> None:
        try:
            while os.read(self.master, 65536):
                pass
        except OSError:
            pass

    def stop(self) -> None:
        bench_live.stop(self.proc)
        if self.master is not None:
            os.close(self.master)


class PageClient:
    """What an open live page does to the server: reads every frame, sends a control every 2 s."""

    def __init__(self, port: int) -> None:
        self.frames = 0
        self.url, self.origin = f"ws://127.0.0.1:{port}/ws/live", f"http://127.0.0.1:{port}"
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from websockets.sync.client import connect

        last = time.monotonic()
        try:
            with connect(self.url, origin=self.origin) as ws:
                while not self._stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        ws.recv(timeout=1.0)
                        self.frames += 1
                    if time.monotonic() - last > 2.0:
                        ws.send(json.dumps({"type": "temperature", "value": 1.0}))
                        last = time.monotonic()
        except Exception as err:
            print(f"page client: {err}", file=sys.stderr)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(3)


def run_view(view: str, sender: str, args: argparse.Namespace, tmp: Path, mode: str = "") -> dict:
    stats = tmp / f"stats-{view}-{time.monotonic_ns()}.jsonl"
    extra = tuple(shlex.split(args.daemon_args)) + (("--mode", mode) if mode else ())
    daemon = Daemon(view, args.model, tmp, stats, args.nice, sender, extra)
    page = None
    try:
        into, back = port_ending(":liveduet-in"), port_ending(":liveduet-out")
        time.sleep(3)
        if daemon.port is not None:
            page = PageClient(daemon.port)
        keyboard = mido.Backend(JACK).open_output(f"studio-kb-{view}", virtual=True)
        jack_util.jack_connect(port_ending(f":studio-kb-{view}"), into)
        call = corpus_phrase()
        probes = []
        for _ in range(args.rounds):
            play(keyboard, call)
            time.sleep(1.2)  # the 12-beat (6 s) answer starts
            probes.append(latency_run(into, back, args.probes))
            time.sleep(max(0.0, 7.0 - 1.2))
        keyboard.close()
        frames = page.frames if page else None
    finally:
        if page is not None:
            page.close()
        daemon.stop()
    answers = [json.loads(line) for line in stats.read_text().splitlines() if line.strip()]
    return {"answers": [{k: a.get(k) for k in ("late_ms_p50", "late_ms_p99", "late_ms_max", "messages", "late_ms")}
                        for a in answers], "thru_during_answers": merge(probes), "page_frames": frames}


def summary(runs: list[dict]) -> dict:
    answers = [a for r in runs for a in r["answers"]]
    p99 = sorted(a["late_ms_p99"] or 0.0 for a in answers)
    # A probe the tool never got back shows as a highest of 2**64 ns: such runs say nothing of thru.
    thru = [r["thru_during_answers"] for r in runs
            if "highest_ms" in r["thru_during_answers"] and r["thru_during_answers"]["highest_ms"] < 1000]
    return {
        "answers": len(answers),
        "pooled": bench_live.pooled(answers),
        "late_ms_p99_median": round(statistics.median(p99), 3) if p99 else None,
        "late_ms_p99_max": round(max(p99), 3) if p99 else None,
        "late_ms_p50_median": (round(statistics.median(a["late_ms_p50"] or 0.0 for a in answers), 3)
                               if answers else None),
        "late_ms_max": round(max((a["late_ms_max"] or 0.0) for a in answers), 3) if answers else None,
        "thru_average_ms": round(statistics.fmean(t["average_ms"] for t in thru), 3) if thru else None,
        "thru_highest_ms": max(t["highest_ms"] for t in thru) if thru else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "default"))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--views", default=",".join(VIEWS), help=f"comma-separated, of {', '.join(VIEWS)}")
    ap.add_argument("--senders", default="process,process-rtmidi,thread",
                    help="comma-separated sender labels (bench_live.SENDERS)")
    ap.add_argument("--rounds", type=int, default=4, help="answers per view and repeat")
    ap.add_argument("--daemon-args", default="",
                    help="more `liveduet run` options, e.g. \"--mode vary --variation 0.5\"")
    ap.add_argument("--modes", default="",
                    help="comma-separated `run --mode` values side by side (e.g. call,vary); labels gain /MODE")
    ap.add_argument("--repeats", type=int, default=2, help="times the whole order of views runs")
    ap.add_argument("--probes", type=int, default=200, help="thru probes per answer")
    ap.add_argument("--nice", type=int, default=0,
                    help="run the daemon at this niceness (e.g. -10: a shared machine's other jobs then load it less)")
    args = ap.parse_args()
    views = [v for v in args.views.split(",") if v]
    if not jack_util.have_jackd():
        sys.exit("jackd not installed: apt-get install --no-install-recommends jackd2")
    server = None if jack_util.jack_running() else jack_util.start_jackd()
    tmp = Path(tempfile.mkdtemp(prefix="bench-studio-"))
    senders = [s for s in args.senders.split(",") if s]
    modes = [m for m in args.modes.split(",") if m] or [""]
    label = {(v, s, m): f"{v}/{s}" + (f"/{m}" if m else "") for v in views for s in senders for m in modes}
    runs: dict[str, list[dict]] = {x: [] for x in label.values()}
    try:
        floors = []
        for _ in range(args.repeats):
            floors.append(bench_live.floor(20.0))
            for view in views:
                for sender in senders:
                    for mode in modes:
                        runs[label[view, sender, mode]].append(run_view(view, sender, args, tmp, mode))
    finally:
        if server is not None:
            jack_util.stop_jackd(server)
    result = {
        "what": "answer lateness (scheduler, per answer) and thru latency during answers, by view",
        "views": {v: {**summary(r), "page_frames": [x["page_frames"] for x in r]
                      if v.split("/")[0] in ("web", "both") else None}
                  for v, r in runs.items()},
        "daemon_args": args.daemon_args, "modes": modes,
        "rounds": args.rounds, "repeats": args.repeats, "probes_per_answer": args.probes, "nice": args.nice,
        "target_late_ms_p99": 1.0, "load_average": os.getloadavg(), "machine_floor": floors,
        "runs": runs,
    }
    text = json.dumps(result, indent=1)
    print(json.dumps({"floor": floors, **{v: {k: x[k] for k in ("pooled", "thru_average_ms", "thru_highest_ms")}
                                          for v, x in result["views"].items()}}, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
