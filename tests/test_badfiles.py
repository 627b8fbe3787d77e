"""Broken and unusual MIDI files, and `liveduet prepare`'s command-line errors.

Every broken file is built here, byte by byte. Each must be skipped quickly with a one-line reason
counted in manifest.json (a RIFF-wrapped file is read); a run never hangs; user mistakes end with
one line on stderr, exit status 2 and no traceback.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from liveduet.cli import main
from liveduet.errors import MidiFileError
from liveduet.music.dataset import load_dataset
from liveduet.music.midifile import parse_midi
from liveduet.music.stream import tokenize_notes
from liveduet.music.tokens import BOS, EOS, TokenizerSettings

S = TokenizerSettings()
SUBPROCESS_TIMEOUT = 120  # seconds; a hang fails the test instead of stalling the suite


# -- a byte-level SMF writer --------------------------------------------------------------------


def vlq(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def chunk(tag: bytes, body: bytes) -> bytes:
    return tag + len(body).to_bytes(4, "big") + body


def track(*events: tuple[int, bytes]) -> bytes:
    """(delta ticks, message bytes) pairs → an MTrk chunk with its end-of-track."""
    return chunk(b"MTrk", b"".join(vlq(d) + m for d, m in events) + b"\x00\xff\x2f\x00")


def smf(*tracks: bytes, fmt: int = 1, division: int = 480, ntracks: int | None = None) -> bytes:
    header = fmt.to_bytes(2, "big") + (len(tracks) if ntracks is None else ntracks).to_bytes(2, "big")
    return chunk(b"MThd", header + division.to_bytes(2, "big")) + b"".join(tracks)


def on(pitch: int, vel: int = 80, ch: int = 0) -> bytes:
    return bytes([0x90 | ch, pitch, vel])


def off(pitch: int, ch: int = 0) -> bytes:
    return bytes([0x80 | ch, pitch, 0])


def tempo(bpm: float) -> bytes:
    return b"\xff\x51\x03" + round(60_000_000 / bpm).to_bytes(3, "big")


def melody(pitches: list[int], beat: int = 480, ch: int = 0) -> list[tuple[int, bytes]]:
    events: list[tuple[int, bytes]] = []
    for p in pitches:
        events += [(0, on(p, ch=ch)), (beat, off(p, ch=ch))]
    return events


def good_file(pitches: list[int] = (60, 62, 64, 65, 67, 65, 64, 62)) -> bytes:
    return smf(track((0, tempo(100))), track(*melody(list(pitches))))


def rmid(data: bytes) -> bytes:
    body = b"RMID" + chunk(b"data", data)
    pad = b"\x00" if len(data) % 2 else b""
    return b"RIFF" + len(body + pad).to_bytes(4, "little") + body + pad


# -- the broken files ---------------------------------------------------------------------------

GOOD = good_file()
# name → (bytes, expected reason, or None if the file must be read)
CASES: dict[str, tuple[bytes, str | None]] = {
    "empty.mid": (b"", "empty file"),
    "truncated.mid": (GOOD[:-20], "truncated"),
    "random.mid": (random.Random(1).randbytes(3000), "not a MIDI file"),
    "riff.rmi": (rmid(GOOD), None),
    "tpb0.mid": (smf(track(*melody([60, 62])), division=0), "ticks_per_beat is 0"),
    "smpte.mid": (smf(track(*melody([60, 62])), division=0xE728), "SMPTE"),
    "huge_delta.mid": (smf(track((0, on(60)), (0x0FFFFFFF, off(60))), fmt=0), "broken delta time"),
    "long_vlq.mid": (smf(chunk(b"MTrk", b"\x00" + on(60) + b"\x80" * 400_000 + b"\x00" + off(60)), fmt=0),
                     "variable-length number"),  # a 400 KB delta time: mido takes 39 s
    "drums_only.mid": (smf(track(*melody([36, 42, 38, 42], ch=9))), "drums only"),
    "no_notes.mid": (smf(track((0, tempo(90)), (0, b"\xc0\x05"), (960, b"\xb0\x07\x64"))), "no notes"),
    "type2.mid": (smf(track(*melody([60])), track(*melody([62])), fmt=2), "type 2"),
    "chunk_says_too_long.mid": (GOOD[:14] + b"MTrk\x7f\xff\xff\xff" + GOOD[22:], "truncated"),
    "no_tracks.mid": (smf(ntracks=1), "no tracks"),
    "data_without_status.mid": (smf(track((0, b"\x3c\x40"))), "without a status byte"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_broken_file_fails_fast_with_one_line(name: str) -> None:
    data, reason = CASES[name]
    started = time.perf_counter()
    if reason is None:
        notes = parse_midi(data)
        assert [n[2] for n in notes.notes] == [60, 62, 64, 65, 67, 65, 64, 62]
    elif reason in ("drums only", "no notes"):
        notes = parse_midi(data)
        assert notes.notes == [] and bool(notes.drum_notes) == (reason == "drums only")
    else:
        with pytest.raises(MidiFileError, match=reason) as err:
            parse_midi(data)
        assert "\n" not in str(err.value)
    assert time.perf_counter() - started < 1.0


def test_a_huge_delta_under_the_cap_is_read_fast_and_its_silence_capped() -> None:
    # At music21's 10,080 ticks per beat 0x0FFFFFFF ticks is 26,630 beats: under the cap, so the
    # file is read; the tokenizer shortens the silence instead of walking through it.
    data = smf(track((0, on(60)), (10080, off(60)), (0x0FFFFFFF, on(62)), (10080, off(62))), fmt=0, division=10080)
    started = time.perf_counter()
    notes = parse_midi(data)
    assert tokenize_notes(notes.notes, S) == [((60,), 12), ((), S.max_duration), ((62,), 12)]
    assert time.perf_counter() - started < 1.0


def test_running_status_and_velocity_zero() -> None:
    # 0x90 once, then data bytes only; velocity 0 releases
    data = smf(track((0, on(60)), (480, b"\x3c\x00"), (0, b"\x3e\x50"), (480, b"\x3e\x00")), fmt=0)
    assert parse_midi(data).notes == [(0.0, 1.0, 60), (1.0, 2.0, 62)]


def test_multitrack_merge_excludes_drums() -> None:
    data = smf(
        track((0, tempo(120))),
        track(*melody([72, 74, 76, 77])),
        track(*melody([48, 43], beat=960, ch=1)),
        track(*melody([36, 42, 38, 42], ch=9)),
    )
    notes = parse_midi(data)
    assert notes.drum_notes == 4
    assert tokenize_notes(notes.notes, S) == [((48, 72), 12), ((74,), 12), ((43, 76), 12), ((77,), 12)]


def test_tempo_changes_do_not_change_durations_in_beats() -> None:
    notes = melody([60, 62, 64, 65, 67, 69])
    steady = smf(track((0, tempo(120))), track(*notes))
    changing = smf(track((0, tempo(120)), (960, tempo(60)), (960, tempo(180))), track(*notes))
    a, b = parse_midi(steady), parse_midi(changing)
    assert [(beat, round(bpm, 2)) for beat, bpm in b.tempos] == [(0.0, 120.0), (2.0, 60.0), (4.0, 180.0)]
    assert tokenize_notes(a.notes, S) == tokenize_notes(b.notes, S) == [((p,), 12) for p in (60, 62, 64, 65, 67, 69)]


# -- liveduet prepare over broken files ---------------------------------------------------------


def run_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "liveduet", "prepare", *args, "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """All the subprocess runs, started at once (each costs an interpreter start), then awaited."""
    root = tmp_path_factory.mktemp("cli")
    bad = root / "bad"
    bad.mkdir()
    for name, (data, _) in CASES.items():
        (bad / name).write_bytes(data)
    (bad / "good.mid").write_bytes(GOOD)
    only_bad = root / "only_bad"
    only_bad.mkdir()
    for name in ("empty.mid", "random.mid", "type2.mid"):
        (only_bad / name).write_bytes(CASES[name][0])
    existing = root / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    runs = {
        "bad": run_cli(str(bad), "--out", str(root / "out_bad")),
        "missing": run_cli(str(root / "nowhere"), "--out", str(root / "out_missing")),
        "nosuch": run_cli("music21:nosuch", "--out", str(root / "out_nosuch")),
        "only_bad": run_cli(str(only_bad), "--out", str(root / "out_only_bad")),
        "existing": run_cli(str(bad / "good.mid"), "--out", str(existing)),
    }
    done = {}
    for key, proc in runs.items():
        try:
            out, err = proc.communicate(timeout=SUBPROCESS_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail(f"liveduet prepare ({key}) hung for {SUBPROCESS_TIMEOUT} s")
        done[key] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    done["root"] = root  # type: ignore[assignment]
    return done


def test_prepare_skips_each_broken_file_with_a_reason(cli_runs) -> None:
    run = cli_runs["bad"]
    assert run.returncode == 0, run.stderr
    out = cli_runs["root"] / "out_bad"
    manifest = json.loads((out / "manifest.json").read_text())
    reasons = {Path(s["path"]).name: s["reason"] for s in manifest["skipped"]}
    expected = {name: reason for name, (_, reason) in CASES.items() if reason}
    assert set(reasons) == set(expected)
    for name, reason in expected.items():
        assert reason in reasons[name] and "\n" not in reasons[name], (name, reasons[name])
    counts = manifest["counts"]
    assert counts["files"] == len(CASES) + 1
    assert counts["files_skipped"] == len(expected)
    assert counts["files_read"] == 2  # good.mid and the RIFF-wrapped copy of it
    data = load_dataset(out)
    assert sorted(p["name"] for p in manifest["pieces"]) == ["good.mid", "riff.rmi"]
    a, b = data.pieces("train") + data.pieces("val")
    assert np.array_equal(a, b)  # the RMID file holds the same music


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("missing", "does not exist"),
        ("nosuch", "unknown music21 collection 'nosuch'"),
        ("only_bad", "no tokens: all 3 files were skipped"),
        ("existing", "exists and is not empty (use --force"),
    ],
)
def test_cli_errors_are_one_line_without_traceback(cli_runs, key: str, message: str) -> None:
    run = cli_runs[key]
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("liveduet prepare: error:") and message in lines[0], run.stderr
    assert not (cli_runs["root"] / f"out_{key}").exists()
    if key == "existing":
        assert (cli_runs["root"] / "existing" / "keep.txt").read_text() == "mine"


def test_force_replaces_an_existing_output(tmp_path: Path) -> None:
    (tmp_path / "song.mid").write_bytes(GOOD)
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    assert main(["prepare", str(tmp_path / "song.mid"), "--out", str(out), "--quiet"]) == 2
    assert (out / "old.txt").exists()
    assert main(["prepare", str(tmp_path / "song.mid"), "--out", str(out), "--quiet", "--force"]) == 0
    assert not (out / "old.txt").exists() and (out / "manifest.json").exists()


# -- transposition and the validation split -----------------------------------------------------


def test_transpose_keeps_notes_in_range_and_split_is_by_piece(tmp_path: Path) -> None:
    src = tmp_path / "songs"
    src.mkdir()
    rng = random.Random(7)
    for i in range(16):
        (src / f"song{i:02d}.mid").write_bytes(good_file([rng.randrange(48, 80) for _ in range(12)]))
    wide = [23, 105, 60, 23, 105]  # room for 2 semitones down and 3 up
    (src / "wide.mid").write_bytes(good_file(wide))
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "sub" / "deeper" / "song00.mid").write_bytes(good_file([60, 64, 67]))
    out = tmp_path / "out"
    assert main(["prepare", str(src), "--out", str(out), "--transpose", "-5..6", "--val-percent", "40",
                 "--jobs", "2", "--quiet"]) == 0
    data = load_dataset(out)
    listing = data.manifest["pieces"]
    vocab = data.vocab

    shifts: dict[str, list[int]] = {}
    for entry in listing:
        shifts.setdefault(entry["name"], []).append(entry["transpose"])
    assert shifts["wide.mid"] == [-2, -1, 0, 1, 2, 3]
    assert all(s == list(range(-5, 7)) for name, s in shifts.items() if name != "wide.mid")
    assert "sub/deeper/song00.mid" in shifts  # same file name in a subfolder: a different piece

    pieces = [data.tokens[a:b] for a, b in zip(data.offsets[:-1], data.offsets[1:])]
    assert len(pieces) == len(listing) == len(data.split)
    for entry, seq in zip(listing, pieces):
        assert seq[0] == BOS and seq[-1] == EOS
        pitches = [p for t in seq if vocab.pitch_mask[t] for p in vocab.pitches_of(int(t))]
        assert pitches and all(21 <= p <= 108 for p in pitches)
        if entry["name"] == "wide.mid":
            assert min(pitches) == 23 + entry["transpose"] and max(pitches) == 105 + entry["transpose"]

    by_name: dict[str, set[int]] = {}
    for entry, s in zip(listing, data.split):
        assert entry["split"] == ("val" if s else "train")
        by_name.setdefault(entry["name"], set()).add(int(s))
    assert all(len(s) == 1 for s in by_name.values())  # every transposition of a piece in one split
    assert {next(iter(s)) for s in by_name.values()} == {0, 1}  # and both splits are used


def test_a_worker_that_dies_neither_hangs_the_run_nor_loses_other_files(tmp_path, monkeypatch) -> None:
    import os

    from rich.console import Console

    from liveduet.commands import prepare
    from liveduet.music.corpus import Result, Task
    from liveduet.music.tokens import TokenizerSettings

    def fake_read(task, settings):
        if task.path.endswith("killer.mid"):
            os._exit(1)  # what a segfaulting parser or the OOM killer looks like to the pool
        return Result(task, [])

    monkeypatch.setattr(prepare, "read_task", fake_read)  # workers are forked: they see the patch
    tasks = [Task("midi", str(tmp_path / f"f{i}.mid"), str(tmp_path)) for i in range(12)]
    tasks.insert(5, Task("midi", str(tmp_path / "killer.mid"), str(tmp_path)))
    results = prepare.read_all(tasks, TokenizerSettings(), jobs=2, console=Console(quiet=True))
    assert len(results) == 13
    crashed = [r for r in results if r.skipped]
    assert [Path(r.task.path).name for r in crashed] == ["killer.mid"]
    assert "crashed" in crashed[0].skipped
