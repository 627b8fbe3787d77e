"""`liveduet evaluate --live`: held-out calls through the daemon's Session in simulated time, with the
shipped model; and the one-line errors of its command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from liveduet.cli import main
from liveduet.live.evaluate import LiveEvalOptions, excerpts, run_live_eval, targets_met
from liveduet.live.settings import LiveSettings
from liveduet.model.runtime import ModelRuntime
from liveduet.music.dataset import load_dataset, write_dataset
from liveduet.music.tokens import BOS, EOS, Vocabulary

MODEL = Path(__file__).resolve().parents[1] / "models" / "default"


def tune(vocab: Vocabulary, tonic: int, beats: int = 16) -> np.ndarray:
    """A folk-like tune: scale steps in 8ths and quarters, a long note every 2 bars."""
    steps = [0, 2, 4, 5, 7, 5, 4, 2, 0, 4, 7, 12, 7, 4, 2, 0]
    events, pos, i = [], 0, 0
    while pos < beats * 12:
        dur = 24 if pos % 96 == 72 else (6 if i % 3 else 12)
        events.append(((tonic + steps[i % len(steps)],), dur))
        pos += dur
        i += 1
    return np.array([BOS, *vocab.encode(events), EOS], dtype=np.int32)


@pytest.fixture(scope="module")
def folk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    vocab = Vocabulary.load(MODEL / "vocab.json")
    pieces = [tune(vocab, t) for t in (60, 62, 67, 65, 57)]
    out = tmp_path_factory.mktemp("data") / "folk"
    manifest = {"pieces": [{"name": f"tune{i}", "transpose": 0, "split": "val"} for i in range(len(pieces))]}
    write_dataset(out, pieces, [1] * len(pieces), vocab, manifest)
    return out


def test_excerpts_cut_calls_and_continuations(folk: Path) -> None:
    items = excerpts(load_dataset(folk), 8, 10)
    assert len(items) == 5
    assert all(max(n[0] for n in x.call) < 8 and min(n[0] for n in x.composer) >= 0 for x in items)


def test_live_eval_runs_the_daemon_path_with_the_shipped_model(folk: Path) -> None:
    runtime = ModelRuntime.load(MODEL)
    report = run_live_eval(runtime, load_dataset(folk), LiveSettings(), LiveEvalOptions(calls=4, beats=8, seed=1))
    assert report["calls_played"] == 4 and report["answered"] == 4
    assert report["false_ends"] == 0
    assert report["entry_beats_median"] <= 1.0
    for key in ("pc_cosine", "rhythm_overlap", "register_gap", "in_key", "texture_gap"):
        row = report["measures"][key]
        assert row["answer"] is not None and row["composer"] is not None and row["another"] is not None
    assert report["simulated_s"] > report["wall_s"], "faster than real time"
    assert set(targets_met(report)) >= {"answered 100%", "false ends <= 5%"}
    again = run_live_eval(runtime, load_dataset(folk), LiveSettings(), LiveEvalOptions(calls=4, beats=8, seed=1))
    assert [r.get("answer") for r in again["calls"]] == [r.get("answer") for r in report["calls"]], "seeded"


def test_live_eval_cli(folk: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "live.json"
    rc = main(["evaluate", "--live", "--data", str(folk), "--model", str(MODEL), "--calls", "3", "--quiet",
               "--set", "answer.memory=session", "--out", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["settings"]["answer"]["memory"] == "session"
    assert "pitch-class cosine" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["--set", "answer.memory"], "expected SECTION.KEY=VALUE"),
    (["--set", "answer.memory=sometimes"], "answer.memory = 'sometimes' is out of range"),
    (["--set", "answer.nope=1"], "[answer] unknown key 'nope'"),
    (["--calls", "1"], "--calls and --beats must be at least 2"),
    (["--out", "/nonexistent/folder/report.json"], "cannot write the report"),
])
def test_live_eval_bad_input_is_one_line(folk: Path, capsys: pytest.CaptureFixture, args: list[str],
                                         message: str) -> None:
    rc = main(["evaluate", "--live", "--data", str(folk), "--model", str(MODEL), "--quiet", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and "\n" not in err


@pytest.mark.parametrize("manifest", ["{not json", "[1, 2]"])
def test_live_eval_damaged_data_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                   manifest: str) -> None:
    (tmp_path / "manifest.json").write_text(manifest)
    rc = main(["evaluate", "--live", "--data", str(tmp_path), "--model", str(MODEL), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "manifest.json" in err and "\n" not in err
