"""Real corpora as `liveduet prepare` sources: `maestro:PATH`, `giantmidi:PATH`, `lakh:PATH`.

Each layout reader turns a downloaded corpus folder into Tasks that carry what the layout knows:
the official split (MAESTRO), composer and title (MAESTRO, GiantMIDI), and the rules a crawled
collection needs (Lakh: a program filter, duplicates removed by content MD5, a track cap, absurd
tempo maps skipped). A file the layout lists but that is missing becomes a "skip" task, so it is
counted in the manifest like any unreadable file. A folder of another layout, a malformed list
file or an unknown prefix is a CorpusError: one line, exit 2.

Accepted layouts (docs/data-format.md, "Real corpora"):

- MAESTRO: PATH holds `maestro-v*.csv` or `maestro-v*.json` (the highest version wins; CSV before
  JSON) beside the year folders; `midi_filename` and `split` (train/validation/test) are required,
  `canonical_composer`, `canonical_title`, `year` are kept when present.
- GiantMIDI-Piano: files named `Surname, Firstname, Title, YouTubeID.mid`. The curated subset is
  read when PATH holds a `surname_checked_midis*` folder, or a list file `curated*.txt` (one file
  name, stem or YouTube ID a line) or `curated*.csv` / `*_split.csv` (rows with
  `surname_in_youtube_title` = 1 when that column exists; names from `midi_filename`, `filename`,
  `file`, `name` or `youtube_id`, else the first column); otherwise every file.
- Lakh MIDI: LMD-full `lmd_full/<0-f>/<md5>.mid` or LMD-matched `lmd_matched/A/B/C/TR…/<md5>.mid`
  (PATH may be either folder or the one above them).
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

from liveduet.errors import CorpusError
from liveduet.music.corpus import MIDI_SUFFIXES, Task

PREFIXES = ("music21", "maestro", "giantmidi", "lakh")
PROGRAM_SETS: dict[str, frozenset[int] | None] = {
    "piano": frozenset(range(8)),  # GM 1-8: the piano family
    "melodic": frozenset(range(112)),  # all but percussive (113-120) and sound effects (121-128)
    "all": None,
}
SPLITS = {"train": "train", "validation": "val", "test": "test"}
_PREFIX = re.compile(r"^([A-Za-z][A-Za-z0-9_-]+):")  # two characters at least: C:\ is a drive
_MD5 = re.compile(r"^[0-9a-f]{32}$")
_MSD = re.compile(r"^TR[A-Z0-9]{16}$")
_VERSION = re.compile(r"maestro-v(\d+(?:\.\d+)*)")


def source_prefix(src: str) -> str | None:
    """'maestro:/data/m' → 'maestro'; a plain path → None; an unknown prefix → CorpusError."""
    match = _PREFIX.match(src)
    if match is None or os.path.exists(src):  # a file may have a colon in its name
        return None
    prefix = match.group(1)
    if prefix not in PREFIXES:
        raise CorpusError(f"unknown source prefix '{prefix}:' (known: {', '.join(PREFIXES)})")
    return prefix


def expand(prefix: str, src: str, programs: str = "melodic", max_tracks: int = 32,
           describe: dict[str, str] | None = None) -> list[Task]:
    """A corpus source → tasks. `describe` gets a line per source for the manifest's split
    and layout notes."""
    root = Path(src.split(":", 1)[1])
    if not str(root) or not root.is_dir():
        raise CorpusError(f"{src}: {root} is not a folder (give the corpus' root folder)")
    if prefix == "maestro":
        tasks, note = _maestro(root, src)
    elif prefix == "giantmidi":
        tasks, note = _giantmidi(root, src)
    else:
        if programs not in PROGRAM_SETS:
            raise CorpusError(f"unknown program set {programs!r} (known: {', '.join(PROGRAM_SETS)})")
        tasks, note = _lakh(root, src, PROGRAM_SETS[programs], max_tracks)
    if describe is not None:
        describe[src] = note
    return tasks


# -- MAESTRO -------------------------------------------------------------------------------------


def _maestro(root: Path, src: str) -> tuple[list[Task], str]:
    lists = [p for p in root.iterdir() if p.is_file() and _VERSION.match(p.name) and p.suffix in (".csv", ".json")]
    if not lists:
        raise CorpusError(f"{src}: no maestro-v*.csv or maestro-v*.json in {root} (not the MAESTRO folder?)")

    def rank(p: Path) -> tuple:
        version = tuple(int(x) for x in _VERSION.match(p.name).group(1).split("."))  # type: ignore[union-attr]
        return (version, p.suffix == ".csv")

    listing = max(lists, key=rank)
    rows = _maestro_rows(listing)
    if not rows:
        raise CorpusError(f"{listing} lists no files")
    tasks = []
    for i, row in enumerate(rows, start=1):
        name = (row.get("midi_filename") or "").strip()
        split = SPLITS.get((row.get("split") or "").strip())
        path = root / name
        if not name or split is None:
            reason = (f"{listing.name} row {i}: no midi_filename" if not name
                      else f"{listing.name} row {i}: unknown split {row.get('split')!r}")
            tasks.append(Task("skip", str(path) if name else f"{listing}#{i}", src, reason=reason))
            continue
        if not path.is_file():
            tasks.append(Task("skip", str(path), src, name=name, reason=f"listed in {listing.name} but missing"))
            continue
        meta = tuple((key, str(row[col]).strip()) for key, col in
                     (("composer", "canonical_composer"), ("title", "canonical_title"), ("year", "year"))
                     if row.get(col) not in (None, ""))
        tasks.append(Task("midi", str(path), src, name=name, split=split, meta=meta))
    return tasks, f"official: {listing.name}"


def _maestro_rows(listing: Path) -> list[dict]:
    """The rows of a MAESTRO metadata file. CSV, or JSON as columns (v2, v3) or records (v1)."""
    try:
        text = listing.read_text(encoding="utf-8-sig")  # a BOM from a spreadsheet is no error
        if listing.suffix == ".csv":
            reader = csv.DictReader(text.splitlines())
            columns = reader.fieldnames or []
            rows = list(reader)
        else:
            data = json.loads(text)
            if isinstance(data, dict):  # {"column": {"0": value, ...}, ...}
                columns = list(data)
                index = sorted({k for col in data.values() if isinstance(col, dict) for k in col},
                               key=lambda k: (len(k), k))
                rows = [{c: data[c].get(k) if isinstance(data[c], dict) else None for c in columns} for k in index]
            elif isinstance(data, list) and all(isinstance(r, dict) for r in data):
                rows = data
                columns = sorted({c for r in rows for c in r})
            else:
                raise ValueError("neither columns nor a list of records")
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as err:
        raise CorpusError(f"{listing} is malformed: {str(err).splitlines()[0] if str(err) else err}") from err
    missing = [c for c in ("midi_filename", "split") if c not in columns]
    if missing:
        raise CorpusError(f"{listing} is malformed: no column {', '.join(map(repr, missing))} "
                          f"(columns: {', '.join(map(str, columns[:8])) or 'none'})")
    return rows


# -- GiantMIDI-Piano -----------------------------------------------------------------------------


def giantmidi_fields(stem: str) -> dict[str, str]:
    """'Chopin, Frédéric, Nocturne Op.9, abcdefghijk' → composer, title, youtube_id."""
    parts = stem.split(", ")
    if len(parts) >= 4:
        return {"composer": f"{parts[0]}, {parts[1]}", "title": ", ".join(parts[2:-1]), "youtube_id": parts[-1]}
    if len(parts) == 3:
        return {"composer": parts[0], "title": parts[1], "youtube_id": parts[2]}
    return {}


def _giantmidi(root: Path, src: str) -> tuple[list[Task], str]:
    curated_dirs = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("surname_checked_midis"))
    base = curated_dirs[-1] if curated_dirs else root
    files = _midi_files(base)
    if not files:
        raise CorpusError(f"{src}: no MIDI files in {base}")
    if not any(giantmidi_fields(p.stem) for p in files):
        raise CorpusError(f"{src}: no file is named like GiantMIDI's 'Surname, Firstname, Title, YouTubeID.mid' "
                          f"(not the GiantMIDI-Piano folder?)")
    keep: set[str] | None = None
    note = f"curated subset: folder {base.name}" if curated_dirs else "all files (no curated list)"
    if not curated_dirs:
        lists = sorted([*root.glob("curated*.txt"), *root.glob("curated*.csv"), *root.glob("*_split.csv")])
        if lists:
            keep = _kept_names(lists[0])
            note = f"curated subset: {lists[0].name}"
    tasks, found = [], set()
    for path in files:
        fields = giantmidi_fields(path.stem)
        ids = {path.name, path.stem, fields.get("youtube_id", "")}
        if keep is not None and not ids & keep:
            continue
        found |= ids
        meta = tuple((k, v) for k, v in fields.items() if k != "youtube_id")
        tasks.append(Task("midi", str(path), src, name=str(path.relative_to(base)), meta=meta))
    if keep is not None:
        for entry in sorted(keep - found):
            tasks.append(Task("skip", str(root / entry), src, reason=f"listed in {note.split(': ', 1)[1]} but missing"))
    return tasks, f"by name hash; {note}"


def _kept_names(listing: Path) -> set[str]:
    try:
        text = listing.read_text(encoding="utf-8-sig")  # a BOM from a spreadsheet is no error
        if listing.suffix == ".txt":
            return {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}
        reader = csv.DictReader(text.splitlines())
        columns = reader.fieldnames or []
        if not columns:
            raise ValueError("no header")
        column = next((c for c in ("midi_filename", "filename", "file", "name", "youtube_id") if c in columns),
                      columns[0])
        rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as err:
        raise CorpusError(f"{listing} is malformed: {err}") from err
    if "surname_in_youtube_title" in columns:
        rows = [r for r in rows if str(r.get("surname_in_youtube_title")).strip() in ("1", "True", "true")]
    return {str(r[column]).strip() for r in rows if r.get(column)}


# -- Lakh MIDI -----------------------------------------------------------------------------------


def _lakh(root: Path, src: str, programs: frozenset[int] | None, max_tracks: int) -> tuple[list[Task], str]:
    tasks, layouts = [], set()
    for path in _midi_files(root):
        rel = path.relative_to(root)
        if not _MD5.match(path.stem):
            tasks.append(Task("skip", str(path), src, reason="not a Lakh file name (<md5>.mid)"))
            continue
        parent = rel.parent.name
        meta: tuple[tuple[str, str], ...] = ()
        if _MSD.match(parent):
            layouts.add("lmd_matched")
            meta = (("msd_id", parent),)
        elif len(parent) == 1 and parent in "0123456789abcdef":
            layouts.add("lmd_full")
        else:
            layouts.add("flat")
        tasks.append(Task("midi", str(path), src, name=str(rel), meta=meta, programs=programs,
                          max_tracks=max_tracks, check_tempo=True, dedupe=True))
    if not layouts:
        raise CorpusError(f"{src}: no Lakh files in {root} (expected lmd_full/<0-f>/<md5>.mid or "
                          f"lmd_matched/A/B/C/TR…/<md5>.mid)")
    return tasks, f"by name hash; layout {'+'.join(sorted(layouts))}"


def _midi_files(root: Path) -> list[Path]:
    """MIDI files under `root`, sorted; os.walk keeps 170k files cheap (no stat per file)."""
    out = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        out += [Path(folder, n) for n in names if os.path.splitext(n)[1].lower() in MIDI_SUFFIXES]
    out.sort()
    return out
