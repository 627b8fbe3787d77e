"""Musical metrics on hand-made event sequences with known answers."""

from __future__ import annotations

import math

import pytest

from liveduet.music import metrics
from liveduet.music.tokens import BOS, EOS, TokenizerSettings, Vocabulary

C_MAJOR = [((p,), 12) for p in (60, 62, 64, 65, 67, 69, 71, 72)]
CHROMATIC = [((60 + i,), 3) for i in range(12)]


def test_pitch_class_entropy() -> None:
    assert metrics.pitch_class_entropy(CHROMATIC) == pytest.approx(math.log2(12))
    assert metrics.pitch_class_entropy([((60,), 12), ((72,), 12)]) == 0.0  # one pitch class
    assert metrics.pitch_class_entropy([((60, 67), 12)]) == pytest.approx(1.0)  # chord notes count
    assert metrics.pitch_class_entropy([]) == 0.0


def test_in_scale_ratio() -> None:
    assert metrics.in_scale_ratio(C_MAJOR) == 1.0
    d_major = [((pitches[0] + 2,), d) for pitches, d in C_MAJOR]
    assert metrics.in_scale_ratio(d_major) == 1.0  # any tonic
    assert metrics.in_scale_ratio(CHROMATIC) == pytest.approx(7 / 12)
    assert metrics.in_scale_ratio([*C_MAJOR, ((61,), 12), ((63,), 12)]) == pytest.approx(8 / 10)
    assert metrics.in_scale_ratio([((), 12)]) == 1.0


def test_range_and_polyphony() -> None:
    events = [((48, 60, 64), 12), ((), 6), ((72,), 6)]
    assert metrics.pitch_range(events) == 24
    assert metrics.mean_polyphony(events) == 2.0  # the rest does not count
    assert metrics.pitch_range([((), 12)]) == 0
    assert metrics.mean_polyphony([((), 12)]) == 0.0


def test_durations() -> None:
    events = [((60,), 12), ((62,), 12), ((), 6), ((64,), 3)]
    assert metrics.duration_histogram(events) == {3: 0.25, 6: 0.25, 12: 0.5}
    assert metrics.duration_entropy(events) == pytest.approx(1.5)
    assert metrics.duration_entropy(C_MAJOR) == 0.0


def test_longest_run() -> None:
    events = [((60,), 12), ((60,), 6), ((60,), 3), ((62,), 12), ((60,), 12), ((60, 64), 12), ((60, 64), 1)]
    assert metrics.longest_run(events) == 3  # durations may differ: the pitch set repeats
    assert metrics.longest_run(C_MAJOR) == 1
    assert metrics.longest_run([]) == 0


def test_repeated_4gram_share() -> None:
    riff = C_MAJOR[:4]
    assert metrics.repeated_ngram_share(C_MAJOR) == 0.0
    # riff×3 has 9 windows: 4 distinct (the riff's rotations), so 5 repeat an earlier one.
    assert metrics.repeated_ngram_share(riff * 3) == pytest.approx(5 / 9)
    # A different duration makes a different event.
    assert metrics.repeated_ngram_share([*riff, riff[0], riff[1], riff[2], ((65,), 6)]) == 0.0
    assert metrics.repeated_ngram_share(riff[:3]) == 0.0


def test_summarize_averages_sequences_and_pools_durations() -> None:
    out = metrics.summarize([C_MAJOR, CHROMATIC])
    assert out["sequences"] == 2
    assert out["events"] == (8 + 12) / 2
    assert out["in_scale_ratio"] == pytest.approx((1 + 7 / 12) / 2)
    assert out["duration_histogram"] == {"3": 12 / 20, "12": 8 / 20}
    assert set(metrics.SCALAR_METRICS) <= set(out)
    assert metrics.summarize([])["sequences"] == 0


def test_metrics_from_decoded_tokens() -> None:
    vocab = Vocabulary(TokenizerSettings(), chords=[(60, 64, 67)])
    tokens = [BOS, *vocab.encode([((60, 64, 67), 12), ((60, 64, 67), 12), ((), 6), ((67,), 6)]), EOS]
    m = metrics.sequence_metrics(vocab.decode(tokens))
    assert m["events"] == 4
    assert m["mean_polyphony"] == pytest.approx(7 / 3)
    assert m["longest_run"] == 2
    assert m["pitch_range"] == 7
