"""Wrong output paths and unreadable inputs are one line on stderr and exit 2, never a traceback
(issue #8, defects 3 and 4). Output paths are checked before anything slow starts: the commands
here get a model path that does not exist, so reaching the model would say something else."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mido
import pytest
from tmpfs import mounted_tmpfs

from liveduet.cli import main
from liveduet.clock import ManualClock
from liveduet.live.recorder import Recorder, build_midi, journal_path

NO_MODEL = "/nonexistent/model"


@pytest.fixture(scope="module")
def read_only() -> Iterator[Path]:
    """A read-only tmpfs (as root, chmod 555 is ignored; a read-only mount is not)."""
    with mounted_tmpfs("ro,size=64k", "liveduet-ro-") as folder:
        yield folder


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    session = tmp_path / "session.mid"
    build_midi([(0.0, "player", mido.Message("note_on", note=60, velocity=80)),
                (0.5, "player", mido.Message("note_off", note=60))], 120.0).save(session)
    rec = Recorder(tmp_path / "lost.mid", clock=ManualClock())
    rec.record_player(mido.Message("note_on", note=60, velocity=80), t=0.0)
    rec.close()  # a crash: the journal stays
    folder = tmp_path / "folder"
    folder.mkdir()
    return {"session": session, "journal": journal_path(rec.path), "folder": folder}


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], *words: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"liveduet {argv[0]}: error: "), err
    for word in words:
        assert word in err, err
    return err


def bad_places(tmp_path: Path, files: dict[str, Path], name: str) -> dict[str, tuple[Path, str]]:
    return {"missing folder": (tmp_path / "nowhere" / name, "does not exist"),
            "a folder": (files["folder"], "is a folder")}


@pytest.mark.parametrize("where", ["missing folder", "a folder", "read-only"])
@pytest.mark.parametrize("command", ["record", "stats", "recover", "report", "render", "generate"])
def test_unwritable_outputs(command: str, where: str, tmp_path: Path, files: dict[str, Path],
                            capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest) -> None:
    name = {"record": "x.mid", "stats": "x.jsonl", "recover": "x.mid", "report": "x.png", "render": "x.wav",
            "generate": "x.mid"}[command]
    if where == "read-only":
        out, words = request.getfixturevalue("read_only") / name, ("not writable (read-only file system)",)
    else:
        out, words = bad_places(tmp_path, files, name)[where][0], (bad_places(tmp_path, files, name)[where][1],)
    argv = {
        "record": ["run", "--in", str(files["session"]), "--model", NO_MODEL, "--record", str(out)],
        "stats": ["run", "--in", str(files["session"]), "--model", NO_MODEL, "--stats", str(out)],
        "recover": ["recover", str(files["journal"]), "--out", str(out), "--force"],
        "report": ["report", str(files["session"]), "--out", str(out), "--force"],
        "render": ["render", str(files["session"]), "--out", str(out), "--force"],
        "generate": ["generate", "--model", NO_MODEL, "--tokens", "4", "--temperature", "1", "--seed", "0",
                     "--out", str(out), "--force"],
    }[command]
    one_line_error(capsys, argv, str(out), *words)
    if where == "a folder":
        assert files["folder"].is_dir() and not any(files["folder"].iterdir())


def test_prepare_output_in_the_wrong_place(tmp_path: Path, files: dict[str, Path], read_only: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    src = str(files["session"])
    one_line_error(capsys, ["prepare", src, "--out", str(files["session"]), "--quiet"], "is a file, not a folder")
    one_line_error(capsys, ["prepare", src, "--out", str(read_only / "data"), "--quiet"], "read-only file system")


def test_record_journal_of_an_earlier_session_is_refused_before_the_model(
        tmp_path: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    one_line_error(capsys, ["run", "--in", str(files["session"]), "--model", NO_MODEL, "--record",
                            str(tmp_path / "lost.mid")], "liveduet recover")


@pytest.mark.parametrize("case", ["binary", "folder", "unreadable"])
def test_run_config_that_is_not_a_text_file(case: str, tmp_path: Path, files: dict[str, Path],
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"binary": files["session"], "folder": files["folder"], "unreadable": tmp_path / "locked.toml"}[case]
    if case == "unreadable":
        config.write_text("[tempo]\n")

        real_open = Path.open

        def refuse(self: Path, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
            if self == config:
                raise PermissionError(13, "Permission denied", str(self))
            return real_open(self, *args, **kwargs)

        monkeypatch.setattr(Path, "open", refuse)  # as root, chmod 000 would not stop the read
    word = {"binary": "not a TOML text file", "folder": "is a folder", "unreadable": "Permission denied"}[case]
    one_line_error(capsys, ["run", "--in", str(files["session"]), "--model", NO_MODEL, "--config", str(config)],
                   str(config), word)


@pytest.mark.parametrize(("tempo", "used"), [("Infinity", 120.0), ("NaN", 120.0), ("-5", 120.0), ("0", 120.0),
                                             ("1e9", 300.0), ("1e-9", 20.0), ('"fast"', 120.0)])
def test_recover_repairs_an_impossible_tempo(tempo: str, used: float, tmp_path: Path, files: dict[str, Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    journal = files["journal"]
    lines = journal.read_text().splitlines()
    header = json.loads(lines[0])
    header["tempo_bpm"] = 100.0
    text = json.dumps(header) + "\n" + "\n".join(lines[1:]) + "\n" + '{"tempo_bpm": ' + tempo + "}\n"
    text += '{"t": Infinity, "track": "player", "hex": "903e50"}\n{"alive": 1e300}\n{"alive": 2.5}\n'
    journal.write_text(text)
    out = tmp_path / "rescued.mid"
    assert main(["recover", str(journal), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"at {used:g} bpm" in said and f"used {used:g} bpm" in said and "skipped 2 damaged line(s)" in said
    mid = mido.MidiFile(out)
    assert mido.tempo2bpm(mid.tracks[0][0].tempo) == pytest.approx(used, rel=1e-6)
    assert mid.length == pytest.approx(2.5, abs=0.01)  # seconds survive any tempo
