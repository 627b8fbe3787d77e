"""The vocabulary and the streaming tokenizer: grid, chords, pedal, rests, caps, nearest chord, live feed."""

from __future__ import annotations

import json
import math
import random

import mido
import pytest

from liveduet.errors import VocabularyError
from liveduet.music.midifile import parse_midi
from liveduet.music.stream import StreamTokenizer, tokenize_notes
from liveduet.music.tokens import (
    BOS,
    EOS,
    PAD,
    Event,
    TokenizerSettings,
    Vocabulary,
    build_vocabulary,
    duration_name,
    parse_pitch,
    pitchset_name,
    transpose_events,
)

S = TokenizerSettings()
C4, D4, E4, F4, G4 = 60, 62, 64, 65, 67


def tok(notes: list[tuple[float, float, int]], pedal: list[tuple[float, bool]] = ()) -> list[Event]:
    return tokenize_notes(notes, S, pedal)


def midi_bytes(*tracks: list[mido.Message | mido.MetaMessage], tpb: int = 480) -> bytes:
    """A type-1 file from message lists (times are deltas in ticks), via mido's writer."""
    import io

    mid = mido.MidiFile(type=1, ticks_per_beat=tpb)
    for msgs in tracks:
        mid.tracks.append(mido.MidiTrack(msgs))
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


# -- settings and the grid --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("beat", "twelfths"),
    [
        (0.0, 0), (0.1, 0), (0.124, 0),
        (0.125, 0),  # halfway between 0 and a 16th: ties go earlier
        (0.126, 3), (0.25, 3), (0.29, 3),
        (0.3, 4), (1 / 3, 4),  # the triplet
        (0.5, 6), (2 / 3, 8), (0.75, 9), (0.85, 9),
        (0.9, 12),  # rounds up into the next beat
        (2.0, 24), (3 + 1 / 3, 40), (7 + 2 / 3, 92),
    ],
)
def test_quantize_to_16th_and_triplet_grid(beat: float, twelfths: int) -> None:
    assert S.quantize(beat) == twelfths


@pytest.mark.parametrize("grid", [(0, 3, 4, 6, 8, 9), (0, 6), (0, 4, 8), tuple(range(12)), (0, 8, 3)])
def test_quantize_matches_the_plain_rule(grid: tuple[int, ...]) -> None:
    """quantize's lookup equals 'nearest grid point, ties earlier' on random beats and at every midpoint."""
    settings = TokenizerSettings(grid=grid)
    points = (*grid, 12)

    def plain(beat: float) -> int:
        whole = int(beat // 1)
        frac = (beat - whole) * 12
        return whole * 12 + min(points, key=lambda g: (abs(frac - g), g))

    rng = random.Random(5)
    beats = [rng.uniform(0, 500) for _ in range(20_000)]
    ordered = sorted(points)
    for whole in range(4):
        for a, b in zip(ordered, ordered[1:]):
            mid = whole + (a + b) / 24
            beats += [mid, math.nextafter(mid, 0), math.nextafter(mid, 99)]
    assert [settings.quantize(b) for b in beats] == [plain(b) for b in beats]


def test_next_grid() -> None:
    assert [S.next_grid(p) for p in (0, 3, 4, 6, 8, 9, 11, 12)] == [3, 4, 6, 8, 9, 12, 12, 15]


@pytest.mark.parametrize(
    "bad",
    [dict(grid=(3, 6)), dict(grid=(0, 12)), dict(max_duration=0), dict(min_pitch=90, max_pitch=80),
     dict(chord_window=0.5)],
)
def test_settings_refuse_bad_values(bad: dict) -> None:
    with pytest.raises(VocabularyError):
        TokenizerSettings(**bad)


def test_triplets_and_sixteenths_become_exact_durations() -> None:
    triplets = [(k / 3, (k + 1) / 3, C4 + k) for k in range(3)]
    sixteenths = [(1 + k / 4, 1 + (k + 1) / 4, D4 + k) for k in range(4)]
    assert tok(triplets + sixteenths) == [
        ((C4,), 4), ((C4 + 1,), 4), ((C4 + 2,), 4), ((D4,), 3), ((D4 + 1,), 3), ((D4 + 2,), 3), ((D4 + 3,), 3),
    ]


def test_quantisation_error_does_not_accumulate() -> None:
    # 40 notes each played 0.26 beats apart (slightly slow 16ths): each onset is quantised on the
    # absolute grid, so durations are differences of grid points and they sum to the span played.
    notes = [(k * 0.26, (k + 1) * 0.26, C4) for k in range(40)]
    events = tok(notes)
    assert sum(d for _, d in events[:-1]) == S.quantize(39 * 0.26) == 123
    # quantising each duration alone (0.26 → a 16th) would drift to 39 × 3 = 117 twelfths


# -- chords, rests, pedal, caps ----------------------------------------------------------------


def test_melody() -> None:
    assert tok([(0, 1, C4), (1, 2, D4), (2, 4, E4)]) == [((C4,), 12), ((D4,), 12), ((E4,), 24)]


def test_same_tick_is_one_chord_in_files() -> None:
    notes = [(0, 2, G4), (0, 2, C4), (0, 2, E4), (2, 3, F4)]
    assert tok(notes) == [((C4, E4, G4), 24), ((F4,), 12)]


def test_onsets_on_one_grid_point_merge() -> None:
    # 0.0 and 0.05 beats are different ticks but quantise to the same grid point: one chord.
    assert tok([(0.0, 1, C4), (0.05, 1, E4)]) == [((C4, E4), 12)]


def test_chord_window_live() -> None:
    # 120 bpm: 20 ms = 0.04 beats (inside a 0.06-beat window), 80 ms = 0.16 beats (outside).
    near = StreamTokenizer(S, window_beats=0.06)
    assert near.note_on(1.0, C4) == []
    assert near.note_on(1.04, E4) == []
    assert near.flush(2.0) == [((C4, E4), 12)]

    far = StreamTokenizer(S, window_beats=0.06)
    far.note_on(1.0, C4)
    far.note_on(1.16, E4)  # 1.16 quantises to 1 1/4
    assert far.flush(2.0) == [((C4,), 3), ((E4,), 9)]


def test_advance_emits_an_event_once_the_next_window_closes() -> None:
    live = StreamTokenizer(S, window_beats=0.06)
    live.note_on(0.0, C4)
    live.note_off(0.5, C4)
    assert live.note_on(1.0, D4) == []
    assert live.advance(1.03) == []  # D4's window is still open: more notes could join its chord
    assert live.advance(1.07) == [((C4,), 6), ((), 6)]
    assert live.advance(1.5) == []
    assert live.flush(2.0) == [((D4,), 12)]


def test_rests() -> None:
    assert tok([(0, 1, C4), (3, 4, D4)]) == [((C4,), 12), ((), 24), ((D4,), 12)]
    # a gap under half a grid step is not a rest: the release quantises onto the next onset
    assert tok([(0, 0.95, C4), (1, 2, D4)]) == [((C4,), 12), ((D4,), 12)]
    # a very short note still lasts one grid step
    assert tok([(0, 0.01, C4), (2, 3, D4)]) == [((C4,), 3), ((), 21), ((D4,), 12)]


def test_overlapping_notes_are_legato_not_chords() -> None:
    assert tok([(0, 1.5, C4), (1, 2, D4)]) == [((C4,), 12), ((D4,), 12)]


def test_sustain_pedal_extends_durations() -> None:
    notes = [(0, 1, C4), (4, 5, E4)]
    assert tok(notes) == [((C4,), 12), ((), 36), ((E4,), 12)]
    # released at 1 under the pedal (down at 0.5, up at 3): it sounds until the pedal lifts
    assert tok(notes, [(0.5, True), (3.0, False)]) == [((C4,), 36), ((), 12), ((E4,), 12)]


def test_pedal_lifted_during_silence_changes_nothing() -> None:
    notes = [(0, 1, C4), (4, 5, E4)]
    assert tok(notes, [(2.0, True), (3.0, False)]) == [((C4,), 12), ((), 36), ((E4,), 12)]


def test_pedal_holds_a_note_struck_later() -> None:
    notes = [(0, 0.5, C4), (1, 1.5, D4), (4, 5, E4)]
    assert tok(notes, [(0.25, True), (2.75, False)]) == [((C4,), 12), ((D4,), 21), ((), 15), ((E4,), 12)]


def test_long_notes_and_silences_are_capped() -> None:
    cap = S.max_duration
    assert tok([(0, 20, C4), (20, 21, D4)]) == [((C4,), cap), ((D4,), 12)]
    assert tok([(0, 1, C4), (30, 31, D4)]) == [((C4,), 12), ((), cap), ((D4,), 12)]
    assert tok([(0, 20, C4)]) == [((C4,), cap)]


def test_zero_length_note_is_short_not_endless() -> None:
    assert tok([(0, 0, C4), (2, 3, D4)]) == [((C4,), 3), ((), 21), ((D4,), 12)]


def test_unmatched_note_off_is_ignored() -> None:
    t = StreamTokenizer(S)
    assert t.note_off(0.5, C4) == []
    t.note_on(1.0, D4)
    assert t.flush(2.0) == [((D4,), 12)]


# -- MIDI files through the capped reader ------------------------------------------------------


def test_velocity_zero_note_on_is_a_note_off() -> None:
    data = midi_bytes([
        mido.Message("note_on", note=C4, velocity=80, time=0),
        mido.Message("note_on", note=C4, velocity=0, time=480),  # release after one beat
        mido.Message("note_on", note=D4, velocity=80, time=480),  # one beat of rest
        mido.Message("note_off", note=D4, velocity=0, time=480),
    ])
    notes = parse_midi(data)
    assert notes.notes == [(0.0, 1.0, C4), (2.0, 3.0, D4)]
    assert tokenize_notes(notes.notes, S, notes.pedal) == [((C4,), 12), ((), 12), ((D4,), 12)]


def test_sustain_pedal_from_a_file() -> None:
    data = midi_bytes([
        mido.Message("note_on", note=C4, velocity=80, time=0),
        mido.Message("control_change", control=64, value=127, time=240),
        mido.Message("note_off", note=C4, time=240),
        mido.Message("control_change", control=64, value=0, time=960),
        mido.Message("note_on", note=E4, velocity=80, time=480),
        mido.Message("note_off", note=E4, time=480),
    ])
    notes = parse_midi(data)
    assert notes.pedal == [(0.5, True), (3.0, False)]
    assert tokenize_notes(notes.notes, S, notes.pedal) == [((C4,), 36), ((), 12), ((E4,), 12)]


def test_zero_length_note_in_a_file() -> None:
    data = midi_bytes([
        mido.Message("note_on", note=C4, velocity=80, time=0),
        mido.Message("note_off", note=C4, time=0),
        mido.Message("note_on", note=D4, velocity=80, time=960),
        mido.Message("note_off", note=D4, time=480),
    ])
    notes = parse_midi(data)
    assert notes.notes == [(0.0, 0.0, C4), (2.0, 3.0, D4)]
    assert tokenize_notes(notes.notes, S, notes.pedal)[0] == ((C4,), 3)


def test_repeated_note_at_the_same_tick_ends_then_strikes() -> None:
    data = midi_bytes([
        mido.Message("note_on", note=C4, velocity=80, time=0),
        mido.Message("note_off", note=C4, time=480),
        mido.Message("note_on", note=C4, velocity=80, time=0),
        mido.Message("note_off", note=C4, time=480),
    ])
    notes = parse_midi(data)
    assert notes.notes == [(0.0, 1.0, C4), (1.0, 2.0, C4)]
    assert tokenize_notes(notes.notes, S) == [((C4,), 12), ((C4,), 12)]


# -- the vocabulary ----------------------------------------------------------------------------


def test_vocabulary_layout() -> None:
    chords = [(C4, E4, G4), (D4, F4)]
    v = Vocabulary(S, chords)
    assert (PAD, BOS, EOS) == (0, 1, 2)
    assert v.tokens[:3] == ["<pad>", "<bos>", "<eos>"]
    assert len(v) == 3 + S.max_duration + 1 + (S.max_pitch - S.min_pitch + 1) + len(chords)
    assert v.tokens[v.duration_id(12)] == "d1" and v.tokens[v.duration_id(4)] == "d1/3"
    assert v.tokens[v.duration_id(1)] == "d1/12" and v.tokens[v.duration_id(96)] == "d8"
    assert v.tokens[v.rest_id] == "R" and v.pitch_id(()) == v.rest_id
    assert v.tokens[v.pitch_id([C4])] == "C4"
    assert v.tokens[v.pitch_id([G4, C4, E4])] == "C4+E4+G4"
    assert all(v.duration_of(v.duration_id(d)) == d for d in range(1, S.max_duration + 1))
    assert v.duration_id(0) == v.duration_id(1) and v.duration_id(500) == v.duration_id(S.max_duration)
    assert v.duration_mask.sum() == S.max_duration and v.pitch_mask.sum() == len(v.pitchsets)
    assert not (v.duration_mask & v.pitch_mask).any()
    with pytest.raises(VocabularyError):
        v.duration_of(v.rest_id)
    with pytest.raises(VocabularyError):
        v.pitches_of(BOS)


def test_names() -> None:
    assert [parse_pitch(n) for n in ("C4", "C#4", "A0", "C8", "B-1")] == [60, 61, 21, 108, 11]
    assert pitchset_name((60, 64, 67)) == "C4+E4+G4" and pitchset_name(()) == "R"
    assert duration_name(6) == "d1/2" and duration_name(18) == "d3/2"
    for bad in ("H4", "C", "c4", ""):
        with pytest.raises(VocabularyError):
            parse_pitch(bad)


def test_encode_decode() -> None:
    v = Vocabulary(S, [(C4, E4, G4)])
    events = [((C4, E4, G4), 12), ((), 6), ((D4,), 4)]
    ids = v.encode(events)
    assert list(v.decode([BOS, *ids, EOS])) == events
    # orphan durations and pitches are dropped so any sampled sequence decodes
    assert list(v.decode([ids[1], ids[0], ids[2], ids[3], ids[0]])) == [((), 6)]


def test_build_vocabulary_keeps_frequent_chords_most_frequent_first() -> None:
    a, b, c = (C4, E4, G4), (D4, F4), (C4, G4)
    pieces = [[(a, 12), (b, 12), ((C4,), 12)] * 2, [(b, 12), (c, 6), (b, 3)]]
    v, counts = build_vocabulary(pieces, S, min_count=2)
    assert counts == {a: 2, b: 4, c: 1}
    assert [p for p in v.pitchsets if len(p) > 1] == [b, a]


# -- the nearest-chord rule --------------------------------------------------------------------


def test_nearest_fewest_pitches_added_or_removed() -> None:
    v = Vocabulary(S, [(C4, E4, G4), (C4, 63, G4)])
    assert v.pitch_id([C4, E4, G4, 72]) == v.pitch_id([C4, E4, G4])
    assert v.misses == 1


def test_nearest_then_closest_top_note() -> None:
    a, b = (C4, E4, G4), (E4, G4, 70)
    v = Vocabulary(S, [a, b])
    assert v.pitch_id([C4, E4, G4, 70]) == v.pitch_id(b)  # both one pitch away; b keeps the top


def test_nearest_then_closest_bass() -> None:
    a, b = (C4, E4, G4), (55, E4, G4)
    v = Vocabulary(S, [b, a])  # b is more frequent: only the bass rule picks a
    assert v.pitch_id([58, E4, G4]) == v.pitch_id(a)


def test_nearest_then_most_frequent() -> None:
    major, minor = (C4, E4, G4), (C4, 63, G4)
    assert Vocabulary(S, [major, minor]).pitch_id([C4, G4]) == Vocabulary(S, [major, minor]).pitch_id(major)
    assert Vocabulary(S, [minor, major]).pitch_id([C4, G4]) == Vocabulary(S, [minor, major]).pitch_id(minor)


def test_nearest_matches_the_documented_rule_by_brute_force() -> None:
    rng = random.Random(2)
    chords = {tuple(sorted(rng.sample(range(40, 90), rng.randint(2, 6)))) for _ in range(800)}
    v = Vocabulary(S, sorted(chords))

    def rule(q: tuple[int, ...]) -> int:
        def key(i: int) -> tuple[int, int, int, int]:
            c = v.pitchsets[i]
            return (len(set(c) ^ set(q)), abs((c[-1] if c else -100) - q[-1]), abs((c[0] if c else -100) - q[0]), i)

        return v.rest_id + min(range(len(v.pitchsets)), key=key)

    queries = [tuple(sorted(rng.sample(range(21, 109), rng.randint(1, 9)))) for _ in range(300)]
    queries += [tuple(sorted({p + rng.choice((-1, 0, 1)) for p in c})) for c in list(chords)[:300]]
    assert [v.nearest(q) for q in queries] == [rule(q) for q in queries]


@pytest.mark.parametrize(
    "pitches",
    [list(range(60, 70)), [0, 5, 127], [10], [120, 125], list(range(128)), [-3, 200], [C4, C4, C4]],
)
def test_any_pitch_set_maps_to_a_pitch_token(pitches: list[int]) -> None:
    v = Vocabulary(S, [(C4, E4, G4)])
    token = v.pitch_id(pitches)
    assert v.pitch_mask[token]
    assert all(S.min_pitch <= p <= S.max_pitch for p in v.pitches_of(token))


def test_out_of_range_pitches_fold_by_octaves() -> None:
    v = Vocabulary(S)
    assert v.fold([0, 10, 109, 120, 127]) == (22, 24, 97, 103, 108)
    assert v.pitches_of(v.pitch_id([12])) == (24,)
    narrow = Vocabulary(TokenizerSettings(min_pitch=60, max_pitch=65))  # under an octave: clamps, never loops
    assert all(60 <= p <= 65 for p in narrow.fold(range(128)))


def test_transpose_events() -> None:
    events = [((C4, E4), 12), ((), 6), ((S.max_pitch - 2,), 6)]
    assert transpose_events(events, 2, S) == [((62, 66), 12), ((), 6), ((S.max_pitch,), 6)]
    assert transpose_events(events, 3, S) is None
    assert transpose_events([((S.min_pitch,), 12)], -1, S) is None


# -- saving and checking vocabularies ----------------------------------------------------------


def test_vocabulary_save_load_round_trip(tmp_path) -> None:
    settings = TokenizerSettings(max_duration=48, chord_window=0.05)
    v = Vocabulary(settings, [(C4, E4, G4), (D4, F4, 69)])
    v.save(tmp_path / "vocab.json")
    back = Vocabulary.load(tmp_path / "vocab.json")
    assert back.tokens == v.tokens and back.settings == settings and back.fingerprint() == v.fingerprint()
    back.check_compatible(v)
    back.check_compatible(v.fingerprint())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(fingerprint="0123456789abcdef"), "fingerprint"),
        (lambda d: d["chords"].append("C4+D4"), "fingerprint"),
        (lambda d: d["settings"].update(max_duration=24), "fingerprint"),
        (lambda d: d["tokens"].reverse(), "token list"),
        (lambda d: d.update(scheme="other/9"), "scheme"),
        (lambda d: d.pop("chords"), "missing"),
        (lambda d: d.update(chords=["C4+X9"]), "bad pitch name"),
    ],
)
def test_tampered_vocabulary_is_refused(tmp_path, edit, message: str) -> None:
    data = Vocabulary(S, [(C4, E4, G4)]).to_dict()
    edit(data)
    (tmp_path / "vocab.json").write_text(json.dumps(data))
    with pytest.raises(VocabularyError, match=message):
        Vocabulary.load(tmp_path / "vocab.json")


def test_unreadable_vocabulary_files(tmp_path) -> None:
    with pytest.raises(VocabularyError, match="no vocabulary"):
        Vocabulary.load(tmp_path / "missing.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(VocabularyError, match="not a vocabulary JSON"):
        Vocabulary.load(tmp_path / "junk.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(VocabularyError, match="scheme"):
        Vocabulary.load(tmp_path / "list.json")


def test_mismatched_vocabulary_is_refused_with_a_clear_message() -> None:
    ours = Vocabulary(S, [(C4, E4, G4)])
    theirs = Vocabulary(S, [(D4, F4)])
    with pytest.raises(VocabularyError) as err:
        ours.check_compatible(theirs, what="model.pt")
    text = str(err.value)
    assert "model.pt" in text and theirs.fingerprint() in text and ours.fingerprint() in text and "--vocab" in text
    assert "\n" not in text


# -- live feed equals file tokenization --------------------------------------------------------


def random_piece(seed: int, bars: int = 24) -> tuple[list[tuple[float, float, int]], list[tuple[float, bool]]]:
    """Notes and pedal on the 16th/triplet grid, slightly humanised (±0.01 beat), with chords,
    overlaps, repeated notes, rests and pedal."""
    rng = random.Random(seed)
    notes: list[tuple[float, float, int]] = []
    pedal: list[tuple[float, bool]] = []
    beat = 0.0
    steps = [1 / 4, 1 / 3, 1 / 2, 2 / 3, 3 / 4, 1, 3 / 2, 2]
    while beat < bars * 4:
        onset = beat + rng.uniform(-0.01, 0.01)
        size = rng.choice([1, 1, 1, 2, 3, 4])
        length = rng.choice(steps) * rng.choice([0.5, 0.9, 1.0, 1.4])
        for p in rng.sample(range(36, 96), size):
            notes.append((onset, onset + length + rng.uniform(-0.01, 0.01), p))
        if rng.random() < 0.1:
            pedal += [(onset + 0.05, True), (onset + rng.uniform(0.5, 3), False)]
        beat += rng.choice(steps) * (3 if rng.random() < 0.05 else 1)  # sometimes a rest
    pedal.sort()
    merged = [p for i, p in enumerate(pedal) if i == 0 or p[1] != pedal[i - 1][1]]
    return notes, merged


def feed_live(
    notes: list[tuple[float, float, int]], pedal: list[tuple[float, bool]], bpm: float, window_beats: float,
    clock_s: float = 0.01, strum_s: float = 0.0, seed: int = 0,
) -> tuple[list[Event], list[float]]:
    """Play the notes in seconds at `bpm`, like the daemon: each message converted seconds → beats,
    `advance` on a clock tick every `clock_s`. Returns the events and the beat each came out at."""
    rng = random.Random(seed)
    to_s = 60.0 / bpm
    msgs: list[tuple[float, int, int]] = []
    by_onset: dict[float, int] = {}
    for onset, end, p in notes:
        delay = rng.uniform(0, strum_s) if by_onset.setdefault(onset, 0) and strum_s else 0.0
        by_onset[onset] += 1
        msgs.append((onset * to_s + delay, 2, p))
        msgs.append((end * to_s, 0, p))
    msgs += [(b * to_s, 1, int(d)) for b, d in pedal]
    msgs.sort()
    live = StreamTokenizer(S, window_beats=window_beats)
    events: list[Event] = []
    emitted: list[float] = []

    def take(out: list[Event], beat: float) -> None:
        events.extend(out)
        emitted.extend([beat] * len(out))

    now = 0.0
    for sec, kind, value in msgs:
        while now + clock_s < sec:
            now += clock_s
            take(live.advance(now / to_s), now / to_s)
        beat = sec / to_s
        take(live.advance(beat), beat)
        if kind == 2:
            take(live.note_on(beat, value), beat)
        elif kind == 0:
            take(live.note_off(beat, value), beat)
        else:
            take(live.pedal(beat, bool(value)), beat)
    last = msgs[-1][0] / to_s
    take(live.flush(last), last)
    return events, emitted


@pytest.mark.parametrize("seed", range(6))
def test_live_feed_equals_file_tokenization(seed: int) -> None:
    notes, pedal = random_piece(seed)
    bpm = 80 + 10 * seed
    window = S.chord_window * bpm / 60
    expected = tokenize_notes(notes, S, pedal)
    events, emitted = feed_live(notes, pedal, bpm, window)
    assert len(expected) > 100 and any(not p for p, _ in expected) and any(len(p) > 2 for p, _ in expected)
    assert events == expected
    # Events come out one at a time: each as soon as the window of the chord after it has passed
    # (plus one clock tick), not at the end of the phrase.
    first_struck: dict[int, float] = {}  # grid position → earliest raw onset quantised there
    for onset, _, _ in notes:
        q = S.quantize(onset)
        first_struck[q] = min(onset, first_struck.get(q, onset))
    pos = min(first_struck)
    starts = []
    for _, d in events:
        starts.append(pos)
        pos += d
    clock_beats = 0.01 * bpm / 60
    for i in range(len(events) - 1):
        j = next((k for k in range(i + 1, len(events)) if events[k][0]), None)
        if j is not None:
            deadline = first_struck[starts[j]] + window + clock_beats
            assert emitted[i] <= deadline + 1e-9, (i, events[i], emitted[i], deadline)


def test_live_strummed_chords_group_within_the_window() -> None:
    notes, pedal = random_piece(11)
    bpm = 120.0
    window = S.chord_window * bpm / 60  # 30 ms = 0.06 beats
    expected = tokenize_notes(notes, S, pedal)
    strummed, _ = feed_live(notes, pedal, bpm, window, strum_s=0.025, seed=3)
    assert strummed == expected
    # without a window the strum splits chords
    split, _ = feed_live(notes, pedal, bpm, 0.0, strum_s=0.025, seed=3)
    assert split != expected
