"""Real corpora as prepare sources, on tiny fake corpora in each layout (no downloads):
MAESTRO's official split, GiantMIDI's curated list, Lakh's hashed folders with duplicates and drums,
resuming an interrupted run, the performance side array, and each bad input as one line, exit 2."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import mido
import numpy as np
import pytest

from liveduet.cli import main
from liveduet.music.corpus import Task, read_task
from liveduet.music.dataset import NO_TIMING, load_dataset
from liveduet.music.midifile import parse_midi
from liveduet.music.tokens import TokenizerSettings

TPB = 480


def smf(*tracks: list, tpb: int = TPB) -> bytes:
    """Tracks of (tick, message) pairs in absolute ticks → SMF bytes."""
    mid = mido.MidiFile(type=1, ticks_per_beat=tpb)
    for events in tracks:
        track = mido.MidiTrack()
        now = 0
        for tick, msg in sorted(events, key=lambda e: e[0]):
            track.append(msg.copy(time=tick - now))
            now = tick
        mid.tracks.append(track)
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def part(pitches: list[int], channel: int = 0, program: int | None = None, velocity: int = 80,
         step: float = 1.0, start: float = 0.0) -> list:
    events = [] if program is None else [(0, mido.Message("program_change", channel=channel, program=program))]
    for i, p in enumerate(pitches):
        on = round((start + i * step) * TPB)
        events.append((on, mido.Message("note_on", channel=channel, note=p, velocity=velocity)))
        events.append((on + round(step * TPB * 0.9), mido.Message("note_off", channel=channel, note=p)))
    return events


def tempo(bpm: float, tick: int = 0) -> tuple:
    return (tick, mido.MetaMessage("set_tempo", tempo=round(60_000_000 / bpm)))


def song(seed: int, n: int = 12, **kw) -> bytes:
    rng = np.random.default_rng(seed)
    return smf([tempo(120)], part([int(p) for p in rng.integers(48, 80, n)], **kw))


def prepare(*args: str) -> int:
    return main(["prepare", *args, "--quiet"])


def one_line_error(capsys, code: int, message: str) -> None:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("liveduet prepare: error:") and message in lines[0], err


# -- MAESTRO -----------------------------------------------------------------------------------

MAESTRO_COLUMNS = ["canonical_composer", "canonical_title", "split", "year", "midi_filename", "audio_filename",
                   "duration"]


def make_maestro(root: Path, missing: int = 1) -> list[dict]:
    rows = []
    plan = [("train", 5), ("validation", 2), ("test", 3)]
    k = 0
    for split, count in plan:
        for i in range(count):
            name = f"{2004 + k % 3}/perf-{split}-{i}.midi"
            rows.append({"canonical_composer": f"Composer {k % 4}", "canonical_title": f"Work {k}", "split": split,
                         "year": str(2004 + k % 3), "midi_filename": name, "audio_filename": name[:-5] + ".wav",
                         "duration": "61.5"})
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(song(k))
            k += 1
    for i in range(missing):
        rows.append({**rows[0], "canonical_title": f"Lost {i}", "midi_filename": f"2018/lost-{i}.midi"})
    with open(root / "maestro-v3.0.0.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, MAESTRO_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def test_maestro_keeps_the_official_split(tmp_path: Path) -> None:
    root = tmp_path / "maestro-v3.0.0"
    root.mkdir()
    rows = make_maestro(root)
    # An older JSON listing beside it (columns as in v2/v3): the newer CSV wins.
    (root / "maestro-v2.0.0.json").write_text(json.dumps({"midi_filename": {"0": "x.midi"}, "split": {"0": "test"}}))
    out = tmp_path / "out"
    assert prepare(f"maestro:{root}", "--out", str(out), "--transpose", "-1..1", "--val-percent", "50",
                   "--jobs", "2") == 0
    data = load_dataset(out)
    m = data.manifest
    assert m["split"]["sources"] == {f"maestro:{root}": "official: maestro-v3.0.0.csv"}
    assert m["split"]["pieces"] == {"train": 5, "val": 2, "test": 3}
    assert m["split"]["test_isolated"] is True and m["split"]["test_in_train_or_val"] == 0
    expected = {r["midi_filename"]: {"train": "train", "validation": "val", "test": "test"}[r["split"]]
                for r in rows[:10]}
    for entry, code in zip(m["pieces"], data.split):
        assert entry["split"] == expected[entry["name"]] == ("train", "val", "test")[code]
        assert entry["composer"].startswith("Composer") and entry["title"].startswith("Work")
    assert len(data.pieces("test")) == 9 and len(data.pieces("val")) == 6 and len(data.pieces("train")) == 15
    test_tokens = sum(len(p) for p in data.pieces("test"))
    assert len(data.stream("train")) + len(data.stream("val")) + test_tokens == len(data.tokens)
    assert [s["reason"] for s in m["skipped"]] == ["listed in maestro-v3.0.0.csv but missing"]
    assert m["counts"]["files_skipped"] == 1 and m["counts"]["test_tokens"] == test_tokens
    assert not (out / ".partial").exists()


def test_maestro_json_columns(tmp_path: Path) -> None:
    root = tmp_path / "maestro"
    root.mkdir()
    rows = make_maestro(root, missing=0)
    (root / "maestro-v3.0.0.csv").unlink()
    columns = {c: {str(i): r[c] for i, r in enumerate(rows)} for c in MAESTRO_COLUMNS}
    (root / "maestro-v3.0.0.json").write_text(json.dumps(columns))
    out = tmp_path / "out"
    assert prepare(f"maestro:{root}", "--out", str(out), "--jobs", "1") == 0
    m = load_dataset(out).manifest
    assert m["split"]["pieces"] == {"train": 5, "val": 2, "test": 3}
    assert m["split"]["sources"][f"maestro:{root}"] == "official: maestro-v3.0.0.json"


# -- GiantMIDI-Piano ---------------------------------------------------------------------------

GIANT = ["Chopin, Frédéric, Nocturne Op.9 No.2, aaaaaaaaaaa", "Satie, Erik, Gymnopédie No.1, -bbbbbbbbbb",
         "Unknown, Someone, Improvisation, ccccccccccc"]


def test_giantmidi_curated_list_and_composer(tmp_path: Path) -> None:
    root = tmp_path / "giant"
    (root / "midis").mkdir(parents=True)
    for i, stem in enumerate(GIANT):
        (root / "midis" / f"{stem}.mid").write_bytes(song(i))
    # Names, stems and YouTube IDs are all accepted; one listed file is not there.
    (root / "curated.txt").write_text(f"# curated\n{GIANT[0]}.mid\n-bbbbbbbbbb\nzzzzzzzzzzz\n")
    out = tmp_path / "out"
    assert prepare(f"giantmidi:{root}", "--out", str(out), "--jobs", "1") == 0
    m = load_dataset(out).manifest
    assert [(p["name"], p["composer"]) for p in m["pieces"]] == [
        (f"midis/{GIANT[0]}.mid", "Chopin, Frédéric"), (f"midis/{GIANT[1]}.mid", "Satie, Erik")]
    assert m["pieces"][1]["title"] == "Gymnopédie No.1"
    assert m["skipped"] == [{"path": str(root / "zzzzzzzzzzz"), "reason": "listed in curated.txt but missing"}]
    assert "curated subset: curated.txt" in m["split"]["sources"][f"giantmidi:{root}"]

    (root / "curated.txt").unlink()  # no list: every file
    assert prepare(f"giantmidi:{root}", "--out", str(out), "--jobs", "1", "--force") == 0
    assert len(load_dataset(out).manifest["pieces"]) == 3


def test_giantmidi_curated_folder_and_split_csv(tmp_path: Path) -> None:
    root = tmp_path / "giant"
    for folder in ("midis_v1.2", "surname_checked_midis_v1.2"):
        (root / folder).mkdir(parents=True)
    for i, stem in enumerate(GIANT):
        (root / "midis_v1.2" / f"{stem}.mid").write_bytes(song(i))
    (root / "surname_checked_midis_v1.2" / f"{GIANT[1]}.mid").write_bytes(song(1))
    out = tmp_path / "out"
    assert prepare(f"giantmidi:{root}", "--out", str(out), "--jobs", "1") == 0
    m = load_dataset(out).manifest
    assert [p["name"] for p in m["pieces"]] == [f"{GIANT[1]}.mid"]
    assert "curated subset: folder surname_checked_midis_v1.2" in m["split"]["sources"][f"giantmidi:{root}"]

    # The repository's split CSV: rows whose title names the composer's surname are the curated ones.
    (root / "surname_checked_midis_v1.2" / f"{GIANT[1]}.mid").unlink()
    (root / "surname_checked_midis_v1.2").rmdir()
    ids = [stem.rsplit(", ", 1)[1] for stem in GIANT]
    (root / "full_music_pieces_youtube_similarity_pianosoloprob_split.csv").write_text(
        "surname,youtube_id,surname_in_youtube_title\n"
        f"Chopin,{ids[0]},1\nSatie,{ids[1]},0\nUnknown,{ids[2]},1\n")
    assert prepare(f"giantmidi:{root}", "--out", str(out), "--jobs", "1", "--force") == 0
    m = load_dataset(out).manifest
    assert [p["name"] for p in m["pieces"]] == [f"midis_v1.2/{GIANT[0]}.mid", f"midis_v1.2/{GIANT[2]}.mid"]


# -- Lakh MIDI ---------------------------------------------------------------------------------


def lakh_file(root: Path, data: bytes, matched: str | None = None, name: str | None = None) -> Path:
    md5 = name or hashlib.md5(data).hexdigest()
    folder = root / "lmd_matched" / matched[2] / matched[3] / matched[4] / matched if matched else \
        root / "lmd_full" / md5[0]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{md5}.mid").write_bytes(data)
    return folder / f"{md5}.mid"


def test_lakh_drums_programs_duplicates_and_rules(tmp_path: Path) -> None:
    root = tmp_path / "lmd"
    band = smf([tempo(100)], part([60, 62, 64, 65], program=0),
               part([40, 43, 45, 47], channel=1, program=33),  # bass: melodic, not piano
               part([36, 38, 36, 38], channel=9),  # drums: never kept
               part([90, 91, 92, 93], channel=2, program=118))  # synth drum: percussive, not melodic
    kept = lakh_file(root, band)
    copy = lakh_file(root, band, name="f" * 32)  # the same bytes under another name
    lakh_file(root, band, matched="TRAAAAV128F421A322")  # LMD-matched holds it again
    lakh_file(root, smf([tempo(120)], part([36, 38], channel=9)))
    lakh_file(root, smf([tempo(5)], part([60, 62])))  # 5 bpm
    lakh_file(root, smf([tempo(120), *(tempo(100 + i % 50, i * 10) for i in range(1, 1002))], part([60, 62])))
    lakh_file(root, smf(*([[tempo(120)]] + [part([60 + i % 12]) for i in range(40)])))  # 41 tracks
    (kept.parent / "readme.mid").write_bytes(band)
    out = tmp_path / "out"
    # --min-count 1: every chord gets its token, so the tokens show every pitch kept.
    assert prepare(f"lakh:{root}", "--out", str(out), "--jobs", "2", "--min-count", "1") == 0
    data = load_dataset(out)
    m = data.manifest
    assert [p["name"] for p in m["pieces"]] == [str(kept.relative_to(root))]
    reasons = sorted(s["reason"] for s in m["skipped"])
    assert reasons[0].startswith("41 tracks (over --max-tracks 32)")
    assert "absurd tempo map: 1002 tempo changes (cap 1000)" in reasons
    assert "absurd tempo map: 5.0 bpm (allowed 20..400)" in reasons
    assert "drums only" in reasons and "not a Lakh file name (<md5>.mid)" in reasons
    dups = [s for s in m["skipped"] if s["reason"].startswith("duplicate of")]
    assert len(dups) == 2 and m["counts"]["duplicates"] == 2 and str(copy) in {s["path"] for s in dups}
    pitches = {p for t in data.tokens if data.vocab.pitch_mask[t] for p in data.vocab.pitches_of(int(t))}
    assert pitches == {60, 62, 64, 65, 40, 43, 45, 47}  # no drums, no synth drum
    assert "layout lmd_full+lmd_matched" in m["split"]["sources"][f"lakh:{root}"]

    assert prepare(f"lakh:{root}", "--out", str(out), "--force", "--programs", "piano", "--max-tracks", "64",
                   "--min-count", "1") == 0
    data = load_dataset(out)
    pitches = {p for t in data.tokens if data.vocab.pitch_mask[t] for p in data.vocab.pitches_of(int(t))}
    assert pitches == {60, 62, 64, 65, *(60 + i % 12 for i in range(40))}


def test_program_filter_follows_program_changes() -> None:
    events = part([60, 62], program=0) + [(2 * TPB, mido.Message("program_change", program=25))] + \
        part([64, 65], start=2.0)
    notes = parse_midi(smf([tempo(120)], events), programs=frozenset(range(8)))
    assert [p for _, _, p in notes.notes] == [60, 62] and notes.filtered_notes == 2
    assert [p for _, _, p in parse_midi(smf([tempo(120)], events)).notes] == [60, 62, 64, 65]


# -- performance side array --------------------------------------------------------------------


def test_velocity_and_timing_are_kept_beside_the_tokens(tmp_path: Path) -> None:
    notes = [(0, 60, 40), (int(1.02 * TPB), 64, 100), (int(1.02 * TPB), 67, 90), (int(3.0 * TPB) - 12, 72, 70)]
    events = []
    for tick, pitch, vel in notes:
        events += [(tick, mido.Message("note_on", note=pitch, velocity=vel)),
                   (tick + TPB // 2, mido.Message("note_off", note=pitch))]
    (tmp_path / "p.mid").write_bytes(smf([tempo(120)], events))
    out = tmp_path / "out"
    assert prepare(str(tmp_path / "p.mid"), "--out", str(out), "--jobs", "1", "--min-count", "1") == 0
    data = load_dataset(out)
    names = [data.vocab.tokens[t] for t in data.tokens]
    assert names == ["<bos>", "C4", "d1/2", "R", "d1/2", "E4+G4", "d1/2", "R", "d3/2", "C5", "d1/2", "<eos>"]
    velocity, offset = data.perf[:, 0].tolist(), data.perf[:, 1].tolist()
    assert velocity == [-1, 40, -1, -1, -1, 100, -1, -1, -1, 70, -1, -1]  # a chord: its loudest note
    # 9 ticks late at 120 bpm (480 ticks a beat) = 9.4 ms; 12 ticks early = 12.5 ms early.
    n = NO_TIMING
    assert offset == [n, 0, n, n, n, 9, n, n, n, -12, n, n]


def test_performance_lines_up_on_a_dense_random_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    events = []
    for _ in range(300):
        tick, pitch = int(rng.integers(0, 40 * TPB)), int(rng.integers(30, 100))
        events += [(tick, mido.Message("note_on", note=pitch, velocity=int(rng.integers(1, 128)))),
                   (tick + int(rng.integers(1, TPB)), mido.Message("note_off", note=pitch))]
    (tmp_path / "dense.mid").write_bytes(smf([tempo(97)], events))
    result = read_task(Task("midi", str(tmp_path / "dense.mid"), str(tmp_path)), TokenizerSettings())
    piece = result.pieces[0]
    sounding = [perf for (pitches, _), perf in zip(piece.events, piece.perf) if pitches]
    assert sounding and all(1 <= v <= 127 and abs(ms) < 200 for v, ms in sounding)


# -- scale: resume ---------------------------------------------------------------------------


def test_an_interrupted_run_resumes_to_identical_arrays(tmp_path: Path, capsys) -> None:
    root = tmp_path / "lmd"
    for i in range(48):
        lakh_file(root, song(i, n=8 + i % 5))
    lakh_file(root, song(0, n=8), name="0" * 32)  # a duplicate, resolved in the merge
    src = f"lakh:{root}"
    whole, part_out = tmp_path / "whole", tmp_path / "part"
    assert prepare(src, "--out", str(whole), "--jobs", "2", "--transpose", "-2..2", "--min-count", "1") == 0
    assert prepare(src, "--out", str(part_out), "--jobs", "1", "--stop-after", "2") == 130
    err = capsys.readouterr().err
    assert "interrupted with 6 of 49 files read; the same command with --resume continues" in err, err
    partial = part_out / ".partial"
    assert len(list(partial.glob("shard-*.pkl"))) == 2 and not (part_out / "manifest.json").exists()
    capsys.readouterr()
    one_line_error(capsys, prepare(src, "--out", str(part_out)), "holds an interrupted prepare: add --resume")
    one_line_error(capsys, prepare(str(root), "--out", str(part_out), "--resume"), "other sources or reading")
    assert prepare(src, "--out", str(part_out), "--jobs", "2", "--resume", "--transpose", "-2..2",
                   "--min-count", "1") == 0
    for name in ("tokens.npy", "offsets.npy", "split.npy", "perf.npy", "vocab.json"):
        assert (whole / name).read_bytes() == (part_out / name).read_bytes(), name
    assert not partial.exists()
    assert load_dataset(part_out).manifest["counts"]["duplicates"] == 1


@pytest.mark.slow
def test_a_killed_run_resumes_to_identical_arrays(tmp_path: Path) -> None:
    root = tmp_path / "songs"
    root.mkdir()
    for i in range(400):
        (root / f"s{i:03d}.mid").write_bytes(song(i, n=6))
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert prepare(str(root), "--out", str(whole), "--jobs", "1") == 0
    cmd = [sys.executable, "-m", "liveduet", "prepare", str(root), "--out", str(killed), "--jobs", "1", "--quiet"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not list((killed / ".partial").glob("shard-*.pkl")) and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.kill()
    proc.communicate()
    if (killed / "manifest.json").exists():
        pytest.skip("the run finished before it could be killed")
    assert subprocess.run([*cmd, "--resume"], capture_output=True).returncode == 0
    for name in ("tokens.npy", "offsets.npy", "split.npy", "perf.npy"):
        assert (whole / name).read_bytes() == (killed / name).read_bytes(), name


def test_progress_off_a_terminal_is_a_plain_line_with_rate_and_eta(capsys) -> None:
    from rich.console import Console

    from liveduet.music.reading import Progress

    with Progress(Console(file=io.StringIO()), total=1000, done=100) as progress:
        progress.started -= 10.0  # 10 s in
        progress.last -= 10.0
        progress.advance(400, skipped=3)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("reading: 500/1,000 files (50%), 40 files/s, ETA 0m12s, 3 skipped"), lines
    assert len(lines) == 2 and lines[1].startswith("reading: 500/1,000 files")  # and the total at the end


# -- bad input: one line each, exit 2 ----------------------------------------------------------


def test_unknown_prefix(tmp_path: Path, capsys) -> None:
    code = prepare(f"maestr:{tmp_path}", "--out", str(tmp_path / "out"))
    one_line_error(capsys, code, "unknown source prefix 'maestr:' (known: music21, maestro, giantmidi, lakh)")


@pytest.mark.parametrize("case", ["no_column", "not_utf8", "no_listing", "all_missing", "lakh_on_maestro",
                                  "giant_on_lakh", "not_a_folder"])
def test_bad_corpus_input_is_one_line(tmp_path: Path, capsys, case: str) -> None:
    root = tmp_path / "corpus"
    root.mkdir()
    listing = root / "maestro-v3.0.0.csv"
    src, message = f"maestro:{root}", ""
    if case == "no_column":
        listing.write_text("canonical_title,midi_filename\nWork,a.midi\n")
        message = "maestro-v3.0.0.csv is malformed: no column 'split'"
    elif case == "not_utf8":
        listing.write_bytes(b"\xff\xfe\x00garbage\x81\n")
        message = "maestro-v3.0.0.csv is malformed"
    elif case == "no_listing":
        (root / "a.mid").write_bytes(song(1))
        message = "no maestro-v*.csv or maestro-v*.json in"
    elif case == "all_missing":
        make_maestro(root)
        for f in root.rglob("*.midi"):
            f.unlink()
        message = "no tokens: all 11 files were skipped (first reason: listed in maestro-v3.0.0.csv but missing)"
    elif case == "lakh_on_maestro":
        make_maestro(root)
        src, message = f"lakh:{root}", "no Lakh files in"
    elif case == "giant_on_lakh":
        lakh_file(root, song(1))
        src, message = f"giantmidi:{root}", "no file is named like GiantMIDI's"
    else:
        src, message = f"lakh:{tmp_path / 'nowhere'}", "is not a folder"
    out = tmp_path / "out"
    one_line_error(capsys, prepare(src, "--out", str(out)), message)
    assert not out.exists()


def test_a_test_work_also_in_train_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "maestro"
    root.mkdir()
    rows = make_maestro(root, missing=0)
    rows[0]["canonical_composer"], rows[0]["canonical_title"] = rows[-1]["canonical_composer"], "WORK 9"
    with open(root / "maestro-v3.0.0.csv", "w", newline="") as fh:  # an edited listing: a work in two splits
        writer = csv.DictWriter(fh, MAESTRO_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "out"
    assert prepare(f"maestro:{root}", "--out", str(out), "--jobs", "1", "--transpose", "0,2") == 0
    split = load_dataset(out).manifest["split"]
    assert split["test_in_train_or_val"] == 1 and split["test_isolated"] is False


def test_resume_reads_a_damaged_shard_again(tmp_path: Path) -> None:
    root = tmp_path / "songs"
    root.mkdir()
    for i in range(40):
        (root / f"s{i:02d}.mid").write_bytes(song(i, n=6))
    whole, part_out = tmp_path / "whole", tmp_path / "part"
    assert prepare(str(root), "--out", str(whole), "--jobs", "1") == 0
    assert prepare(str(root), "--out", str(part_out), "--jobs", "1", "--stop-after", "3") == 130
    shard = sorted((part_out / ".partial").glob("shard-*.pkl"))[1]
    shard.write_bytes(shard.read_bytes()[:20])  # what a power cut can leave: renamed, not all written
    assert prepare(str(root), "--out", str(part_out), "--jobs", "1", "--resume") == 0
    for name in ("tokens.npy", "offsets.npy", "split.npy", "perf.npy"):
        assert (whole / name).read_bytes() == (part_out / name).read_bytes(), name
