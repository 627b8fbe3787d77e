"""`render` reads the file with the capped reader before fluidsynth sees it (issue #8, defect 5):
a broken delta time once rendered 3.8 GB of WAV, a truncated file a 300-byte WAV and exit 0."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from liveduet.cli import main
from liveduet.music.midifile import parse_midi


def vlq(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def smf(*events: tuple[int, bytes], division: int = 480) -> bytes:
    body = b"".join(vlq(d) + m for d, m in events) + b"\x00\xff\x2f\x00"
    return b"MThd\x00\x00\x00\x06\x00\x00\x00\x01" + division.to_bytes(2, "big") + b"MTrk" + len(body).to_bytes(
        4, "big") + body


NOTE = ((0, b"\x90\x3c\x50"), (480, b"\x80\x3c\x00"))


def render(tmp_path: Path, data: bytes, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    src, out = tmp_path / "in.mid", tmp_path / "out.wav"
    src.write_bytes(data)
    started = time.monotonic()
    code = main(["render", str(src), "--out", str(out)])
    assert time.monotonic() - started < 5
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["in.mid"]  # no WAV, no temp
    return code, capsys.readouterr().err


def test_a_broken_delta_time_is_refused_before_fluidsynth(tmp_path: Path, capsys) -> None:
    data = smf(NOTE[0], (0x0FFFFFFF, b"\x80\x3c\x00"))
    assert len(data) < 50  # like the 47-byte file: one delta of 559,240 beats
    code, err = render(tmp_path, data, capsys)
    assert code == 2 and err.count("\n") == 1 and "broken delta time" in err and "in.mid" in err


def test_a_truncated_file_fails_with_one_line(tmp_path: Path, capsys) -> None:
    code, err = render(tmp_path, smf(*NOTE)[:-6], capsys)
    assert code == 2 and err.count("\n") == 1 and "truncated" in err


def test_a_file_over_the_render_length_cap(tmp_path: Path, capsys) -> None:
    # 20,000 beats at 120 bpm: under the reader's beat cap, 2.8 hours of audio (7 GB of WAV).
    code, err = render(tmp_path, smf(NOTE[0], (480 * 20_000, b"\x80\x3c\x00")), capsys)
    assert code == 2 and err.count("\n") == 1 and "over the render cap" in err


def test_length_in_seconds_follows_the_tempo_map() -> None:
    tempo60 = b"\xff\x51\x03" + (1_000_000).to_bytes(3, "big")
    midi = parse_midi(smf((0, b"\x90\x3c\x50"), (960, tempo60), (960, b"\x80\x3c\x00"), (480, b"\xff\x01\x00")))
    assert midi.end_beat == 5.0  # the last event (a text meta event) sets the length
    assert midi.seconds == pytest.approx(2 * 0.5 + 3 * 1.0)
